"""The lean path holds a connection between commands: it must behave as the pool would."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
import redis

import distbreaker.asyncio as dba
from distbreaker import Breaker, BreakerConfig, connect
from distbreaker._transport import _GET_CONNECTION_ARGS, _HELD


def _kill_clients(r: redis.Redis) -> int:
    """Close every normal connection but `r`'s own (what a server `timeout` does to idle ones)."""
    return int(r.client_kill_filter(_type="normal", skipme=True))


def test_a_held_connection_the_server_closed_is_replaced(redis_url: str, r: redis.Redis, prefix: str) -> None:
    client = connect(redis_url, timeout=2.0)
    b = Breaker("svc", client, BreakerConfig(), prefix=prefix, listen=False)
    b.call(lambda: None)
    assert len(client.connection_pool.__dict__[_HELD]) == 1
    assert _kill_clients(r) >= 1
    for _ in range(5):
        b.call(lambda: None)
    assert b._core.down_until == 0  # no call saw a Redis error
    assert b.snapshot().calls == 6  # every outcome counted: none was lost on the dead socket
    client.close()


def test_held_connections_are_capped_per_pool(redis_url: str, prefix: str) -> None:
    """8 threads at once on a pool of 8: at most 2 (a quarter) stay held; the others go back."""
    client = connect(redis_url, timeout=2.0, max_connections=8)
    b = Breaker("svc", client, BreakerConfig(minimum_calls=10**6), prefix=prefix, listen=False)
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(50):
                b.call(lambda: None)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    held = client.connection_pool.__dict__[_HELD]
    assert held.cap == 2 and 1 <= len(held) <= 2
    assert b.snapshot().calls == 400
    # the rest of the pool is free for other users of the client: 6 connections at once
    conns = [client.connection_pool.get_connection(*_GET_CONNECTION_ARGS) for _ in range(6)]
    for c in conns:
        client.connection_pool.release(c)
    client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_use_the_parents_held_connection(redis_url: str, prefix: str) -> None:
    client = connect(redis_url, timeout=2.0)
    b = Breaker("svc", client, BreakerConfig(), prefix=prefix, listen=False)
    b.call(lambda: None)
    parent_conn = client.connection_pool.__dict__[_HELD][0]
    pid = os.fork()
    if pid == 0:  # the child: 10 calls, then report through the exit code
        code = 1
        try:
            for _ in range(10):
                b.call(lambda: None)
            held = client.connection_pool.__dict__[_HELD]
            code = 0 if b._core.down_until == 0 and parent_conn not in held else 2
        finally:
            os._exit(code)
    for _ in range(10):
        b.call(lambda: None)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b.snapshot().calls == 21
    client.close()


def test_held_state_survives_error_replies(redis_url: str, r: redis.Redis, prefix: str) -> None:
    """An error reply (here WRONGTYPE) leaves the connection clean and held; the next command on
    it gets its own reply, not a stale one."""
    client = connect(redis_url, timeout=2.0)
    r.set(f"{prefix}:{{taken}}", "x")
    bad = Breaker("taken", client, BreakerConfig(), prefix=prefix, listen=False)
    good = Breaker("svc", client, BreakerConfig(), prefix=prefix, listen=False)
    with pytest.raises(Exception, match="WRONGTYPE"):
        bad.call(lambda: None)
    assert len(client.connection_pool.__dict__[_HELD]) == 1
    assert good.call(lambda: 7) == 7
    assert good.snapshot().calls == 1
    client.close()


def test_connect_sends_no_handshake_commands(redis_server_factory: object, prefix: str) -> None:
    """Regression (issue 14 item 19): a connect() / asyncio connect() connection sends no HELLO and
    no CLIENT SETINFO (the server's command stats show only the breaker's own commands)."""
    server = redis_server_factory()  # type: ignore[operator]
    admin = redis.Redis.from_url(server.url, protocol=2)
    admin.config_resetstat()
    client = connect(server.url, timeout=2.0)
    Breaker("svc", client, BreakerConfig(), prefix=prefix, listen=False).call(lambda: None)

    async def one_async() -> None:
        aclient = dba.connect(server.url, timeout=2.0)
        await dba.Breaker("svc", aclient, BreakerConfig(), prefix=prefix, listen=False).call(lambda: None)
        await aclient.aclose()

    asyncio.run(one_async())
    stats = admin.info("commandstats")
    assert "cmdstat_evalsha" in stats or "cmdstat_eval" in stats
    assert not [name for name in stats if name in ("cmdstat_hello", "cmdstat_client|setinfo")], stats
    client.close()
    admin.close()
