"""A demo worker for docker-compose.yml: calls a flaky fake service through one shared Breaker
and exports its metrics (OTLP over HTTP) to the OpenTelemetry Collector.

Several of these share the breaker through Redis; the fake service is healthy, then fails
most calls, then recovers, in a cycle, so the breaker trips, half-opens and closes. Each
worker logs the transitions its own calls made (the `distbreaker` logger, INFO) and exports
``distbreaker.*`` metrics; Prometheus scrapes the Collector and evaluates
deploy/prometheus/alerts.yml.

    python deploy/worker.py --url redis://redis:6379/0 [--service payments] [--rate 20]
        [--period 120] [--otlp http://otel-collector:4318]

The OpenTelemetry SDK and OTLP exporter are the app's dependencies, not the library's:
deploy/Dockerfile installs them.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import time
from typing import Any

HEALTHY, FAILING = 0.02, 0.9  # failure probability of the fake service in each phase


def build_parser() -> argparse.ArgumentParser:
    """The worker's command line (docker-compose.yml runs it; a test checks the commands)."""
    ap = argparse.ArgumentParser(prog="deploy/worker.py", description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("DISTBREAKER_URL", "redis://localhost:6379/0"),
                    help="Redis URL (env DISTBREAKER_URL)")
    ap.add_argument("--service", default="payments", help="the shared breaker's service name")
    ap.add_argument("--prefix", default="distbreaker", help="key prefix of the breaker")
    ap.add_argument("--rate", type=float, default=20.0, help="calls per second")
    ap.add_argument("--period", type=float, default=120.0,
                    help="seconds of one healthy-failing-healthy cycle of the fake service")
    ap.add_argument("--otlp", default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318"),
                    help="OTLP/HTTP endpoint of the Collector (env OTEL_EXPORTER_OTLP_ENDPOINT)")
    ap.add_argument("--export-interval", type=float, default=5.0, help="seconds between metric exports")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: never)")
    return ap


def failure_probability(elapsed: float, period: float) -> float:
    """Healthy for the first 40% of each cycle, failing until 70%, then healthy."""
    phase = (elapsed % period) / period
    return FAILING if 0.4 <= phase < 0.7 else HEALTHY


class ServiceDown(Exception):
    """The fake service's failure."""


def _setup_metrics(endpoint: str, interval: float) -> Any:
    from opentelemetry import metrics
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": "distbreaker-demo-worker",
                                "service.instance.id": socket.gethostname()})
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint.rstrip("/") + "/v1/metrics"),
                                           export_interval_millis=interval * 1000)
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(provider)  # before the first breaker: its instruments record from the start
    return provider


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    provider = _setup_metrics(args.otlp, args.export_interval)

    from distbreaker import Breaker, BreakerConfig, CircuitOpenError, connect

    breaker = Breaker(args.service, connect(args.url, timeout=0.1), BreakerConfig(
        minimum_calls=20, failure_rate_threshold=0.5, window=30, open_duration=5, max_open_duration=30,
        redis_timeout=0.1), prefix=args.prefix)
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    old_handlers = {sig: signal.signal(sig, on_term) for sig in (signal.SIGTERM, signal.SIGINT)}
    start, pause = time.time(), 1.0 / args.rate
    end = None if args.duration is None else time.monotonic() + args.duration
    rng = random.Random()

    def fake_service() -> None:
        time.sleep(rng.uniform(0.001, 0.01))
        if rng.random() < failure_probability(time.time() - start, args.period):
            raise ServiceDown("fake service failed")

    logging.getLogger("distbreaker").info("worker %s calling %r through the shared breaker at %s/s",
                                          socket.gethostname(), args.service, args.rate)
    try:
        while not stop and (end is None or time.monotonic() < end):
            try:
                breaker.call(fake_service)
            except (ServiceDown, CircuitOpenError):
                pass
            time.sleep(pause)
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        breaker.close()
        provider.shutdown()  # a last export


if __name__ == "__main__":
    main()
