"""`distbreaker exporter`: serve every breaker under --prefix as Prometheus metrics.

A thin shell over `distbreaker.exporter` (a `prometheus_client` collector): each request to
``/metrics`` reads Redis once (SCAN + pipelined HMGET/XRANGE, no script). Binds to loopback
unless --bind says otherwise. Ctrl-C ends it with 0. Scrape errors are counted in
``distbreaker_exporter_scrape_errors_total`` and noted on stderr (at most one line every
`NOTE_EVERY` seconds).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import click

from .context import CliError, Context, global_options
from .exits import ExitStatus

__all__ = ["exporter"]

DEFAULT_PORT = 9839
NOTE_EVERY = 10.0

pass_ctx = click.make_pass_decorator(Context)


class _Notes:
    """Scrape errors on stderr, at most one line every NOTE_EVERY seconds (with a count)."""

    def __init__(self, obj: Context) -> None:
        self.obj = obj
        self.lock = threading.Lock()
        self.next_at = 0.0
        self.held = 0

    def __call__(self, message: str) -> None:
        with self.lock:
            now = time.monotonic()
            if now < self.next_at:
                self.held += 1
                return
            more = f" (and {self.held} more errors)" if self.held else ""
            self.held, self.next_at = 0, now + NOTE_EVERY
        self.obj.warn(f"scrape error: {message}{more}")


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="TCP port of /metrics (0: any free port, printed on stderr).",
)
@click.option(
    "--bind",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 or :: to be reachable from other hosts).",
)
@click.option("--once", is_flag=True, help="Print one scrape on stdout and exit (no server).")
@global_options
@pass_ctx
def exporter(obj: Context, port: int, bind: str, once: bool) -> None:
    """Serve every breaker under --prefix as Prometheus metrics at /metrics.

    \b
    distbreaker exporter                         http://127.0.0.1:9839/metrics
    distbreaker --cluster --url redis://node:7000 exporter --bind 0.0.0.0
    distbreaker exporter --once                  one scrape on stdout
    """
    try:
        from prometheus_client import generate_latest, start_http_server

        from distbreaker.exporter import make_registry
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise CliError(
            f"the exporter needs prometheus_client: install distbreaker's exporter extra ({exc})", ExitStatus.ERROR
        ) from None
    registry = make_registry(obj.client(), prefix=obj.prefix, on_error=_Notes(obj))
    if once:
        click.echo(generate_latest(registry).decode(), nl=False)
        return
    try:
        server: Any
        server, thread = start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        raise CliError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}", ExitStatus.ERROR) from None
    host = f"[{bind}]" if ":" in bind else bind
    obj.note(f"Serving http://{host}:{server.server_port}/metrics (prefix {obj.prefix!r}); Ctrl-C stops")
    try:
        while thread.is_alive():
            thread.join(1.0)
    except KeyboardInterrupt:
        obj.note("Stopped")
    finally:
        server.shutdown()
        server.server_close()
