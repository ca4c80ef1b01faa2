"""Per-call cost of the OpenTelemetry instrumentation, in one run.

Three settings of the same breaker code, measured in alternating rounds:

- instrumentation off: an internal switch (`distbreaker._otel.INSTRUMENTS.on = False`) makes
  breakers record nothing: the baseline;
- no SDK: what a library user without an OpenTelemetry SDK pays (the API's no-op proxies and
  a non-recording current span);
- SDK: an in-memory `MeterProvider` reader and a recording current span (attributes set on
  every call).

The Redis client is a stub that answers each script at once with a canned reply, so the
figures are the client-side cost of the call path (the closed path still runs the record and
its round-trip timing) without the ±µs noise of a loopback round trip. `benchmarks/overhead.py`
measures against a real server.

    python benchmarks/otel_overhead.py [--calls 50000] [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from distbreaker import Breaker, BreakerConfig, CircuitOpenError, _otel

TARGET_NO_SDK = 1e-6  # seconds per call (issue 6)
TARGET_SDK = 5e-6


class StubRedis:
    """Answers every script with the reply of a breaker in `state` (docs/state-machine.md "Reply")."""

    def __init__(self, state: bytes) -> None:
        self.state = state

    def execute_command(self, *args: Any) -> list[Any]:
        now = time.time_ns() // 1_000_000
        return [self.state, 1, now, 0, 5, 0, 0, 0, 0, b"benchmark", b"ops", 0, b"", b"", b"", 0, 0, 0]


def per_call(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="a few thousand calls: a smoke run")
    a = ap.parse_args()
    n, rounds = (2000, 3) if a.quick else (a.calls, a.rounds)

    cfg = BreakerConfig(max_staleness=3600)
    closed = Breaker("bench-closed", StubRedis(b"closed"), cfg, listen=False)
    opened = Breaker("bench-open", StubRedis(b"forced_open"), cfg, listen=False)
    noop = lambda: None  # noqa: E731

    def closed_call() -> None:
        closed.call(noop)

    def rejected_call() -> None:
        try:
            opened.call(noop)
        except CircuitOpenError:
            pass

    paths = {"closed (admitted, 1 record)": closed_call, "rejected (open, cached)": rejected_call}
    results: dict[tuple[str, str], list[float]] = {}

    def measure(setting: str) -> None:
        for name, fn in paths.items():
            results.setdefault((name, setting), []).append(per_call(fn, n))

    def alternate(on_name: str) -> None:
        for fn in paths.values():  # warm up (and fill the caches)
            per_call(fn, n // 10)
        for _ in range(rounds):
            _otel.INSTRUMENTS.on = False
            measure("off" if on_name == "no SDK" else "off (SDK run)")
            _otel.INSTRUMENTS.on = True
            measure(on_name)

    _otel.use_meter_provider(None)  # the global provider: no SDK configured in this process
    alternate("no SDK")

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    reader = InMemoryMetricReader()
    _otel.use_meter_provider(MeterProvider(metric_readers=[reader]))
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    with tracer_provider.get_tracer("benchmark").start_as_current_span("protected") as span:
        assert span.is_recording()
        alternate("SDK")
    counted = sum(
        p.value
        for m in reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
        if m.name == _otel.CALLS
        for p in m.data.data_points
    )
    _otel.use_meter_provider(None)

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{n} calls x {rounds} rounds per setting, alternating (median); stub Redis (no network)\n")
    print(
        "| path | instrumentation off | no SDK | SDK (in-memory reader, recording span) "
        "| overhead, no SDK | overhead, SDK |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    worst_plain = worst_sdk = 0.0
    for name in paths:
        off, plain = med[(name, "off")], med[(name, "no SDK")]
        off_sdk, sdk = med[(name, "off (SDK run)")], med[(name, "SDK")]
        d_plain, d_sdk = plain - off, sdk - off_sdk
        worst_plain, worst_sdk = max(worst_plain, d_plain), max(worst_sdk, d_sdk)
        print(
            f"| {name} | {off * 1e6:.2f} µs | {plain * 1e6:.2f} µs | {sdk * 1e6:.2f} µs "
            f"| {d_plain * 1e6:+.2f} µs | {d_sdk * 1e6:+.2f} µs |"
        )
    print(
        f"\nTargets (issue 6): no SDK <= {TARGET_NO_SDK * 1e6:.0f} µs per call: "
        f"{'ok' if worst_plain <= TARGET_NO_SDK else 'OVER'} ({worst_plain * 1e6:.2f} µs); "
        f"SDK <= {TARGET_SDK * 1e6:.0f} µs per call: {'ok' if worst_sdk <= TARGET_SDK else 'OVER'} "
        f"({worst_sdk * 1e6:.2f} µs)"
    )
    print(f"calls counted by the SDK reader: {counted}")


if __name__ == "__main__":
    main()
