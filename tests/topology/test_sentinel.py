"""distbreaker behind Sentinel (1 master + 1 replica + 3 sentinels, the `redis_sentinel` fixture):
the client follows a failover, the scripts reload on the new master (EVALSHA -> NOSCRIPT -> EVAL),
and the state replicated before the failover is still there."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
from _servers import SENTINEL_MASTER, SentinelSet

import distbreaker.asyncio as dba
from distbreaker import Breaker, BreakerConfig, State, connect_sentinel

pytestmark = pytest.mark.sentinel

BUDGET = 0.05
DEADLINE = 20.0  # automatic failover here: 2.3-3.2 s; a demoted master: ~11 s (sentinel's INFO period)


def cfg(**kw: Any) -> BreakerConfig:
    kw.setdefault("minimum_calls", 1000)
    return BreakerConfig(redis_timeout=BUDGET, **kw)


def _calls_on(port: int, prefix: str, service: str) -> int:
    """The breaker's call count as stored on the server at `port` (-1: no such breaker there)."""
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as r:
        if not r.exists(f"{prefix}:{{{service}}}"):
            return -1
        return Breaker(service, r, cfg(), prefix=prefix, listen=False).snapshot().calls


def test_master_killed_breaker_follows_the_new_master(redis_sentinel: SentinelSet, prefix: str) -> None:
    """SIGKILL of the master: calls never raise (allow), and once sentinel promotes the replica
    the breaker's calls are counted on the new master, the trip made before still in force."""
    client = connect_sentinel(redis_sentinel.sentinel_addresses, SENTINEL_MASTER, timeout=BUDGET)
    b = Breaker("sentinel-svc", client, cfg(), prefix=prefix, listen=False)
    other = Breaker("sentinel-other", client, cfg(), prefix=prefix, listen=False)
    try:
        for i in range(10):
            assert b.call(int, i) == i
        other.trip(reason="before failover")
        assert redis_sentinel.master is not None and redis_sentinel.replica is not None
        redis_sentinel.master.client().execute_command("WAIT", 1, 1000)  # replicated before the crash
        new_port = redis_sentinel.replica.port
        t0 = time.monotonic()
        redis_sentinel.master.kill()
        before = _calls_on(new_port, prefix, "sentinel-svc")
        while True:
            assert b.call(int, 1) == 1
            if (
                redis_sentinel.master_address()[1] == new_port
                and b._core.backoff == 0.0
                and _calls_on(new_port, prefix, "sentinel-svc") > before
            ):
                break
            assert time.monotonic() - t0 < DEADLINE, "the breaker did not follow the failover"
            time.sleep(0.01)
        n = time.monotonic() - t0
        print(f"\nsentinel: master SIGKILLed -> breaker counted on the new master after {n:.2f} s")
        assert other.snapshot().state is State.FORCED_OPEN
    finally:
        b.close()
        other.close()
        client.close()


async def test_asyncio_follows_a_failover(redis_sentinel: SentinelSet, prefix: str) -> None:
    client = dba.connect_sentinel(redis_sentinel.sentinel_addresses, SENTINEL_MASTER, timeout=BUDGET)
    b = dba.Breaker("async-sentinel", client, cfg(), prefix=prefix, listen=False)
    try:
        assert await b.call(int, 1) == 1
        assert redis_sentinel.master is not None and redis_sentinel.replica is not None
        new_port = redis_sentinel.replica.port
        t0 = time.monotonic()
        redis_sentinel.master.kill()
        while True:
            assert await b.call(int, 1) == 1
            if b._core.backoff == 0.0 and _calls_on(new_port, prefix, "async-sentinel") > 1:
                break
            assert time.monotonic() - t0 < DEADLINE, "the asyncio breaker did not follow the failover"
            await asyncio.sleep(0.01)
        assert (await b.snapshot()).state is State.CLOSED
    finally:
        await b.close()
        await client.aclose()
