"""Fixtures of the observability tests: an in-memory OpenTelemetry SDK per test.

The library uses the API only; here the SDK's `InMemoryMetricReader` and
`InMemorySpanExporter` read what it recorded. `_otel.use_meter_provider` points the library's
instruments at a private `MeterProvider` (the global one can be set only once per process).
Call tallies are kept per service while it has a breaker (and among the last retired ones
after), so each test uses its own service names (`_obs.unique`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from _obs import Otel, Records
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from distbreaker import _otel
from distbreaker._log import LIMITED


@pytest.fixture
def otel() -> Iterator[Otel]:
    """An in-memory SDK; the library's instruments point at it for the test."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    _otel.use_meter_provider(meter_provider)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield Otel(reader, exporter, tracer_provider.get_tracer("tests"))
    finally:
        _otel.use_meter_provider(None)
        meter_provider.shutdown()
        tracer_provider.shutdown()


@pytest.fixture(autouse=True)
def _fresh_log_limits() -> Iterator[None]:
    """Every test starts with empty rate-limit buckets (they are per process)."""
    LIMITED.clear()
    yield
    LIMITED.clear()


@pytest.fixture
def dead_url() -> str:
    """The URL of a port where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def logs() -> Iterator[Records]:
    """The `distbreaker` logger's records during the test (at DEBUG and above)."""
    handler = Records()
    logger = logging.getLogger("distbreaker")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
