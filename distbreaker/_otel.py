"""OpenTelemetry instrumentation, through `opentelemetry-api` only (the SDK is the app's choice).

Every metric and attribute name lives here. The instruments are made on first use (the first
breaker built in the process) from ``metrics.get_meter("distbreaker", version)``; without an
SDK they are the API's proxies, whose calls do nothing, and they start recording when the app
sets a `MeterProvider`, even later. Spans are never created: the protected call's span is the
*current* span, and it gets attributes only when it is recording.

What is recorded (README "Observability"):

- ``distbreaker.calls`` counter {service, outcome, slow}: every call through a breaker of this
  process. ``outcome`` is ``success``, ``failure``, ``rejected`` or ``ignored`` (one value per
  call: they add up to the calls made); ``slow`` (true/false) is an extra attribute on
  ``success`` and ``failure``, as the breaker itself counts a slow call *and* its result.
  Counted in the process (a lock and an increment per call) and reported by an observable
  counter when the SDK collects: an SDK measurement costs several µs in Python, too much for
  every call.
- ``distbreaker.transitions`` counter {service, from, to}: transitions that a script run by this
  process performed (read from its reply), never those learnt from pub/sub: summed over a
  fleet, each transition counts once.
- ``distbreaker.state`` observable gauge {service}: 0 closed, 1 half_open, 2 open,
  3 forced_open, 4 disabled, per breaker cached in this process.
- ``distbreaker.redis.duration`` histogram {service, script}, seconds: script round trips on
  the call path (acquire, record, batched flushes), sampled: at most one every
  `DURATION_SAMPLE` seconds per breaker (every one below 100 per second), so its quantiles are
  right and its cost stays flat; its count is not the number of round trips (use the calls).
- ``distbreaker.redis.errors`` counter {service, error}: Redis errors on the call path
  (``error`` is the redis-py exception class, e.g. ``TimeoutError``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import get_current_span

from ._model import State

if TYPE_CHECKING:
    from ._core import BreakerCore
    from ._model import Transition

__all__ = [
    "CALLS", "DURATION_SAMPLE", "INSTRUMENTS", "Instruments", "METER_NAME", "PROMETHEUS", "REDIS_DURATION",
    "REDIS_ERRORS", "STATE", "STATE_VALUES", "TRANSITIONS", "Tally", "use_meter_provider",
]

METER_NAME = "distbreaker"

# Metric names, units, descriptions
CALLS = "distbreaker.calls"
TRANSITIONS = "distbreaker.transitions"
STATE = "distbreaker.state"
REDIS_DURATION = "distbreaker.redis.duration"
REDIS_ERRORS = "distbreaker.redis.errors"

# Metric attributes
SERVICE = "service"
OUTCOME = "outcome"
SLOW = "slow"
FROM = "from"
TO = "to"
SCRIPT = "script"
ERROR = "error"

# Outcome values, indexed by _core.SUCCESS, FAILURE, IGNORED; and the rejected one
OUTCOMES = ("success", "failure", "ignored")
REJECTED = "rejected"

# Span attributes (set on the current span when it is recording)
SPAN_SERVICE = "circuit.service"
SPAN_STATE = "circuit.state"
SPAN_RESULT = "circuit.result"
SPAN_SLOW = "circuit.slow"
SPAN_TRANSITION = "circuit.transition"

STATE_VALUES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2, State.FORCED_OPEN: 3, State.DISABLED: 4}

# The names Prometheus gives them (OTLP -> Collector prometheus exporter, or the SDK's
# Prometheus exporter): dots become underscores, counters get _total, the unit "s" _seconds.
PROMETHEUS = {
    CALLS: "distbreaker_calls_total",
    TRANSITIONS: "distbreaker_transitions_total",
    STATE: "distbreaker_state",
    REDIS_DURATION: "distbreaker_redis_duration_seconds",
    REDIS_ERRORS: "distbreaker_redis_errors_total",
}

# Redis round trips are ~0.05-1 ms on a LAN and bounded by redis_timeout (50 ms by default).
_DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
DURATION_SAMPLE = 0.01  # seconds between two measured round trips of one breaker

# Slots of a service's call tally: SUCCESS*2 + slow, FAILURE*2 + slow, IGNORED*2, REJECTED_SLOT
REJECTED_SLOT = 6


class Tally:
    """The calls of one service in this process, per outcome (shared by its breakers)."""

    __slots__ = ("lock", "n", "attrs")

    def __init__(self, service: str) -> None:
        self.lock = threading.Lock()
        self.n = [0] * 7
        plain = {SERVICE: service, OUTCOME: "ignored"}
        self.attrs: tuple[dict[str, Any], ...] = (
            {SERVICE: service, OUTCOME: "success", SLOW: False}, {SERVICE: service, OUTCOME: "success", SLOW: True},
            {SERVICE: service, OUTCOME: "failure", SLOW: False}, {SERVICE: service, OUTCOME: "failure", SLOW: True},
            plain, plain, {SERVICE: service, OUTCOME: REJECTED})


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("distbreaker")
    except PackageNotFoundError:
        return None


class Instruments:
    """The instruments of this process, shared by every breaker; made on first use.

    `on` is an internal switch (benchmarks/otel_overhead.py measures against it): when False,
    breakers record nothing (hooks still run).
    """

    def __init__(self) -> None:
        self.on = True
        self._lock = threading.Lock()       # breakers and tallies; never held while calling the SDK
        self._make_lock = threading.Lock()  # making instruments (the SDK's collection holds its own
        # lock while it runs our callbacks, which take _lock: one lock for both could deadlock)
        self._provider: Any = None  # None: the global MeterProvider (proxied until the app sets one)
        self._made = False
        self._cores: weakref.WeakSet[BreakerCore] = weakref.WeakSet()
        self._tallies: dict[str, Tally] = {}  # kept for the process's life: counters never restart

    def _make(self) -> None:
        provider = self._provider if self._provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(METER_NAME, _version())
        meter.create_observable_counter(CALLS, [self._observe_calls], "{call}", "Calls through a breaker, by outcome")
        self.transitions = meter.create_counter(
            TRANSITIONS, "{transition}", "Transitions performed by this process's scripts")
        self.redis_duration = meter.create_histogram(
            REDIS_DURATION, "s", "Round trips of breaker scripts on the call path",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)
        self.redis_errors = meter.create_counter(REDIS_ERRORS, "{error}", "Redis errors on the call path")
        meter.create_observable_gauge(
            STATE, [self._observe_states], "",
            "Breaker state: 0 closed, 1 half_open, 2 open, 3 forced_open, 4 disabled")
        self._made = True

    # -- breakers ---------------------------------------------------------------------------
    def register(self, core: BreakerCore) -> Tally:
        """A breaker was built: make the instruments if needed; report its state in the gauge.
        Returns the tally of its service."""
        if not self._made:
            with self._make_lock:
                if not self._made:
                    self._make()
        with self._lock:
            self._cores.add(core)
            tally = self._tallies.get(core.service)
            if tally is None:
                tally = self._tallies[core.service] = Tally(core.service)
            return tally

    def unregister(self, core: BreakerCore) -> None:
        """A breaker was closed: its state leaves the gauge."""
        with self._lock:
            self._cores.discard(core)

    def _observe_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            tallies = list(self._tallies.values())
        out: list[Observation] = []
        for tally in tallies:
            with tally.lock:
                counts = list(tally.n)
            out.extend(Observation(n, tally.attrs[i]) for i, n in enumerate(counts) if n)
        return out

    def _observe_states(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            cores = list(self._cores)
        latest: dict[str, tuple[float, State]] = {}
        for core in cores:
            view = core.view
            state, at = view.state, view.fetched_at
            if state is None:
                continue
            seen = latest.get(core.service)
            if seen is None or at >= seen[0]:
                latest[core.service] = (at, state)
        return [Observation(STATE_VALUES[state], {SERVICE: service}) for service, (_, state) in latest.items()]

    # -- what breakers record (the core decides when) -----------------------------------------
    def call(self, core: BreakerCore, slot: int, state: State | None) -> None:
        """One admitted call finished (`slot`: outcome * 2 + slow): count it, annotate the current span."""
        tally = core.tally
        lock = tally.lock
        lock.acquire()
        tally.n[slot] += 1
        lock.release()
        span = get_current_span()
        if span.is_recording():
            attrs: dict[str, Any] = {SPAN_SERVICE: core.service,
                                     SPAN_STATE: "unknown" if state is None else state.value,
                                     SPAN_RESULT: OUTCOMES[slot >> 1]}
            if slot & 1:
                attrs[SPAN_SLOW] = True  # set only when slow (each attribute costs the SDK ~0.5 µs)
            span.set_attributes(attrs)

    def rejected(self, core: BreakerCore, state: str) -> None:
        """One call was rejected: count it, annotate the current span."""
        tally = core.tally
        lock = tally.lock
        lock.acquire()
        tally.n[REJECTED_SLOT] += 1
        lock.release()
        span = get_current_span()
        if span.is_recording():
            span.set_attributes({SPAN_SERVICE: core.service, SPAN_STATE: state, SPAN_RESULT: REJECTED})

    def made(self, core: BreakerCore, transitions: Sequence[Transition]) -> None:
        """This process's script performed `transitions`: count them, annotate the current span."""
        for t in transitions:
            self.transitions.add(1, {SERVICE: core.service, FROM: t.from_state.value, TO: t.to_state.value})
        span = get_current_span()
        if span.is_recording():
            span.set_attribute(SPAN_TRANSITION, ";".join(f"{t.from_state.value}>{t.to_state.value}"
                                                         for t in transitions))

    def redis(self, core: BreakerCore, script: str, seconds: float) -> None:
        """A script round trip on the call path took `seconds` (sampled by the core)."""
        attrs = core.redis_attrs.get(script)
        if attrs is None:
            attrs = core.redis_attrs[script] = {SERVICE: core.service, SCRIPT: script}
        self.redis_duration.record(seconds, attrs)

    def redis_error(self, core: BreakerCore, exc: BaseException) -> None:
        """A Redis error on the call path."""
        self.redis_errors.add(1, {SERVICE: core.service, ERROR: type(exc).__name__})


INSTRUMENTS = Instruments()


def use_meter_provider(provider: Any = None) -> None:
    """Make the instruments again from `provider` (None: the global one). Tests and benchmarks
    use it to read metrics with a private SDK `MeterProvider`; apps set the global provider."""
    with INSTRUMENTS._make_lock:
        INSTRUMENTS._provider = provider
        INSTRUMENTS._make()
