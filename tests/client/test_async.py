"""The asyncio Breaker mirrors the sync one: same names, same behaviour, on a real server."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

import distbreaker
import distbreaker.asyncio as dba
from distbreaker import BackendError, BreakerConfig, CircuitOpenError, State


class Boom(Exception):
    pass


@pytest.fixture
def make(aclient: Any, prefix: str) -> Callable[..., dba.Breaker]:
    def factory(service: str = "svc", **cfg: Any) -> dba.Breaker:
        return dba.Breaker(service, aclient, BreakerConfig(**cfg), prefix=prefix)

    return factory


async def fail() -> None:
    raise Boom("down")


def test_public_names_match_the_sync_breaker() -> None:
    """Both Breaker classes expose the same public names; the async ones are coroutines."""
    sync_names = {n for n in dir(distbreaker.Breaker) if not n.startswith("_")}
    async_names = {n for n in dir(dba.Breaker) if not n.startswith("_")}
    assert sync_names == async_names
    for name in ("call", "snapshot", "trip", "disable", "reset"):
        assert inspect.iscoroutinefunction(getattr(dba.Breaker, name))
    assert inspect.iscoroutinefunction(dba.Breaker.__aenter__)


async def test_decorator_context_manager_and_call(make: Callable[..., dba.Breaker]) -> None:
    """async decorator, async with and await call() all count their outcomes."""
    b = make()

    @b
    async def add(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    assert await add(1) == 2
    async with b:
        pass
    with pytest.raises(Boom):
        async with b:
            raise Boom
    assert await b.call(lambda: 5) == 5  # a sync function works too
    s = await b.snapshot()
    assert (s.calls, s.failures) == (4, 1)


async def test_fallback_sync_or_async(make: Callable[..., dba.Breaker]) -> None:
    """fallback gets the failure, then the CircuitOpenError; it may be sync or async."""
    b = make(minimum_calls=1)
    seen: list[type[BaseException]] = []

    async def afb(exc: BaseException) -> str:
        seen.append(type(exc))
        return "async fb"

    assert await b.call(fail, fallback=afb) == "async fb"
    assert await b.call(fail, fallback=lambda exc: seen.append(type(exc)) or "sync fb") == "sync fb"
    assert seen == [Boom, CircuitOpenError]


async def test_sync_function_is_refused_by_the_async_decorator() -> None:
    """Decorating a plain function with the asyncio Breaker raises TypeError pointing to the sync one."""
    client = dba.connect("redis://127.0.0.1:1/0")
    b = dba.Breaker("svc", client)
    with pytest.raises(TypeError, match="distbreaker.Breaker"):
        b(lambda: None)  # type: ignore[arg-type]
    await client.aclose()


async def test_concurrent_tasks_count_exactly(make: Callable[..., dba.Breaker]) -> None:
    """200 concurrent tasks through one breaker, half failing, count exactly 200 / 100."""
    b = make(minimum_calls=10_000)

    async def one(i: int) -> None:
        try:
            async with b:
                await asyncio.sleep(0)
                if i % 2:
                    raise Boom
        except Boom:
            pass

    await asyncio.gather(*(one(i) for i in range(200)))
    s = await b.snapshot()
    assert (s.calls, s.failures) == (200, 100)


async def test_open_rejects_without_round_trip_then_probes(aclient: Any, prefix: str) -> None:
    """The async breaker trips, rejects from the cache, half-opens and closes like the sync one."""
    now = [1_700_000_000.0]
    b = dba.Breaker(
        "svc", aclient, BreakerConfig(minimum_calls=2, open_duration=5), prefix=prefix, clock=lambda: now[0]
    )
    for _ in range(2):
        with pytest.raises(Boom):
            await b.call(fail)
    assert b.state is State.OPEN
    with pytest.raises(CircuitOpenError) as info:
        await b.call(lambda: None)
    assert info.value.retry_after == pytest.approx(5)
    now[0] += 5
    assert await b.call(lambda: "probe") == "probe"
    assert (await b.snapshot()).state is State.CLOSED


async def test_operator_actions(make: Callable[..., dba.Breaker]) -> None:
    """trip / disable / reset work and return snapshots."""
    b = make()
    s = await b.trip(for_=60, reason="INC-7", actor="alice")
    assert (s.state, s.reason, s.actor) == (State.FORCED_OPEN, "INC-7", "alice")
    assert s.retry_after == pytest.approx(60, abs=1)
    assert (await b.disable(actor="bob")).state is State.DISABLED
    assert (await b.reset(actor="carol")).state is State.CLOSED


async def test_wrongtype_is_raised(make: Callable[..., dba.Breaker], r: Any, prefix: str) -> None:
    """A non-breaker value at the key raises BackendError naming WRONGTYPE."""
    r.set(f"{prefix}:{{taken}}", "x")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        await make("taken").call(lambda: None)


async def test_redis_down_allows_within_budget(redis_server_factory: Any, prefix: str) -> None:
    """With Redis killed, calls run under on_redis_error='allow' and each costs at most ~the budget."""
    server = redis_server_factory()
    client = dba.connect(server.url, timeout=0.05)
    b = dba.Breaker("svc", client, BreakerConfig(), prefix=prefix)
    await b.call(lambda: None)
    server.kill()
    loop = asyncio.get_running_loop()
    worst = 0.0
    for _ in range(20):
        t0 = loop.time()
        assert await b.call(lambda: "ran") == "ran"
        worst = max(worst, loop.time() - t0)
    assert worst < 0.5
    await client.aclose()


def test_pack_matches_redis_py() -> None:
    """The lean asyncio path packs commands byte for byte as redis-py does, and leaves types it
    does not handle to redis-py."""
    from redis.asyncio.connection import Connection

    from distbreaker._transport import pack

    for encoding in ("utf-8", "latin-1"):
        conn = Connection(encoding=encoding)
        command = ("EVALSHA", "a" * 40, 2, "p:{svc}", "p:{svc}:events", "", "café", b"\x00\xff", -7, 0)
        assert pack(command, encoding, "strict") == b"".join(conn.pack_command(*command))
    assert pack(("SET", "k", 1.5), "utf-8", "strict") is None
    assert pack(("SET", "k", True), "utf-8", "strict") is None


async def test_write_to_a_hung_server_times_out(redis_server_factory: Any) -> None:
    """A command the socket does not take at once waits for it within the socket timeout; the
    timeout is redis-py's TimeoutError (a Redis error the breaker's policy handles)."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from distbreaker._transport import _aexecute

    server = redis_server_factory()
    client = dba.connect(server.url, timeout=0.2)
    try:
        assert await _aexecute(client, client.connection_pool, ("PING",)) == b"PONG"
        server.pause()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(RedisTimeoutError):
            await _aexecute(client, client.connection_pool, ("ECHO", b"x" * (64 << 20)))
        assert loop.time() - t0 < 5.0
    finally:
        server.resume()
        await client.aclose()


@pytest.mark.parametrize("n", [200, 1000])
async def test_a_cold_burst_on_a_fresh_default_client_is_counted_in_full(
    redis_url: str, prefix: str, n: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (issue 14 item 2): N concurrent calls on a fresh `connect()` client with the
    default budget, no connection set up yet, are all counted (they used to time out connecting,
    1-2 of 200 counted under load)."""
    client = dba.connect(redis_url)
    b = dba.Breaker("svc", client, BreakerConfig(minimum_calls=10**6), prefix=prefix)
    caplog.set_level("WARNING", logger="distbreaker")
    try:
        results = await asyncio.gather(*(b.call(lambda: "ran") for _ in range(n)))
        assert results == ["ran"] * n
        # no call saw a Redis error (then it would not be counted)
        assert b._core.down_until == 0, [r.getMessage() for r in caplog.records]
        assert (await b.snapshot()).calls == n
    finally:
        await b.close()
        await client.aclose()


async def test_a_hung_server_bounds_a_burst_by_about_one_budget(redis_server_factory: Any, prefix: str) -> None:
    """With the server stopped (SIGSTOP) a burst of 1000 calls on a warm default client all run
    (on_redis_error='allow') after about one budget: the commands outstanding on the stalled
    connection fail together, instead of each opening a connection and waiting a budget of its
    own (counted: the connections the hung server was sent, none)."""
    import redis

    server = redis_server_factory()
    admin = redis.Redis.from_url(server.url, socket_timeout=10)
    client = dba.connect(server.url)
    b = dba.Breaker("svc", client, BreakerConfig(minimum_calls=10**6), prefix=prefix, listen=False)
    try:
        assert await b.call(lambda: "ran") == "ran"
        before = int(admin.info("stats")["total_connections_received"])
        server.pause()
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            results = await asyncio.gather(*(b.call(lambda: "ran") for _ in range(1000)))
            took = loop.time() - t0
        finally:
            server.resume()
        assert results == ["ran"] * 1000
        assert b._core.down_until > 0  # the calls saw the timeout (and back off), not a success
        opened = int(admin.info("stats")["total_connections_received"]) - before
        assert opened == 0, opened  # the burst shares the warm pipelined connection: none opened
        assert took < 40 * 0.05, took  # loose: ~1 budget here; one budget per waiting call was ~30
    finally:
        await client.aclose()
        admin.close()


async def test_a_user_built_asyncio_client_takes_a_cold_burst(redis_url: str, prefix: str) -> None:
    """A plain `redis.asyncio.Redis` the user built (not through connect) counts a cold burst of 200."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=0.5)
    b = dba.Breaker("svc", client, BreakerConfig(minimum_calls=10**6), prefix=prefix, listen=False)
    try:
        await asyncio.gather(*(b.call(lambda: None) for _ in range(200)))
        assert (await b.snapshot()).calls == 200
    finally:
        await client.aclose()


async def test_a_client_of_the_other_world_is_refused_at_construction(redis_url: str) -> None:
    """A sync client given to the asyncio Breaker (or an asyncio one to the sync Breaker) raises
    ConfigError naming what to pass, instead of failing at the first call."""
    import distbreaker

    sync_client = distbreaker.connect(redis_url)
    async_client = dba.connect(redis_url)
    try:
        with pytest.raises(distbreaker.ConfigError, match="distbreaker.asyncio.connect"):
            dba.Breaker("svc", sync_client)
        with pytest.raises(distbreaker.ConfigError, match="distbreaker.connect"):
            distbreaker.Breaker("svc", async_client)
    finally:
        sync_client.close()
        await async_client.aclose()
