"""A breaker whose key vanished (eviction, FLUSHDB) recovers as closed, logged once; a server
whose maxmemory-policy can evict breaker keys is flagged at startup (once) and by doctor."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from _servers import ServerFactory

import distbreaker.asyncio as dba
from distbreaker import Admin, Breaker, BreakerConfig, State, connect
from distbreaker._cluster import _checked


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "distbreaker" and text in r.getMessage()]


def test_flushdb_recovers_closed_and_logs_once(
    redis_server_factory: ServerFactory, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An open breaker whose key is flushed: once the cache expires the next call stores the config
    again (NOCONFIG -> resend) and runs closed; one warning, not one per call."""
    caplog.set_level(logging.INFO, logger="distbreaker")
    server = redis_server_factory()
    client = connect(server.url, timeout=0.5)
    cfg = BreakerConfig(minimum_calls=2, open_duration=0.2, max_staleness=0.1, redis_timeout=0.5)
    b = Breaker("vanish", client, cfg, prefix=prefix, listen=False)
    try:
        for _ in range(2):
            with pytest.raises(Boom):
                b.call(boom)
        assert b.snapshot().state is State.OPEN
        assert b._core.config_sent
        client.flushdb()
        time.sleep(0.25)
        for i in range(20):
            assert b.call(int, i) == i
        snap = b.snapshot()
        assert snap.state is State.CLOSED and snap.calls == 20
        assert snap.config is not None  # the config was stored again
        assert len(_lines(caplog, "vanished")) == 1
    finally:
        b.close()
        client.close()


def test_eviction_removes_the_key_breaker_recovers(
    redis_server_factory: ServerFactory, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """allkeys-lru under maxmemory: a startup warning (once per client), doctor warns, and when
    the breaker's key is evicted the breaker carries on closed."""
    caplog.set_level(logging.INFO, logger="distbreaker")
    server = redis_server_factory("--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru")
    client = connect(server.url, timeout=0.5)
    cfg = BreakerConfig(minimum_calls=2, open_duration=0.2, max_staleness=0.1, redis_timeout=0.5)
    breakers = [Breaker(f"evict-{i}", client, cfg, prefix=prefix) for i in range(3)]
    try:
        wait_for("the startup warning", lambda: bool(_lines(caplog, "maxmemory-policy is allkeys-lru")))
        b = breakers[0]
        for _ in range(2):
            with pytest.raises(Boom):
                b.call(boom)
        filler = server.client()
        blob = b"x" * 20_000
        for i in range(2000):  # ~40 MB through a 4 MB server: the LRU breaker key goes
            filler.set(f"filler:{i}", blob)
        assert not client.exists(f"{prefix}:{{evict-0}}")
        time.sleep(0.25)
        assert b.call(int, 1) == 1
        assert b.snapshot().state is State.CLOSED
        assert len(_lines(caplog, "vanished")) == 1
        checks = {c.name: c for c in Admin(client, prefix=prefix).doctor(pings=2)}
        assert checks["maxmemory-policy"].status == "WARN"
        assert len(_lines(caplog, "maxmemory-policy is allkeys-lru")) == 1  # once per client
    finally:
        for b in breakers:
            b.close()
        client.close()


def test_noeviction_gives_no_warning(
    redis_server_factory: ServerFactory, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="distbreaker")
    server = redis_server_factory("--maxmemory-policy", "noeviction")
    client = connect(server.url, timeout=0.5)
    b = Breaker("quiet", client, BreakerConfig(redis_timeout=0.5), prefix=prefix)
    try:
        assert b._listener is not None
        wait_for("the listener", b._listener.ready.is_set)
        assert client in _checked
        assert not _lines(caplog, "maxmemory-policy")
    finally:
        b.close()
        client.close()


async def test_asyncio_startup_warning(
    redis_server_factory: ServerFactory, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="distbreaker")
    server = redis_server_factory("--maxmemory-policy", "volatile-lru")
    client = dba.connect(server.url, timeout=0.5)
    b = dba.Breaker("avol", client, BreakerConfig(redis_timeout=0.5), prefix=prefix)
    try:
        assert await b.call(int, 2) == 2
        assert b._listener is not None
        import asyncio

        await asyncio.wait_for(b._listener.ready.wait(), 5)
        assert len(_lines(caplog, "maxmemory-policy is volatile-lru")) == 1
    finally:
        await b.close()
        await client.aclose()
