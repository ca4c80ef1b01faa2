"""distbreaker on a Redis Cluster (3 masters + 3 replicas on loopback, the `redis_cluster` fixture).

Every script touches one slot (the ``{service}`` hash tag), breakers spread over every master,
`Admin.list` finds them all, pub/sub reaches every worker, a SCRIPT FLUSH storm is absorbed,
MOVED/ASK during a resharding are absorbed within the budget, and the asyncio cluster client works.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _servers import Cluster
from redis.cluster import key_slot

import distbreaker.asyncio as dba
from distbreaker import Admin, Breaker, BreakerConfig, State, connect_cluster
from distbreaker._core import keys_for

pytestmark = pytest.mark.cluster

SERVICES = [f"svc-{i}" for i in range(9)]


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)
    return time.monotonic() - t0


@pytest.fixture
def rc(redis_cluster: Cluster) -> Iterator[Any]:
    client = connect_cluster(redis_cluster.url, timeout=0.5)
    try:
        yield client
    finally:
        client.close()


def cfg(**kw: Any) -> BreakerConfig:
    kw.setdefault("minimum_calls", 2)
    kw.setdefault("failure_rate_threshold", 0.5)
    kw.setdefault("redis_timeout", 0.5)
    return BreakerConfig(**kw)


def test_every_key_of_a_breaker_is_in_one_slot(prefix: str) -> None:
    for service in SERVICES:
        keys = keys_for(prefix, service)
        assert len({key_slot(k.encode()) for k in (keys.state, keys.events, keys.ids)}) == 1


def test_breakers_on_every_master_trip_and_are_listed(redis_cluster: Cluster, rc: Any, prefix: str) -> None:
    """Breakers whose slots sit on all three masters count, trip, and are all found by Admin.list."""
    owners = {redis_cluster.master_of(keys_for(prefix, s).state).port for s in SERVICES}
    assert len(owners) == 3, "the services should spread over the three masters"
    breakers = [Breaker(s, rc, cfg(failure_rate_threshold=0.6), prefix=prefix, listen=False) for s in SERVICES]
    try:
        for b in breakers:
            assert b.call(int, 7) == 7
            for _ in range(2):
                with pytest.raises(Boom):
                    b.call(boom)
            assert b.snapshot().state is State.OPEN
        admin = Admin(rc, prefix=prefix)
        assert admin.list() == sorted(SERVICES)
        assert all(admin.status(s).state is State.OPEN for s in SERVICES)
        admin.reset(SERVICES[0], reason="test")
        assert State.CLOSED in {t.to_state for t in admin.history(SERVICES[0])}
    finally:
        for b in breakers:
            b.close()


def test_batched_flush_with_ids_on_a_cluster(rc: Any, prefix: str) -> None:
    """Batched flushes touch three keys (state, events, ids): one slot, applied once."""
    b = Breaker("batched", rc, cfg(minimum_calls=1000), prefix=prefix, listen=False, mode="batched", flush_interval=60)
    try:
        for i in range(50):
            b.call(int, i)
        b.flush()
        assert b.snapshot().calls == 50
    finally:
        b.close()


def test_script_flush_storm_is_absorbed(rc: Any, prefix: str) -> None:
    """SCRIPT FLUSH on every primary between calls: EVALSHA -> NOSCRIPT -> EVAL on whichever node."""
    breakers = [Breaker(s, rc, cfg(minimum_calls=1000), prefix=prefix, listen=False) for s in SERVICES[:6]]
    try:
        for i in range(30):
            if i % 3 == 0:
                rc.script_flush()
            for b in breakers:
                assert b.call(int, i) == i
        assert all(b.snapshot().calls == 30 for b in breakers)
    finally:
        for b in breakers:
            b.close()


def test_a_trip_reaches_a_worker_through_cluster_pubsub(redis_cluster: Cluster, prefix: str) -> None:
    """A worker on its own cluster client learns of a trip on any master without a call (Lua
    PUBLISH in a cluster reaches the subscribers of every node)."""
    watcher_client = connect_cluster(redis_cluster.url, timeout=0.5)
    actor_client = connect_cluster(redis_cluster.url, timeout=0.5)
    watchers = [Breaker(s, watcher_client, cfg(max_staleness=60), prefix=prefix) for s in SERVICES[:6]]
    try:
        assert watchers[0]._listener is not None
        wait_for("the listener", watchers[0]._listener.ready.is_set)
        for w in watchers:
            w.call(int, 1)
            assert w._core.view.state is State.CLOSED
        for s, w in zip(SERVICES[:6], watchers):
            Admin(actor_client, prefix=prefix).trip(s, reason="pubsub test")
            wait_for(f"{s} to learn of the trip", lambda w=w: w._core.view.state is State.FORCED_OPEN, 3)
            assert not w.allows()
    finally:
        for w in watchers:
            w.close()
        watcher_client.close()
        actor_client.close()


def _migrate_slot(cluster: Cluster, key: str, hold: Callable[[], None]) -> tuple[int, int]:
    """Move `key`'s slot to another master with its keys (MIGRATING/IMPORTING, MIGRATE, SETSLOT
    NODE), as redis-cli --cluster reshard does; `hold()` runs in each phase. Returns the ports."""
    slot = key_slot(key.encode())
    src = cluster.master_of(key)
    dst = next(
        m
        for m in cluster.nodes
        if m.running and m is not src and "master" in str(cluster.admin(m).execute_command("ROLE")[0])
    )
    s, d = cluster.admin(src), cluster.admin(dst)
    src_id, dst_id = cluster.node_id(src), cluster.node_id(dst)
    d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    hold()  # MIGRATING, keys still on the source: served there
    keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    # all keys of the slot in one MIGRATE (as a breaker's keys are few); a slot whose keys are
    # split between two nodes answers multi-key scripts with TRYAGAIN (counted as unavailable)
    s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
    hold()  # keys on the destination, slot still the source's: ASK + ASKING on every call
    for m in cluster.nodes:
        if m.running and "master" in str(cluster.admin(m).execute_command("ROLE")[0]):
            cluster.admin(m).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    return src.port, dst.port


@pytest.mark.parametrize("history", ["transitioned", "new"])
def test_resharding_moved_and_ask_are_absorbed(redis_cluster: Cluster, rc: Any, prefix: str, history: str) -> None:
    """While a breaker's slot moves to another master, calls keep going through Redis: no error
    reaches the caller, every call is counted once, each stays within the budget. A new breaker
    (no transition yet) too: its events stream exists from its first call, so no node ever holds
    only one of its keys (TRYAGAIN).

    One exception, by design: on a loaded machine redis-py's redirection TTL can run out while
    the slot moves ("TTL exhausted", a ClusterError). The breaker takes that as an outage
    (logged), backs off, and the records of that backoff are skipped, not guessed. Calls that
    end with the breaker backing off are counted here as `skipped`: the count is exact without
    them, and never more than the calls made."""
    service = f"resharded-{history}"
    b = Breaker(service, rc, cfg(minimum_calls=10_000, redis_timeout=0.5), prefix=prefix, listen=False)
    errors: list[BaseException] = []
    latencies: list[float] = []
    stop = threading.Event()
    n, skipped = [0], [0]

    def load() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                b.call(int, 1)
                n[0] += 1
                if b._core.backoff > 0:  # its record failed or was skipped (an outage, logged)
                    skipped[0] += 1
            except BaseException as exc:  # noqa: BLE001 - the test reports any
                errors.append(exc)
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.001)

    try:
        if history == "transitioned":
            b.trip(reason="a breaker with a history")
            b.reset(reason="start")
        b.call(int, 1)
        n[0] += 1
        t = threading.Thread(target=load)
        t.start()
        try:
            src, dst = _migrate_slot(redis_cluster, keys_for(prefix, service).state, lambda: time.sleep(0.3))
            time.sleep(0.3)
        finally:
            stop.set()
            t.join(10)
        assert src != dst and redis_cluster.master_of(keys_for(prefix, service).state).port == dst
        assert not errors
        assert b._core.backoff == 0.0, "a redirection counted as an outage"
        counted = b.snapshot().calls
        assert n[0] - skipped[0] <= counted <= n[0], (counted, n[0], skipped[0])
        latencies.sort()
        print(
            f"\nresharding: {len(latencies)} calls, p50 {latencies[len(latencies) // 2] * 1000:.2f} ms, "
            f"max {latencies[-1] * 1000:.2f} ms, {skipped[0]} calls ended in an outage's backoff"
        )
    finally:
        b.close()
        redis_cluster.wait_ok()


async def test_asyncio_cluster(redis_cluster: Cluster, prefix: str) -> None:
    """connect_cluster() initialises the client: 60 concurrent calls on 6 services at once work,
    trips and pub/sub too."""
    client = await dba.connect_cluster(redis_cluster.url, timeout=0.5)
    other = await dba.connect_cluster(redis_cluster.url, timeout=0.5)
    breakers = [dba.Breaker(s, client, cfg(max_staleness=60), prefix=prefix) for s in SERVICES[:6]]
    try:
        results = await asyncio.gather(*[b.call(int, i) for i in range(10) for b in breakers])
        assert sorted(results) == sorted(i for i in range(10) for _ in breakers)
        listener = breakers[0]._listener
        assert listener is not None
        await asyncio.wait_for(listener.ready.wait(), 5)
        await dba.Breaker(SERVICES[3], other, cfg(), prefix=prefix, listen=False).trip(reason="async")
        for _ in range(300):
            if breakers[3]._core.view.state is State.FORCED_OPEN:
                break
            await asyncio.sleep(0.01)
        assert breakers[3]._core.view.state is State.FORCED_OPEN
        assert [(await b.snapshot()).calls for b in breakers] == [10] * 6
    finally:
        for b in breakers:
            await b.close()
        await client.aclose()
        await other.aclose()


async def test_asyncio_listener_initialises_a_user_built_cluster_client(redis_cluster: Cluster, prefix: str) -> None:
    """Regression: redis-py's asyncio ClusterPubSub fails (KeyError on the slot table) on a client
    that was never initialised; the listener initialises it first."""
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster.url, socket_timeout=0.5)
    b = dba.Breaker("plain", client, cfg(), prefix=prefix)
    try:
        assert await b.call(int, 3) == 3
        assert b._listener is not None
        await asyncio.wait_for(b._listener.ready.wait(), 5)
    finally:
        await b.close()
        await client.aclose()


async def test_a_fresh_user_built_asyncio_cluster_client_takes_a_concurrent_burst(
    redis_cluster: Cluster, prefix: str
) -> None:
    """Regression (issue 14 item 3): 50 concurrent calls on a `redis.asyncio.cluster.RedisCluster`
    the user built and never initialised are all counted (they raised AttributeError
    'NoneType' object has no attribute 'writelines')."""
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster.url, socket_timeout=0.5)
    b = dba.Breaker("fresh", client, cfg(minimum_calls=10**6), prefix=prefix, listen=False)
    try:
        assert await asyncio.gather(*(b.call(int, i) for i in range(50))) == list(range(50))
        assert (await b.snapshot()).calls == 50
    finally:
        await b.close()
        await client.aclose()


def test_a_fresh_user_built_sync_cluster_client_takes_concurrent_threads(redis_cluster: Cluster, prefix: str) -> None:
    """50 calls from 10 threads at once on a `redis.cluster.RedisCluster` the user built are all counted."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster.url, socket_timeout=0.5)
    b = Breaker("fresh-sync", client, cfg(minimum_calls=10**6), prefix=prefix, listen=False)
    start = threading.Barrier(10)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(5):
                b.call(int, 1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(10)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors
        assert b.snapshot().calls == 50
    finally:
        b.close()
        client.close()
