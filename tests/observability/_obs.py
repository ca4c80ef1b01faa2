"""Helpers of the observability tests (fixtures are in conftest.py)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer


def wait_for(what: str, predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll `predicate` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def unique(name: str = "svc") -> str:
    """A service name no other test uses (call tallies are per process and service)."""
    return f"{name}-{uuid.uuid4().hex[:10]}"


def points(reader: InMemoryMetricReader, name: str, service: str | None = None) -> dict[tuple[Any, ...], Any]:
    """Data points of metric `name` (of `service` when given), keyed by their sorted attributes
    without the service: a counter's point has `.value`, a histogram's `.count`."""
    data = reader.get_metrics_data()
    out: dict[tuple[Any, ...], Any] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                for p in metric.data.data_points:
                    attrs = dict(p.attributes)
                    if service is not None and attrs.pop("service", None) != service:
                        continue
                    out[tuple(sorted(attrs.items()))] = p
    return out


def values(reader: InMemoryMetricReader, name: str, service: str) -> dict[tuple[Any, ...], Any]:
    """{attributes: value} of a counter or gauge of `service`."""
    return {k: p.value for k, p in points(reader, name, service).items()}


@dataclass
class Otel:
    """An SDK for one test: metrics through `reader`, spans through `exporter` and `tracer`."""

    reader: InMemoryMetricReader
    exporter: InMemorySpanExporter
    tracer: Tracer

    def values(self, name: str, service: str) -> dict[tuple[Any, ...], Any]:
        return values(self.reader, name, service)

    def points(self, name: str, service: str | None = None) -> dict[tuple[Any, ...], Any]:
        return points(self.reader, name, service)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> dict[str, Any]:
        """The attributes of the one finished span called `name`."""
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans()]
        return dict(found[0].attributes or {})


class Records(logging.Handler):
    """Collects the `distbreaker` log records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]
