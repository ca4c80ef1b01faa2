"""A demo worker for docker-compose.yml: calls a flaky fake service through one shared Breaker
and exports its metrics (OTLP over HTTP) to the OpenTelemetry Collector.

Several of these share the breaker through Redis; the fake service is healthy, then fails
most calls, then recovers, in a cycle, so the breaker trips, half-opens and closes. Each
worker logs the transitions its own calls made (the `distbreaker` logger, INFO) and exports
``distbreaker.*`` metrics; Prometheus scrapes the Collector and evaluates
deploy/prometheus/alerts.yml.

    python deploy/worker.py --url redis://redis:6379/0 [--service payments] [--rate 20]
        [--period 120] [--otlp http://otel-collector:4318] [--health-port 8080]

With --health-port it serves ``/healthz`` (liveness: the process answers) and ``/readyz``
(readiness: the last Redis PING, run every `READY_EVERY` seconds off the request path, succeeded
within `READY_STALE` seconds), for the Kubernetes example in deploy/k8s/.

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
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HEALTHY, FAILING = 0.02, 0.9  # failure probability of the fake service in each phase
READY_EVERY = 2.0  # seconds between two Redis PINGs of the readiness check
READY_STALE = 6.0  # ready while the last successful PING is at most this old


def build_parser() -> argparse.ArgumentParser:
    """The worker's command line (docker-compose.yml runs it; a test checks the commands)."""
    ap = argparse.ArgumentParser(prog="deploy/worker.py", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--url",
        default=os.environ.get("DISTBREAKER_URL", "redis://localhost:6379/0"),
        help="Redis URL (env DISTBREAKER_URL)",
    )
    ap.add_argument("--service", default="payments", help="the shared breaker's service name")
    ap.add_argument("--prefix", default="distbreaker", help="key prefix of the breaker")
    ap.add_argument("--rate", type=float, default=20.0, help="calls per second")
    ap.add_argument(
        "--period", type=float, default=120.0, help="seconds of one healthy-failing-healthy cycle of the fake service"
    )
    ap.add_argument(
        "--otlp",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318"),
        help="OTLP/HTTP endpoint of the Collector (env OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    ap.add_argument("--export-interval", type=float, default=5.0, help="seconds between metric exports")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: never)")
    ap.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="serve /healthz and /readyz (Redis reachable) on this port (0: any free port)",
    )
    ap.add_argument("--health-bind", default="0.0.0.0", help="address of the health server")
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

    resource = Resource.create({"service.name": "distbreaker-demo-worker", "service.instance.id": socket.gethostname()})
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint.rstrip("/") + "/v1/metrics"), export_interval_millis=interval * 1000
    )
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(provider)  # before the first breaker: its instruments record from the start
    return provider


class Readiness:
    """Readiness from the Redis connection: a PING every READY_EVERY seconds on a daemon
    thread; a probe only reads the result (no Redis call on the probe's path)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ok_at: float | None = None  # monotonic time of the last successful PING
        self.error = "no PING yet"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="readiness", daemon=True)

    def ping(self) -> None:
        try:
            self.client.ping()
        except Exception as exc:  # any Redis error: not ready
            self.error = type(exc).__name__
        else:
            self.ok_at, self.error = time.monotonic(), ""

    def ready(self) -> tuple[bool, str]:
        ok_at = self.ok_at
        if ok_at is not None and time.monotonic() - ok_at <= READY_STALE:
            return True, "redis ok"
        return False, f"redis unreachable ({self.error})"

    def _run(self) -> None:
        while not self.stopped.is_set():
            self.ping()
            self.stopped.wait(READY_EVERY)

    def start(self) -> Readiness:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()


def serve_health(bind: str, port: int, readiness: Readiness) -> ThreadingHTTPServer:
    """/healthz: 200 while the process runs; /readyz: 200 when Redis answers, else 503."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/healthz":
                code, body = 200, "ok"
            elif self.path == "/readyz":
                ok, body = readiness.ready()
                code = 200 if ok else 503
            else:
                code, body = 404, "not found"
            data = (body + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no log
            pass

    server = ThreadingHTTPServer((bind, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    provider = _setup_metrics(args.otlp, args.export_interval)

    from distbreaker import Breaker, BreakerConfig, CircuitOpenError, connect

    client = connect(args.url, timeout=0.1)
    breaker = Breaker(
        args.service,
        client,
        BreakerConfig(
            minimum_calls=20,
            failure_rate_threshold=0.5,
            window=30,
            open_duration=5,
            max_open_duration=30,
            redis_timeout=0.1,
        ),
        prefix=args.prefix,
    )
    readiness = health = None
    if args.health_port is not None:
        readiness = Readiness(client).start()
        health = serve_health(args.health_bind, args.health_port, readiness)
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

    logging.getLogger("distbreaker").info(
        "worker %s calling %r through the shared breaker at %s/s", socket.gethostname(), args.service, args.rate
    )
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
        if health is not None and readiness is not None:
            health.shutdown()
            health.server_close()
            readiness.stop()
        provider.shutdown()  # a last export


if __name__ == "__main__":
    main()
