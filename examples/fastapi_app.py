"""A FastAPI app whose downstream calls go through shared breakers (`distbreaker.asyncio`).

Every uvicorn worker process (and every replica of the app) that runs this against the same
Redis and prefix shares the breakers: when one process sees the downstream fail, all of them
stop calling it.

- ``GET /quotes/{symbol}``: a price from the flaky "quotes" service, through its breaker; a
  cached price (``"source": "fallback"``) when the breaker rejects the call or the call fails.
- ``GET /recommendations``: the same with the "recommendations" service; an empty list as fallback.
- ``GET /breakers``: the breakers' snapshots, as Redis holds them (shared by every process).
- ``PUT /downstream/{service}`` with ``{"failure_rate": 0.9}``: make the simulated service fail
  (``0`` heals it).

Run it (an embedded server is started when ``DISTBREAKER_URL`` is not set; it prints the
``distbreaker status`` command that shows its breakers)::

    pip install '.[examples,demo]'
    python examples/fastapi_app.py --port 8000
    curl -X PUT localhost:8000/downstream/quotes -H 'content-type: application/json' -d '{"failure_rate": 1}'
    for i in $(seq 12); do curl -s localhost:8000/quotes/ACME; echo; done
    curl -s localhost:8000/breakers

In tests (or behind another ASGI server): ``create_app(url, prefix)``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

import distbreaker.asyncio as dba
from distbreaker import BreakerConfig, CircuitOpenError, Snapshot

SERVICES = ("quotes", "recommendations")
CALL_TIMEOUT = 1.0  # seconds a downstream call may take before it is cancelled (and counts as failed)

# Small numbers so that the breaker visibly trips and recovers within seconds.
DEFAULT_CONFIG = BreakerConfig(
    failure_rate_threshold=0.5,
    minimum_calls=5,
    window=10,
    open_duration=2,
    max_open_duration=10,
    redis_timeout=0.2,
)


class DownstreamError(Exception):
    """The simulated downstream service failed (a 503, say)."""


class FlakyService:
    """A downstream service simulated in-process: each call fails with `failure_rate`."""

    def __init__(self, name: str, failure_rate: float = 0.0, latency: float = 0.005) -> None:
        self.name, self.failure_rate, self.latency = name, failure_rate, latency
        self.calls = 0
        self._rng = random.Random(name)

    async def get(self, what: str) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(self.latency)
        if self._rng.random() < self.failure_rate:
            raise DownstreamError(f"{self.name} answered 503")
        return {"what": what, "value": round(100 + self._rng.random(), 2)}


class FailureRate(BaseModel):
    failure_rate: float = Field(ge=0.0, le=1.0)


def snapshot_dict(s: Snapshot) -> dict[str, Any]:
    """The shared state as JSON (times on the Redis server's clock, in seconds)."""
    last = s.last_transition
    return {
        "state": s.state.value,
        "calls": s.calls,
        "failures": s.failures,
        "failure_rate": round(s.failure_rate, 3),
        "retry_after": s.retry_after,
        "open_count": s.open_count,
        "reason": s.reason,
        "last_transition": None
        if last is None
        else {"from": last.from_state.value, "to": last.to_state.value, "cause": last.cause},
    }


def _why(exc: BaseException) -> str:
    if isinstance(exc, CircuitOpenError):
        return f"breaker {exc.state}: not called"
    return f"call failed: {exc}"


def create_app(url: str | None = None, prefix: str | None = None, config: BreakerConfig | None = None) -> FastAPI:
    """The app. `url` and `prefix` default to ``$DISTBREAKER_URL`` (else a local Redis) and
    ``$DISTBREAKER_PREFIX`` (else ``"distbreaker"``)."""
    url = url or os.environ.get("DISTBREAKER_URL") or "redis://localhost:6379/0"
    prefix = prefix or os.environ.get("DISTBREAKER_PREFIX") or "distbreaker"
    config = config or DEFAULT_CONFIG

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client and one registry per process, made on its event loop; closed on shutdown.
        client = dba.connect(url, timeout=config.redis_timeout)
        registry = dba.BreakerRegistry(client, config, prefix=prefix)
        app.state.breakers = registry
        app.state.downstream = {name: FlakyService(name) for name in SERVICES}
        try:
            yield
        finally:
            await registry.close()  # flush (batched mode) and stop the pub/sub listener task
            await client.aclose()

    app = FastAPI(title="distbreaker example", lifespan=lifespan)

    @app.get("/quotes/{symbol}")
    async def quote(symbol: str, request: Request) -> dict[str, Any]:
        registry: dba.BreakerRegistry = request.app.state.breakers
        service: FlakyService = request.app.state.downstream["quotes"]

        def cached(exc: BaseException) -> dict[str, Any]:
            return {"symbol": symbol, "price": None, "source": "fallback", "why": _why(exc)}

        result = await registry.call("quotes", service.get, symbol, fallback=cached, timeout=CALL_TIMEOUT)
        if result.get("source") == "fallback":
            return result
        return {"symbol": symbol, "price": result["value"], "source": "live"}

    @app.get("/recommendations")
    async def recommendations(request: Request) -> dict[str, Any]:
        registry: dba.BreakerRegistry = request.app.state.breakers
        service: FlakyService = request.app.state.downstream["recommendations"]

        async def empty(exc: BaseException) -> dict[str, Any]:  # a fallback may be async too
            return {"items": [], "source": "fallback", "why": _why(exc)}

        result = await registry.call("recommendations", service.get, "user", fallback=empty, timeout=CALL_TIMEOUT)
        if result.get("source") == "fallback":
            return result
        return {"items": [result["value"]], "source": "live"}

    @app.get("/breakers")
    async def breakers(request: Request) -> dict[str, Any]:
        registry: dba.BreakerRegistry = request.app.state.breakers
        return {name: snapshot_dict(await registry.get(name).snapshot()) for name in SERVICES}

    @app.put("/downstream/{name}")
    async def set_failure_rate(name: str, body: FailureRate, request: Request) -> dict[str, Any]:
        downstream: dict[str, FlakyService] = request.app.state.downstream
        if name not in downstream:
            raise HTTPException(404, f"no downstream {name!r}; one of {', '.join(SERVICES)}")
        downstream[name].failure_rate = body.failure_rate
        return {"service": name, "failure_rate": body.failure_rate, "note": "this process's simulated service only"}

    return app


class _Stopped(BaseException):
    """A signal arrived before uvicorn was serving: unwind (the embedded server is stopped)."""


class _Signals:
    """Ctrl-C, SIGTERM and SIGHUP (the terminal closed) all end the app the same way: uvicorn
    shuts down gracefully, then the embedded server is stopped. uvicorn handles SIGINT and
    SIGTERM itself while it serves and re-raises them afterwards; SIGHUP is handed to it here.
    The exit code: 0 after Ctrl-C, 128 + the signal's number otherwise (143, 129)."""

    def __init__(self) -> None:
        self.received = 0
        self.server: Any = None  # uvicorn.Server while it serves

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.handle)

    def handle(self, signum: int, frame: Any) -> None:
        self.received = self.received or signum
        if self.server is not None:
            self.server.handle_exit(signum, frame)  # a graceful shutdown (again: harmless)
        else:
            raise _Stopped()

    def exit_code(self) -> int:
        return 0 if self.received in (0, signal.SIGINT) else 128 + self.received


def main(argv: list[str] | None = None) -> int:
    import uvicorn
    from _embedded import redis_url, status_command

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--prefix", default=None, help="key prefix (default $DISTBREAKER_PREFIX or distbreaker)")
    args = parser.parse_args(argv)
    prefix = args.prefix or os.environ.get("DISTBREAKER_PREFIX") or "distbreaker"
    signals = _Signals()
    signals.install()
    try:
        with redis_url() as url:  # $DISTBREAKER_URL, or an embedded server stopped when uvicorn exits
            print(
                f"prefix {prefix!r}; watch its breakers with:\n  {status_command(url, prefix)} --watch",
                file=sys.stderr,
                flush=True,
            )
            server = uvicorn.Server(uvicorn.Config(create_app(url, prefix), host=args.host, port=args.port))
            signals.server = server
            server.run()
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # stopping: nothing cuts it short
                signal.signal(sig, signal.SIG_IGN)
    except _Stopped:
        pass
    return signals.exit_code()


if __name__ == "__main__":
    sys.exit(main())
