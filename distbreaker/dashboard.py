"""A live web page of every breaker under a prefix: `distbreaker dashboard`, or mount `make_app`.

One tile per breaker, coloured by state, with a sparkline of its window's failure rate, its
calls, retry-after and the cause of its last transition; a timeline of transitions from the
events streams; a filter by name and state. The page is static HTML, JavaScript and CSS
shipped in the package (``distbreaker/_dashboard_static``: no CDN, no build step); it reads
``/api/state`` once, then server-sent events from ``/api/stream``.

Reading Redis: one sample every `interval` seconds, whatever the number of viewers, with the
exporter's reads (`distbreaker.exporter`: SCAN and pipelined HMGET/XRANGE, no script, the lazy
expiry applied as the scripts would) plus, in one pipeline, an XREVRANGE of the events stream
of each breaker whose last transition changed since the previous sample. The sparklines are
the samples this process took (the last `history` of them); the event stream sends each in
full once, then only its newest sample. When Redis (or a Cluster node) cannot be read, the frame
says so and keeps the breakers as last read (``read_at`` says when). It writes nothing unless
operator actions are on.

Operator actions (trip, disable, reset, each with a reason) are off unless `allow_actions` is
set, and then need `token` in the ``X-Distbreaker-Token`` header of a JSON ``POST`` (compared
in constant time); every other request gets 403. They run `Admin.trip` / `disable` / `reset`:
the same audit trail as the CLI (actor and reason in the events stream).

Security: every breaker name, cause, reason and actor is inserted as text, never as HTML; the
responses carry a Content-Security-Policy without inline script or style, ``nosniff``, no
framing and no referrer. The page shows the Redis URL with its password redacted. When
`allowed_hosts` is given (the CLI gives the loopback names when it binds to loopback), any
other ``Host`` header is refused (a DNS-rebinding page cannot read the API).

Needs ``starlette`` and ``prometheus_client`` (the ``dashboard`` extra; ``uvicorn`` serves it).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import json
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from ._core import keys_for, validate_prefix
from ._model import Transition
from ._runner import cancel_requested
from .errors import ConfigError, DistbreakerError, UnknownServiceError, redact

__all__ = ["ACTIONS", "TOKEN_HEADER", "Dashboard", "make_app", "read_breakers"]

ACTIONS = ("trip", "disable", "reset")
TOKEN_HEADER = "x-distbreaker-token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
EVENTS_PER_BREAKER = 10  # transitions kept per breaker for its cause and the timeline
CHUNK = 2000  # XREVRANGEs per pipeline
STOP_SLICE = 0.1  # seconds an event stream sleeps before it looks at `Dashboard.closed` again

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
STATIC = {  # path -> (file in _dashboard_static, media type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/static/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


def read_breakers(collector: Any) -> tuple[list[Any], int, bool]:
    """Every breaker as `distbreaker.exporter` reads it: (rows, scrape errors, every node read).

    The one place the dashboard reaches into the exporter: its collector holds the pipelined
    reading and decoding (`ExporterCollector.scrape`, one scrape at a time under its lock).
    """
    with collector._lock:
        scrape = collector.scrape()
    return scrape.rows, sum(scrape.errors.values()), not scrape.nodes_down


def _stream_entry(entry: Any) -> Any:
    from .admin import _stream_entry as parse

    return parse(entry)


def _event(seq: int, frame: dict[str, Any]) -> str:
    return f"event: frame\nid: {seq}\ndata: {json.dumps(frame, separators=(',', ':'))}\n\n"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class _Memory:
    """What the dashboard keeps of one breaker between samples."""

    rates: deque[float]
    last_transition: float = -1.0  # when its events were read (the row's last_transition)
    transitions: list[Transition] = field(default_factory=list)  # newest first


class Dashboard:
    """The state behind the page: samples of every breaker, the actions, the ASGI app.

    Args:
        redis: a `redis.Redis` (or `redis.cluster.RedisCluster`) the samples read through.
        prefix: key prefix of the breakers. Default ``"distbreaker"``.
        interval: seconds between samples (and server-sent events). Default 1.0.
        history: samples kept per breaker for its sparkline. Default 120.
        timeline: transitions shown in the timeline (newest first). Default 200.
        allow_actions: serve the operator actions (trip, disable, reset). Default off.
        token: the token actions need (required with `allow_actions`).
        actor: the actor recorded when a request names none (default: the OS user).
        target: where `redis` points, as the page shows it (a URL: its password is redacted).
        allowed_hosts: the ``Host`` names accepted (any port); None accepts any.

    Raises:
        ConfigError: `allow_actions` without a token, or an invalid prefix or interval.
    """

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str = "distbreaker",
        interval: float = 1.0,
        history: int = 120,
        timeline: int = 200,
        allow_actions: bool = False,
        token: str | None = None,
        actor: str | None = None,
        target: str = "",
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        from .exporter import ExporterCollector

        if not (isinstance(interval, (int, float)) and 0.05 <= interval <= 3600):
            raise ConfigError("interval", f"must be between 0.05 and 3600 seconds, got {interval!r}")
        if allow_actions and not token:
            raise ConfigError("token", "operator actions need a token")
        self.redis = redis
        self.prefix = validate_prefix(prefix)
        self.interval = float(interval)
        self.history = max(2, int(history))
        self.timeline = max(1, int(timeline))
        self.allow_actions = allow_actions
        self._token = token or ""
        self.actor = actor
        self.target = redact(target)
        self.allowed_hosts = None if allowed_hosts is None else {h.lower().strip("[]") for h in allowed_hosts}
        self.errors: list[str] = []  # the last sample's scrape errors (redacted by the exporter)
        self._collector = ExporterCollector(redis, prefix=self.prefix, on_error=self.errors.append)
        self._memory: dict[str, _Memory] = {}
        self._sample_lock = threading.Lock()
        self._frame: dict[str, Any] | None = None
        self._taken = 0.0  # monotonic time of the frame
        self._seq = 0
        self._async_lock: asyncio.Lock | None = None
        self._events = ("", "")  # the latest frame as server-sent events: in full, and its delta
        self._rows: list[Any] = []  # the rows of the last sample that could read Redis
        self._read_at: float | None = None  # when (None: never)
        self.closed = False

    def close(self) -> None:
        """End the event streams (a server that stops calls it first, so none holds it up)."""
        self.closed = True

    # -- reading ------------------------------------------------------------------------------
    def sample(self) -> dict[str, Any]:
        """Read every breaker now and return the frame the page shows (also kept as the latest)."""
        with self._sample_lock:
            try:
                frame = self._read()
            except (RedisError, DistbreakerError) as exc:  # the last rows read stay, marked stale
                frame = self._frame_of(self._rows, [], f"Redis: {redact(str(exc))}", 0)
                frame["read_at"] = self._read_at
            self._seq += 1
            frame["seq"] = self._seq
            delta = {**frame, "append": True, "breakers": [{**b, "rates": b["rates"][-1:]} for b in frame["breakers"]]}
            self._events = (_event(self._seq, frame), _event(self._seq, delta))
            self._frame, self._taken = frame, time.monotonic()
            return frame

    def _read(self) -> dict[str, Any]:
        self.errors.clear()
        rows, errors, all_nodes = read_breakers(self._collector)
        changed = []
        live = set()
        for row in rows:
            live.add(row.service)
            memory = self._memory.get(row.service)
            if memory is None:
                memory = self._memory[row.service] = _Memory(deque(maxlen=self.history))
            memory.rates.append(round(row.failures / row.calls, 4) if row.calls else 0.0)
            if memory.last_transition != row.last_transition:
                changed.append((row.service, memory, row.last_transition))
        if all_nodes:
            for gone in set(self._memory) - live:
                del self._memory[gone]
        for at in range(0, len(changed), CHUNK):
            self._read_events(changed[at : at + CHUNK])
        if all_nodes:
            self._rows, self._read_at = rows, time.time()
            frame = self._frame_of(rows, self.errors[:5], None, errors)
            frame["read_at"] = self._read_at
            return frame
        # a node could not be read: its breakers as last read (the frame's read_at says when)
        fresh = {row.service for row in rows}
        rows = sorted([*rows, *(r for r in self._rows if r.service not in fresh)], key=lambda r: r.service)
        frame = self._frame_of(rows, self.errors[:5], "Redis: " + "; ".join(self.errors[:3]), errors)
        frame["read_at"] = self._read_at
        return frame

    def _read_events(self, changed: list[tuple[str, _Memory, float]]) -> None:
        from ._core import decode_transition

        pipe = self.redis.pipeline(transaction=False)
        for service, _, _ in changed:
            pipe.execute_command(
                "XREVRANGE", keys_for(self.prefix, service).events, "+", "-", "COUNT", 4 * EVENTS_PER_BREAKER
            )
        replies = pipe.execute(raise_on_error=False)
        for (service, memory, last), reply in zip(changed, replies, strict=True):
            if isinstance(reply, Exception):
                self.errors.append(f"{service}: events: {redact(str(reply))}")
                continue
            found: list[Transition] = []
            for entry in reply or ():
                try:
                    t = decode_transition(service, _stream_entry(entry))
                except (KeyError, ValueError, IndexError, TypeError, AttributeError, UnicodeDecodeError):
                    continue  # not a distbreaker event (another writer's, or damaged)
                if t.from_state is t.to_state and not t.cause.startswith("manual "):
                    continue  # a fleet config change, not a transition
                found.append(t)
                if len(found) >= EVENTS_PER_BREAKER:
                    break
            memory.transitions, memory.last_transition = found, last

    def _frame_of(self, rows: Iterable[Any], errors: list[str], problem: str | None, n_errors: int) -> dict[str, Any]:
        breakers = []
        timeline: list[Transition] = []
        for row in rows:
            memory = self._memory.get(row.service)
            last = memory.transitions[0] if memory and memory.transitions else None
            breakers.append(
                {
                    "service": row.service,
                    "state": row.state.value,
                    "calls": row.calls,
                    "failures": row.failures,
                    "slow": row.slow,
                    "failure_rate": row.failures / row.calls if row.calls else 0.0,
                    "failure_rate_threshold": row.failure_rate_threshold,
                    "minimum_calls": row.minimum_calls,
                    "open_count": row.open_count,
                    "retry_after": _finite(row.retry_after),
                    "forced_forever": math.isinf(row.retry_after),
                    "last_transition": row.last_transition or None,
                    "cause": last.cause if last else "",
                    "actor": last.actor if last else "",
                    "rates": list(memory.rates) if memory else [],
                }
            )
            if memory:
                timeline.extend(memory.transitions)
        timeline.sort(key=lambda t: (t.time, t.generation), reverse=True)
        return {
            "seq": 0,
            "time": time.time(),
            "read_at": time.time(),  # when the breakers shown were read (older when Redis fails)
            "interval": self.interval,
            "history": self.history,
            "append": False,  # True in the event stream: `rates` holds only the newest sample
            "target": self.target,
            "prefix": self.prefix,
            "actions": self.allow_actions,
            "ok": problem is None,
            "problem": problem,
            "scrape_errors": n_errors,
            "errors": [redact(e) for e in errors],
            "breakers": breakers,
            "timeline": [
                {
                    "service": t.service,
                    "time": t.time,
                    "from": t.from_state.value,
                    "to": t.to_state.value,
                    "cause": t.cause,
                    "actor": t.actor,
                    "generation": t.generation,
                }
                for t in timeline[: self.timeline]
            ],
        }

    async def frame(self) -> dict[str, Any]:
        """The latest frame, sampled again when older than `interval` (one sample at a time,
        in a worker thread, whatever the number of viewers)."""
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            if self._frame is None or time.monotonic() - self._taken >= self.interval * 0.9:
                return await asyncio.to_thread(self.sample)
            return self._frame

    def invalidate(self) -> None:
        """Sample again on the next request (after an action)."""
        self._taken = -math.inf

    # -- actions ------------------------------------------------------------------------------
    def check_token(self, given: str | None) -> bool:
        """Whether `given` is the token (constant time); always False with actions off."""
        if not self.allow_actions or not self._token or given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token.encode())

    def act(self, service: str, action: str, reason: str, for_: float | None, actor: str | None) -> dict[str, Any]:
        """Run `action` on `service` through `Admin` (actor and reason recorded).

        Raises:
            ConfigError: an unknown action, an empty reason, or what `Admin` refuses.
            UnknownServiceError: no such breaker.
        """
        from .admin import Admin

        if action not in ACTIONS:
            raise ConfigError("action", f"must be one of {', '.join(ACTIONS)}, got {action!r}")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError("reason", "say why (it goes into the events stream with the actor)")
        admin = Admin(self.redis, prefix=self.prefix)
        if not admin.exists(service):
            raise UnknownServiceError(service)
        who = actor or self.actor
        if action == "reset":
            snap = admin.reset(service, reason=reason, actor=who)
        elif action == "trip":
            snap = admin.trip(service, for_=for_, reason=reason, actor=who)
        else:
            snap = admin.disable(service, for_=for_, reason=reason, actor=who)
        self.invalidate()
        last = snap.last_transition
        return {
            "service": service,
            "action": action,
            "state": snap.state.value,
            "cause": last.cause if last else "",
            "actor": last.actor if last else "",
        }

    # -- the app ------------------------------------------------------------------------------
    def app(self) -> Any:
        """The ASGI app (Starlette) serving the page, ``/api/state``, ``/api/stream`` and,
        with actions on, ``POST /api/breakers/{service}/{action}``."""
        return _build_app(self)


def make_app(redis: Any, **options: Any) -> Any:
    """An ASGI app showing the breakers of `redis`: ``Dashboard(redis, **options).app()``.

    Mount it in an existing Starlette/FastAPI app (``app.mount("/breakers", make_app(client))``)
    or serve it with uvicorn. The options are those of `Dashboard`.
    """
    return Dashboard(redis, **options).app()


def _static(name: str) -> bytes:
    return importlib.resources.files("distbreaker").joinpath("_dashboard_static", name).read_bytes()


def _build_app(board: Dashboard) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    files = {path: (_static(name), media) for path, (name, media) in STATIC.items()}

    def page(body: bytes, media: str) -> Callable[[Request], Response]:
        def serve(request: Request) -> Response:
            return Response(body, media_type=media, headers={"cache-control": "no-cache"})

        return serve

    async def state(request: Request) -> Response:
        return JSONResponse(await board.frame(), headers={"cache-control": "no-store"})

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[str]:
            last = -1
            yield f"retry: {int(board.interval * 1000) + 500}\n\n"
            while not board.closed:
                frame = await board.frame()
                if frame["seq"] != last:
                    full, delta = board._events
                    yield full if last < 0 else delta  # then only the newest sample of each sparkline
                    last = frame["seq"]
                else:
                    yield ": idle\n\n"
                until = time.monotonic() + max(0.05, board.interval - (time.monotonic() - board._taken))
                while not board.closed and time.monotonic() < until:  # slices: a stop is seen soon
                    await asyncio.sleep(min(STOP_SLICE, until - time.monotonic()))

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-store", "x-accel-buffering": "no"}
        )

    def refuse(status: int, message: str) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})

    async def action(request: Request) -> Response:
        if not board.allow_actions:
            return refuse(403, "operator actions are off (start the dashboard with --allow-actions)")
        if not board.check_token(request.headers.get(TOKEN_HEADER)):
            return refuse(403, f"a valid token is needed in the {TOKEN_HEADER} header")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return refuse(415, "send JSON (content-type: application/json)")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return refuse(400, "the body is not JSON")
        if not isinstance(body, dict):
            return refuse(400, "the body must be a JSON object")
        service, verb = request.path_params["service"], request.path_params["action"]
        for_ = body.get("for")
        if for_ is not None and (isinstance(for_, bool) or not isinstance(for_, (int, float))):
            return refuse(400, "for: seconds (a number) or null")
        actor = body.get("actor") or None
        if actor is not None and not isinstance(actor, str):
            return refuse(400, "actor: a string")
        try:
            done = await asyncio.to_thread(board.act, service, verb, body.get("reason", ""), for_, actor)
        except UnknownServiceError:
            return refuse(404, f"no breaker named {service!r}")
        except ConfigError as exc:
            return refuse(400, str(exc))
        except (RedisError, DistbreakerError) as exc:
            return refuse(502, redact(str(exc)))
        return JSONResponse(done, headers={"cache-control": "no-store"})

    routes = [Route(path, page(body, media), methods=["GET", "HEAD"]) for path, (body, media) in files.items()]
    routes += [
        Route("/api/state", state, methods=["GET"]),
        Route("/api/stream", stream, methods=["GET"]),
        Route("/api/breakers/{service}/{action}", action, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        """Under a server (uvicorn): sample every interval, so sparklines have a history when a
        page opens; without lifespan events (a test transport) the requests sample."""

        async def keep_sampling() -> None:
            me = asyncio.current_task()
            while not cancel_requested(me):  # (a cancellation swallowed by a read still ends it)
                await board.frame()
                await asyncio.sleep(board.interval)

        task = asyncio.create_task(keep_sampling())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    guard = _Guard(Starlette(routes=routes, lifespan=lifespan), board.allowed_hosts)
    guard.dashboard = board
    return guard


class _Guard:
    """ASGI middleware: refuse unknown Host headers, add the security headers to every response."""

    def __init__(self, app: Any, allowed_hosts: set[str] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.dashboard: Dashboard | None = None  # what `app` serves (a server stopping closes it)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None:
            host = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]") not in self.allowed_hosts:
                await _plain(send, 421, b"unknown Host header (the dashboard answers its own addresses only)")
                return

        async def secured(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, secured)


async def _plain(send: Callable[..., Any], status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
