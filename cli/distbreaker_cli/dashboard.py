"""`distbreaker dashboard`: a live web page of every breaker under --prefix.

A thin shell over `distbreaker.dashboard` (a Starlette app) served by uvicorn. Binds to
loopback unless --bind says otherwise; read-only unless --allow-actions, which needs a token
(--token, env DISTBREAKER_DASHBOARD_TOKEN, or one generated and printed once on stderr). Ctrl-C
ends it with 0. Needs the ``dashboard`` extra (starlette, uvicorn, prometheus_client).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from distbreaker.errors import redact

from .context import CliError, Context, global_options
from .exits import ExitStatus

__all__ = ["DEFAULT_PORT", "Served", "dashboard", "make_board_for", "serve_in_thread"]

DEFAULT_PORT = 9840
TOKEN_ENV = "DISTBREAKER_DASHBOARD_TOKEN"
MISSING = "the dashboard needs starlette, uvicorn and prometheus_client: install distbreaker's dashboard extra"

pass_ctx = click.make_pass_decorator(Context)


def _modules() -> tuple[Any, Any]:
    """(distbreaker.dashboard, uvicorn), or a CliError naming the extra."""
    try:
        import uvicorn

        from distbreaker import dashboard as module
    except ImportError as exc:
        raise CliError(f"{MISSING} (pip install 'distbreaker[dashboard]'; {exc})", ExitStatus.ERROR) from None
    return module, uvicorn


def _is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False


def _listen(bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}", ExitStatus.ERROR) from None
    sock.set_inheritable(True)
    return sock


def _url(bind: str, port: int) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)
    return f"http://[{host.strip('[]')}]:{port}/" if ":" in host else f"http://{host}:{port}/"


@dataclass
class Served:
    """A dashboard served by uvicorn on a thread (`serve_in_thread`)."""

    url: str
    server: Any
    thread: threading.Thread
    close: Callable[[], None] | None = None

    def stop(self) -> None:
        """Stop serving (the app's event streams first), then call `close`."""
        board = getattr(self.server.config.app, "dashboard", None)
        if board is not None:
            board.close()
        self.server.should_exit = True
        self.thread.join(10)
        if self.close is not None:
            self.close()


def _server(app: Any, uvicorn: Any) -> Any:
    """A uvicorn server of `app` that, when told to stop, first ends the app's event streams
    (an open page would otherwise hold the graceful shutdown until its timeout)."""
    board = getattr(app, "dashboard", None)

    class Server(uvicorn.Server):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: Any) -> None:
            if board is not None:
                board.close()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return Server(config)


def serve_in_thread(
    app: Any, bind: str = "127.0.0.1", port: int = 0, close: Callable[[], None] | None = None
) -> Served:
    """Serve `app` (an ASGI app) with uvicorn on a daemon thread (`distbreaker demo --dashboard`);
    `close` is called after it stops."""
    _, uvicorn = _modules()
    sock = _listen(bind, port)
    server = _server(app, uvicorn)
    server.install_signal_handlers = lambda: None  # uvicorn < 0.29; newer ones skip them off the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="distbreaker-dashboard", daemon=True)
    thread.start()
    return Served(_url(bind, sock.getsockname()[1]), server, thread, close)


def make_board_for(client: Any, prefix: str, url: str, **options: Any) -> Any:
    """A `Dashboard` over `client` (the page shows `url`, password redacted), bound to loopback names."""
    module, _ = _modules()
    options.setdefault("allowed_hosts", list(module.LOOPBACK_HOSTS))
    return module.Dashboard(client, prefix=prefix, target=redact(url), **options)


@click.command()
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="TCP port of the page (0: any free port; the URL is printed on stderr).",
)
@click.option(
    "--bind",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 or :: to be reachable from other hosts).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60.0),
    default=1.0,
    show_default=True,
    help="Seconds between reads of Redis (one read serves every viewer).",
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Serve trip / disable / reset (with a reason) to requests carrying the token.",
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    default=None,
    metavar="TOKEN",
    help=f"The operator token (env {TOKEN_ENV}); with --allow-actions and none given, one is generated "
    "and printed once.",
)
@click.option("--actor", default=None, help="Actor recorded when the page names none (default: the OS user).")
@global_options
@pass_ctx
def dashboard(
    obj: Context, port: int, bind: str, interval: float, allow_actions: bool, token: str | None, actor: str | None
) -> None:
    """Serve a live web page of every breaker under --prefix (read-only unless --allow-actions).

    \b
    distbreaker dashboard                                 http://127.0.0.1:9840/
    distbreaker dashboard --allow-actions                 a token is printed once
    DISTBREAKER_DASHBOARD_TOKEN=... distbreaker dashboard --allow-actions --bind 0.0.0.0
    """
    if token is not None and not allow_actions:
        raise CliError("--token without --allow-actions: the dashboard is read-only", ExitStatus.USAGE)
    if token is not None and len(token) < 16:
        raise CliError("--token: use at least 16 characters", ExitStatus.USAGE)
    generated = allow_actions and token is None
    if generated:
        token = secrets.token_urlsafe(24)
    module, uvicorn = _modules()
    board = make_board_for(
        obj.client(),
        obj.prefix,
        obj.url,
        interval=interval,
        allow_actions=allow_actions,
        token=token,
        actor=actor,
        allowed_hosts=list(module.LOOPBACK_HOSTS) if _is_loopback(bind) else None,
    )
    board.sample()  # Redis reachable (the error boundary maps a failure to its exit code)
    sock = _listen(bind, port)
    url = _url(bind, sock.getsockname()[1])
    mode = "operator actions on (token needed)" if allow_actions else "read-only"
    obj.note(f"Serving {url} (prefix {obj.prefix!r}, {mode}); Ctrl-C stops")
    if generated:
        obj.note(f"Operator token (shown once): {token}")
        obj.note(f"Open {url}#token={token} to act from this browser tab")
    server = _server(board.app(), uvicorn)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    obj.note("Stopped")
