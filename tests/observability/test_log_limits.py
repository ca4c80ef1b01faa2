"""Logging under `distbreaker`: rate-limited, so that no failure mode writes a line per call."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from _obs import Records, unique, wait_for
from _servers import ServerFactory

from distbreaker import Breaker, BreakerConfig, BreakerRegistry, CircuitOpenError, State, connect
from distbreaker._log import OUTAGE_REMINDER, Outage, RateLimitedLogger


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_logger_buckets(logs: Records) -> None:
    """`burst` lines at once per key, then one per `every` seconds, reporting what it dropped."""
    clock = Clock()
    limited = RateLimitedLogger(logging.getLogger("distbreaker"), clock)
    for i in range(10):
        limited.warning("k", "line %d", i, every=10, burst=2)
    limited.warning("other", "another key")
    clock.now = 10
    limited.warning("k", "line %d", 10, every=10, burst=2)
    limited.warning("k", "line %d", 11, every=10, burst=2)
    limited.reset("k")
    limited.warning("k", "after reset", every=10, burst=2)
    assert logs.at(logging.WARNING) == [
        "line 0",
        "line 1",
        "another key",
        "line 10 [8 similar messages suppressed]",
        "after reset",
    ]


def test_outage_once_then_reminders_then_its_end(logs: Records) -> None:
    """A long outage: one warning, a reminder per OUTAGE_REMINDER seconds, one when it ends."""
    clock = Clock()
    outage = Outage(RateLimitedLogger(logging.getLogger("distbreaker"), clock))
    for _ in range(260):  # a failure every 0.5 s for 130 s
        outage.failed("breaker %r: down", "a")
        clock.now += 0.5
    outage.recovered("breaker %r: back", "b")
    outage.recovered("breaker %r: back", "c")  # the outage already ended: nothing
    outage.failed("breaker %r: down", "a")  # a new outage is reported at once
    assert OUTAGE_REMINDER == 60
    assert logs.at(logging.WARNING) == [
        "breaker 'a': down",
        "Redis still unavailable after 60 s (121 errors); last: breaker 'a': down",
        "Redis still unavailable after 120 s (241 errors); last: breaker 'a': down",
        "breaker 'b': back (after 130.0 s and 260 errors)",
        "breaker 'a': down",
    ]


def test_refused_writes_are_one_state_until_a_write(logs: Records) -> None:
    """Writes refused: one line; reads answering end nothing; a change of kind is one line; a
    write that succeeds ends it with one line."""
    clock = Clock()
    outage = Outage(RateLimitedLogger(logging.getLogger("distbreaker"), clock))
    for _ in range(100):
        outage.failed("breaker %r: refuses writes", "a", writes=True)
        outage.recovered("breaker %r: back", "a", wrote=False)
        clock.now += 0.1
    outage.failed("breaker %r: unreachable", "a")  # now it does not answer at all
    outage.recovered("breaker %r: back", "a", wrote=False)  # any reply ends an outage of reads
    assert logs.at(logging.WARNING) == [
        "breaker 'a': refuses writes",
        "breaker 'a': unreachable",
        "breaker 'a': back (after 10.0 s and 101 errors)",
    ]


def test_dead_redis_and_1000_calls_log_one_line(dead_url: str, logs: Records) -> None:
    """1000 calls of 20 breakers (and their pub/sub listener) on a dead Redis write two warnings."""
    reg = BreakerRegistry(connect(dead_url), BreakerConfig(on_redis_error="allow"))
    for i in range(1000):
        assert reg.get(f"svc-{i % 20}").call(lambda: "ran") == "ran"
    rejecting = Breaker(unique(), connect(dead_url), BreakerConfig(on_redis_error="reject"), listen=False)
    for _ in range(100):
        with pytest.raises(CircuitOpenError):
            rejecting.call(lambda: None)
    time.sleep(0.3)  # the listener thread tried and failed too
    warnings = logs.at(logging.WARNING)
    assert len(warnings) <= 2, warnings
    assert any("on_redis_error='allow' until Redis answers" in w for w in warnings)
    assert all(r.levelno < logging.ERROR for r in logs.records)
    reg.close()
    rejecting.close()


def test_an_outage_is_reported_once_and_its_end_too(
    redis_server_factory: ServerFactory, prefix: str, logs: Records
) -> None:
    """Stop → one warning; back → one "answers again"; a later outage is reported at once."""
    server = redis_server_factory()
    b = Breaker(unique(), connect(server.url), prefix=prefix, listen=False)
    b.call(lambda: None)
    for _outage in range(2):
        server.stop()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # several backoff periods: failures, reminders suppressed
            b.call(lambda: None)
            time.sleep(0.005)
        server.start()
        wait_for("recovery", lambda: b.call(lambda: None) is None and not b._core.backoff)
    warnings = logs.at(logging.WARNING)
    down = [w for w in warnings if "until Redis answers" in w]
    up = [w for w in warnings if "answers again" in w]
    assert len(down) == 2 and len(up) == 2 and len(warnings) == 4, warnings
    b.close()


def test_transitions_logged_once_at_info_by_the_process_that_made_them(
    redis_url: str, prefix: str, logs: Records
) -> None:
    """Each transition is one INFO line with its cause, from the breaker whose script made it;
    a breaker that learns it from pub/sub logs it at DEBUG only."""
    svc = unique()
    cfg = BreakerConfig(minimum_calls=1, max_staleness=60)
    watcher = Breaker(svc, connect(redis_url, timeout=1), cfg, prefix=prefix, on_transition=lambda t: None)
    worker = Breaker(svc, connect(redis_url, timeout=1), cfg, prefix=prefix, listen=False)
    watcher.call(lambda: None)
    assert watcher._listener is not None
    wait_for("the listener", watcher._listener.ready.is_set)
    with pytest.raises(Boom):
        worker.call(boom)
    worker.reset(reason="fixed", actor="bob")
    wait_for("the watcher to hear both", lambda: len([r for r in logs.records if r.levelno == logging.DEBUG]) >= 2)
    info = logs.at(logging.INFO)
    assert len(info) == 2, info
    assert info[0].startswith(f"breaker {svc!r}: closed -> open (failure_rate")
    assert info[1] == f"breaker {svc!r}: open -> closed (manual reset by bob: fixed)"
    assert watcher._core.view.state is None or watcher._core.view.state is State.CLOSED
    watcher.close()
    worker.close()


def test_a_flapping_breaker_cannot_flood_the_log(redis_url: str, prefix: str, logs: Records) -> None:
    """Transitions of one breaker: 20 lines at once, then about one every 3 s, with a count."""
    b = Breaker(unique(), connect(redis_url, timeout=1), prefix=prefix, listen=False)
    for _ in range(30):
        b.trip(reason="x")
        b.reset()
    info = logs.at(logging.INFO)
    assert len(info) == 20, info


def test_oom_is_one_state_one_line_per_change(redis_server_factory: ServerFactory, prefix: str, logs: Records) -> None:
    """Redis out of memory (noeviction): reads answer while records are refused. That is one
    state, logged once ("refuses writes"), not a flap between "unavailable" and "answers
    again" at every read; when a write succeeds again, one "answers again"."""
    server = redis_server_factory("--maxmemory-policy", "noeviction")
    client = connect(server.url, timeout=1)
    b = Breaker(unique(), client, BreakerConfig(max_staleness=0.02, redis_timeout=1), prefix=prefix, listen=False)
    b.call(lambda: None)
    filler = redis.Redis.from_url(server.url)
    fill = [f"{prefix}:fill:{i}" for i in range(20)]
    for key in fill:
        filler.set(key, b"x" * 100_000)
    filler.config_set("maxmemory", "1mb")  # 2 MB used: every write is refused, reads answer
    deadline = time.monotonic() + 2.0
    calls = 0
    while time.monotonic() < deadline:  # reads (acquire) succeed every 20 ms, records fail
        b.call(lambda: None)
        calls += 1
        time.sleep(0.005)
    during = logs.at(logging.WARNING)
    assert len(during) == 1 and "refuses writes" in during[0], during
    filler.delete(*fill)
    filler.config_set("maxmemory", "0")  # (the server alone may use about 1 MB)
    wait_for("a record to succeed", lambda: b.call(lambda: None) is None and not b._core.backing_off)
    after = logs.at(logging.WARNING)[1:]
    assert len(after) == 1 and "answers again" in after[0], after
    assert calls > 50
    b.close()
    filler.close()
