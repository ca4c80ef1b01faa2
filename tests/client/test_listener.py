"""Pub/sub invalidation: transitions made elsewhere reach every cached breaker of a process."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from _servers import ServerFactory

import distbreaker.asyncio as dba
from distbreaker import Admin, Breaker, BreakerConfig, CircuitOpenError, State, connect
from distbreaker._listener import sync_listener


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Poll `predicate` until true; return the seconds it took, fail after `timeout`."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)
    return time.monotonic() - t0


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def test_a_trip_elsewhere_reaches_an_idle_breaker(redis_url: str, prefix: str) -> None:
    """A breaker that cached 'closed' sees another process's trip without making a call."""
    cfg = BreakerConfig(minimum_calls=1, max_staleness=60)
    watcher = Breaker("svc", connect(redis_url, timeout=1), cfg, prefix=prefix)
    worker = Breaker("svc", connect(redis_url, timeout=1), cfg, prefix=prefix, listen=False)
    watcher.call(lambda: None)
    assert watcher._listener is not None
    wait_for("the listener", watcher._listener.ready.is_set)
    with pytest.raises(Boom):
        worker.call(boom)
    took = wait_for("open to propagate", lambda: watcher._core.view.state is State.OPEN)
    assert took < 2.0
    Admin(worker.redis, prefix=prefix).trip("svc", reason="INC-9", actor="ops")
    wait_for("forced_open to propagate", lambda: watcher._core.view.state is State.FORCED_OPEN)
    Admin(worker.redis, prefix=prefix).reset("svc", actor="ops")
    wait_for("the reset to reach the cache", lambda: watcher._core.view.state is State.CLOSED)
    assert watcher.call(lambda: "ok") == "ok"  # the listener re-read the state: closed
    watcher.close()
    worker.close()


def test_a_timed_trip_elsewhere_rejects_with_its_reason_until_its_expiry(redis_url: str, prefix: str) -> None:
    """The published forced_open carries its expiry and reason: a listening worker rejects with
    the operator's reason and the time left, and admits again at the expiry, not after
    max_staleness (60 s here)."""
    watcher = Breaker("svc", connect(redis_url, timeout=1), BreakerConfig(max_staleness=60), prefix=prefix)
    watcher.call(lambda: None)
    assert watcher._listener is not None
    wait_for("the listener", watcher._listener.ready.is_set)
    Admin(connect(redis_url, timeout=1), prefix=prefix).trip("svc", for_=1.0, reason="INC-7", actor="ops")
    wait_for("forced_open to propagate", lambda: watcher._core.view.state is State.FORCED_OPEN)
    with pytest.raises(CircuitOpenError) as err:
        watcher.call(lambda: None)
    assert err.value.reason == "INC-7"
    assert err.value.retry_after is not None and 0 < err.value.retry_after <= 1.0
    took = wait_for("the trip to expire", watcher.allows, timeout=10)
    assert took <= 1.5
    assert watcher.call(lambda: "ok") == "ok"  # asks Redis: the forced state expired
    assert watcher._core.view.state is State.CLOSED
    watcher.close()


def test_listener_reconnects_and_drops_caches_after_restart(redis_server_factory: ServerFactory, prefix: str) -> None:
    """After the server restarts the listener resubscribes, drops cached states, and applies new trips."""
    server = redis_server_factory()
    cfg = BreakerConfig(minimum_calls=1, max_staleness=60)
    watcher = Breaker("svc", connect(server.url, timeout=0.2), cfg, prefix=prefix)
    watcher.call(lambda: None)
    listener = watcher._listener
    assert listener is not None
    wait_for("the listener", listener.ready.is_set)
    server.kill()
    wait_for("the listener to notice", lambda: not listener.ready.is_set())
    server.restart()
    wait_for("the listener to resubscribe", listener.ready.is_set, timeout=10)
    assert watcher._core.view.state is None  # messages may have been lost: cache dropped
    watcher.call(lambda: None)  # the next call asks Redis again
    assert watcher._core.view.state is State.CLOSED
    Admin(connect(server.url, timeout=1), prefix=prefix).trip("svc", actor="ops")
    wait_for("the trip after restart", lambda: watcher._core.view.state is State.FORCED_OPEN)
    watcher.close()


def test_one_thread_per_client_and_it_ends_with_the_last_breaker(redis_url: str, prefix: str) -> None:
    """Breakers sharing a client share one listener thread, which stops after close()."""
    client = connect(redis_url, timeout=1)
    before = {t.name for t in threading.enumerate()}
    a = Breaker("a", client, prefix=prefix)
    b = Breaker("b", client, prefix=prefix)
    listener = sync_listener(client)
    assert a._listener is b._listener is listener and listener.running
    names = [t.name for t in threading.enumerate()]
    assert names.count("distbreaker-listener") - list(before).count("distbreaker-listener") <= 1
    a.close()
    assert listener.running  # b still listens
    b.close()
    wait_for("the thread to end", lambda: not listener.running)


async def test_async_listener_applies_trips_and_stops(redis_url: str, prefix: str) -> None:
    """The asyncio listener task applies a trip made elsewhere and ends on close()."""
    client = dba.connect(redis_url, timeout=1)
    watcher = dba.Breaker("svc", client, BreakerConfig(max_staleness=60), prefix=prefix)
    await watcher.call(lambda: None)
    listener = watcher._listener
    assert listener is not None
    await asyncio.wait_for(listener.ready.wait(), 5)
    Admin(connect(redis_url, timeout=1), prefix=prefix).trip("svc", actor="ops")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while watcher.state is not State.FORCED_OPEN:
        assert loop.time() < deadline, "trip never reached the async breaker"
        await asyncio.sleep(0.005)
    await watcher.close()
    assert not listener.running
    await client.aclose()


def test_listen_false_starts_nothing(redis_url: str, prefix: str) -> None:
    """listen=False makes no listener."""
    b = Breaker("svc", connect(redis_url, timeout=1), prefix=prefix, listen=False)
    assert b._listener is None
    b.call(lambda: None)


# -- messages are hints: forged or garbled ones decide nothing ----------------------------------
def _publish(url: str, channel: str, payload: str, times: int = 1) -> None:
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for _ in range(times):
        pipe.publish(channel, payload)
    pipe.execute()
    client.close()


def test_a_forged_trip_message_does_not_make_workers_reject(redis_url: str, prefix: str) -> None:
    """Anyone may PUBLISH on the channel: a forged forced_open (generation 1000000, no expiry)
    sent again and again makes the listener re-read Redis, which says closed, so every call is
    admitted; a real trip made by another process still reaches the worker."""
    worker = Breaker("svc", connect(redis_url, timeout=1), BreakerConfig(max_staleness=60), prefix=prefix)
    worker.call(lambda: None)
    assert worker._listener is not None
    wait_for("the listener", worker._listener.ready.is_set)
    forged = json.dumps({"service": "svc", "to": "forced_open", "generation": 1000000, "forced_until": 0})
    fetched = worker._core.view.fetched_at
    admitted = 0
    for _ in range(20):
        _publish(redis_url, f"{prefix}:events", forged)
        for _ in range(10):
            worker.call(lambda: None)  # raises CircuitOpenError if the message were believed
            admitted += 1
        time.sleep(0.005)
    wait_for("the listener to re-read", lambda: worker._core.view.fetched_at > fetched)
    assert admitted == 200 and worker._core.view.state is State.CLOSED and worker.allows()
    trip = (
        f"from distbreaker import Admin, connect; Admin(connect({redis_url!r}, timeout=1), prefix={prefix!r})"
        ".trip('svc', reason='INC-1', actor='ops')"
    )
    subprocess.run([sys.executable, "-c", trip], check=True, timeout=60)
    wait_for("a real trip from another process", lambda: worker._core.view.state is State.FORCED_OPEN)
    with pytest.raises(CircuitOpenError):
        worker.call(lambda: None)
    worker.close()


def test_malformed_messages_leave_the_listener_connected_and_caches_intact(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A well-formed message with open_until "abc", and other garbage, are ignored (a rate-limited
    log line): the listener keeps its connection, no cached state is dropped, and the next real
    transition still arrives."""
    caplog.set_level(logging.WARNING, logger="distbreaker")
    client = connect(redis_url, timeout=1)
    cfg = BreakerConfig(max_staleness=60)
    svc, bystander = Breaker("svc", client, cfg, prefix=prefix), Breaker("other", client, cfg, prefix=prefix)
    svc.call(lambda: None)
    bystander.call(lambda: None)
    listener = svc._listener
    assert listener is not None and listener is bystander._listener
    wait_for("the listener", listener.ready.is_set)
    channel = f"{prefix}:events"
    _publish(
        redis_url,
        channel,
        json.dumps(
            {
                "service": "svc",
                "from": "closed",
                "to": "open",
                "generation": 99,
                "open_until": "abc",
                "cause": "x",
                "actor": "",
                "ts": "soon",
            }
        ),
    )
    for garbage in ("not json", "[1, 2]", '{"service": 7}', "\xff", '{"generation": 5}'):
        _publish(redis_url, channel, garbage, times=50)
    Admin(connect(redis_url, timeout=1), prefix=prefix).trip("svc", reason="real", actor="ops")
    wait_for("the real trip", lambda: svc._core.view.state is State.FORCED_OPEN)
    assert bystander._core.view.state is State.CLOSED  # nothing dropped the caches
    assert listener.ready.is_set() and listener.running
    text = [r.getMessage() for r in caplog.records]
    assert not any("lost Redis" in t or "resubscribed" in t for t in text), text
    malformed = [t for t in text if "malformed message" in t]
    assert 1 <= len(malformed) <= 3, text  # rate-limited
    svc.close()
    bystander.close()


def test_a_burst_of_messages_costs_a_few_reads(redis_server_factory: ServerFactory, prefix: str) -> None:
    """500 messages naming one breaker, sent at once, are coalesced and rate-limited into a few
    re-reads (a bucket of 5, then 20 per second), and the breaker still ends with Redis's state."""
    server = redis_server_factory()
    stats = server.client()
    worker = Breaker("svc", connect(server.url, timeout=1), BreakerConfig(max_staleness=60), prefix=prefix)
    worker.call(lambda: None)
    assert worker._listener is not None
    wait_for("the listener", worker._listener.ready.is_set)
    stats.config_resetstat()
    fetched = worker._core.view.fetched_at
    _publish(
        server.url,
        f"{prefix}:events",
        json.dumps({"service": "svc", "to": "forced_open", "generation": 10**6}),
        times=500,
    )
    wait_for("a re-read", lambda: worker._core.view.fetched_at > fetched)
    time.sleep(0.3)  # let any further re-reads happen (they are what is counted)
    cmd = stats.info("commandstats")
    reads = cmd.get("cmdstat_evalsha", {}).get("calls", 0) + cmd.get("cmdstat_eval", {}).get("calls", 0)
    assert 1 <= reads <= 5 + 20, reads
    assert worker._core.view.state is State.CLOSED
    worker.close()


def _child_sees_trip(breaker: Breaker, tripped: Any, result: Any) -> None:
    listener = breaker._listener
    assert listener is not None
    if not listener.ready.wait(10):
        result.put("the child's listener never subscribed")
        return
    result.put("ready")
    if not tripped.wait(30):
        result.put("never tripped")
        return
    deadline = time.monotonic() + 10
    while breaker._core.view.state is not State.FORCED_OPEN:
        if time.monotonic() > deadline:
            result.put(f"the trip never reached the child (cache: {breaker._core.view.state})")
            return
        time.sleep(0.005)
    result.put("ok")


def test_a_forked_child_listens_on_its_own(redis_url: str, prefix: str) -> None:
    """A listening breaker built before os.fork(): the child runs its own listener thread (the
    parent's does not survive the fork), which subscribes again and brings it the next trip."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    watcher = Breaker("svc", connect(redis_url, timeout=1), BreakerConfig(max_staleness=60), prefix=prefix)
    watcher.call(lambda: None)
    assert watcher._listener is not None
    wait_for("the listener", watcher._listener.ready.is_set)
    tripped, result = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_child_sees_trip, args=(watcher, tripped, result), daemon=True)
    child.start()
    try:
        assert result.get(timeout=30) == "ready"
        Admin(connect(redis_url, timeout=1), prefix=prefix).trip("svc", reason="INC-3", actor="ops")
        tripped.set()
        assert result.get(timeout=30) == "ok"
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert watcher._listener.running  # the parent's own listener is untouched
    wait_for("the parent's cache", lambda: watcher._core.view.state is State.FORCED_OPEN)
    watcher.close()
