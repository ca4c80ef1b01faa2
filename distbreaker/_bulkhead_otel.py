"""OpenTelemetry instruments of the bulkheads (opentelemetry-api only), in `_otel`'s style.

- ``distbreaker.bulkhead.held`` observable gauge {bulkhead}: slots held by this process's
  calls now (summed over a fleet's processes: the slots in use fleet-wide, leases of dead
  workers aside). The fleet's own view is ``distbreaker bulkheads`` and the exporter's
  ``distbreaker_bulkhead_in_use`` (read from Redis); this one is named ``held`` so that the
  two never share a Prometheus name (a sum over both would count every slot twice).
- ``distbreaker.bulkhead.rejections`` counter {bulkhead, reason}: calls refused with
  `BulkheadFullError` (``reason`` is ``full`` or ``redis unavailable``).

Made on first use from the provider `_otel.use_meter_provider` set (else the global one) and
made again when that changes, so tests reading a private SDK provider see them too.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from ._otel import INSTRUMENTS, METER_NAME, _version

__all__ = ["BULKHEAD", "BULKHEAD_INSTRUMENTS", "REJECTIONS", "BulkheadInstruments", "HELD", "HeldCount", "PROMETHEUS"]

HELD = "distbreaker.bulkhead.held"
REJECTIONS = "distbreaker.bulkhead.rejections"
BULKHEAD = "bulkhead"  # attribute: the bulkhead's name
REASON = "reason"
PROMETHEUS = {HELD: "distbreaker_bulkhead_held", REJECTIONS: "distbreaker_bulkhead_rejections_total"}


class HeldCount(Protocol):
    """What the gauge reads from a bulkhead."""

    name: str

    @property
    def held(self) -> int: ...


class BulkheadInstruments:
    """The bulkhead instruments of this process, shared by every bulkhead."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bulkheads: weakref.WeakSet[Any] = weakref.WeakSet()
        self._made_for: object = None  # the provider the instruments were made from
        self._made = False
        self._rejections: Any = None

    def _provider(self) -> Any:
        provider = INSTRUMENTS._provider
        return provider if provider is not None else metrics.get_meter_provider()

    def _make(self) -> None:
        with self._lock:
            provider = INSTRUMENTS._provider
            if self._made and provider is self._made_for:
                return
            meter = self._provider().get_meter(METER_NAME, _version())
            self._rejections = meter.create_counter(
                REJECTIONS, "{call}", "Calls refused by a bulkhead (no free slot fleet-wide)"
            )
            meter.create_observable_gauge(
                HELD, [self._observe], "{slot}", "Bulkhead slots held by this process's calls"
            )
            self._made_for, self._made = provider, True

    def register(self, bulkhead: HeldCount) -> None:
        """A bulkhead was built: its held slots join the gauge."""
        if not self._made or INSTRUMENTS._provider is not self._made_for:
            self._make()
        with self._lock:
            self._bulkheads.add(bulkhead)

    def rejected(self, name: str, reason: str) -> None:
        """A call was refused."""
        if not self._made or INSTRUMENTS._provider is not self._made_for:
            self._make()
        if INSTRUMENTS.on:
            self._rejections.add(1, {BULKHEAD: name, REASON: reason})

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            bulkheads = list(self._bulkheads)
        held: dict[str, int] = {}
        for b in bulkheads:
            held[b.name] = held.get(b.name, 0) + b.held
        return [Observation(n, {BULKHEAD: name}) for name, n in held.items()]


BULKHEAD_INSTRUMENTS = BulkheadInstruments()
