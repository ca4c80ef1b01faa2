"""Redis outages seen by the sync Breaker: a paused server, a killed one, a SCRIPT FLUSH storm.

Every test starts a PRIVATE server with ``redis_server_factory`` (never the session one) and
the factory stops it at teardown. Sleeps in these tests pace the load (a call every few
milliseconds so that an outage spans several backoff periods); waits for an outcome poll
with a deadline.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from _servers import Server, ServerFactory

from distbreaker import Breaker, BreakerConfig, CircuitOpenError, RedisUnavailableError, connect

pytestmark = pytest.mark.chaos

SERVICE = "outage-svc"
BUDGET = 0.05  # connect() timeout and BreakerConfig.redis_timeout: the library's defaults


class Boom(Exception):
    """The protected function's own failure."""


@pytest.fixture
def server(redis_server_factory: ServerFactory) -> Server:
    """A private server for this test (stopped by the factory at teardown)."""
    return redis_server_factory()


@pytest.fixture
def client(server: Server) -> Iterator[redis.Redis]:
    """A breaker client to the private server with the library's default 50 ms budget."""
    c = connect(server.url, timeout=BUDGET)
    try:
        yield c
    finally:
        c.close()


def _config(**kw: Any) -> BreakerConfig:
    kw.setdefault("minimum_calls", 1_000_000)
    kw.setdefault("window", 600.0)
    kw.setdefault("redis_timeout", BUDGET)
    return BreakerConfig(**kw)


def _timed(breaker: Breaker, value: int) -> float:
    """Seconds one ``breaker.call`` of a no-op took; checks the value came back."""
    t0 = time.perf_counter()
    got = breaker.call(int, value)
    elapsed = time.perf_counter() - t0
    assert got == value
    return elapsed


def _paced(breaker: Breaker, n: int, pace: float) -> list[float]:
    """``n`` timed calls, one every ``pace`` seconds (load pacing, not synchronisation)."""
    out = []
    for i in range(n):
        out.append(_timed(breaker, i))
        time.sleep(pace)
    return out


def _poll(what: str, timeout: float, check: Callable[[], bool], interval: float = 0.01) -> float:
    """Call ``check`` until it returns True; fail after ``timeout``; return the time it took."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.1f} s")
        time.sleep(interval)


def _counts_again(breaker: Breaker) -> Callable[[], bool]:
    """A check: True when one call made now is counted by Redis (the breaker talks to it)."""

    def check() -> bool:
        try:
            before = breaker.snapshot().calls
            breaker.call(int, 0)
            return breaker.snapshot().calls == before + 1
        except RedisUnavailableError:
            return False

    return check


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def test_paused_redis_costs_at_most_the_budget(server: Server, client: redis.Redis, prefix: str) -> None:
    """With Redis SIGSTOPped every call still runs, each delayed by at most about the budget."""
    breaker = Breaker(SERVICE, client, _config(), prefix=prefix)
    before = [_timed(breaker, i) for i in range(200)]
    counted_before = breaker.snapshot().calls

    server.pause()
    try:
        during = _paced(breaker, 60, 0.02)
    finally:
        server.resume()
    after = [_timed(breaker, i) for i in range(200)]
    recovered_in = _poll("calls counted again after resume", 10.0, _counts_again(breaker))

    waited = [d for d in during if d >= 0.04]
    print(
        f"\nSIGSTOP, {len(during)} calls over {sum(during) + 0.02 * len(during):.2f} s, "
        f"budget {BUDGET * 1000:.0f} ms: "
        f"p50 {statistics.median(during) * 1e3:.3f} ms, p99 {_pct(during, 0.99) * 1e3:.1f} ms, "
        f"max {max(during) * 1e3:.1f} ms; {len(waited)} calls waited >= 40 ms "
        f"({', '.join(f'{w * 1e3:.0f}' for w in waited)} ms)"
    )
    print(
        f"before: p50 {statistics.median(before) * 1e6:.0f} us, max {max(before) * 1e3:.1f} ms; "
        f"after: p50 {statistics.median(after) * 1e6:.0f} us, max {max(after) * 1e3:.1f} ms; "
        f"counted again {recovered_in:.2f} s after the 200 calls that followed the resume"
    )
    assert counted_before == 200
    assert max(during) <= 0.25
    assert 1 <= len(waited) <= len(during) // 4, "the breaker did not back off"


def test_killed_redis_then_restarted(server: Server, client: redis.Redis, prefix: str) -> None:
    """Calls keep working while Redis is killed, and are counted again after its restart."""
    breaker = Breaker(SERVICE, client, _config(), prefix=prefix)
    for i in range(100):
        assert breaker.call(int, i) == i
    assert breaker.snapshot().calls == 100

    server.kill()
    killed = _paced(breaker, 50, 0.01)
    with pytest.raises(RedisUnavailableError):
        breaker.snapshot()
    server.restart()  # same port, empty data, empty script cache (NOSCRIPT -> EVAL)
    after = [_timed(breaker, i) for i in range(100)]
    took = _poll("calls counted after the restart", 10.0, _counts_again(breaker))
    print(
        f"\nSIGKILL: max call {max(killed) * 1e3:.1f} ms while down, "
        f"{max(after) * 1e3:.1f} ms after restart; counted again within {took:.2f} s"
    )
    assert max(killed) <= 0.25


@pytest.mark.parametrize("outage", ["pause", "kill"])
def test_reject_mode_rejects_while_redis_is_down(server: Server, client: redis.Redis, prefix: str, outage: str) -> None:
    """With on_redis_error="reject", calls raise CircuitOpenError and do not run while Redis is down."""
    ran = 0

    def fn() -> int:
        nonlocal ran
        ran += 1
        return ran

    cfg = _config(on_redis_error="reject")
    warm = Breaker(SERVICE, client, cfg, prefix=prefix)
    for _ in range(20):
        warm.call(fn)
    assert warm.snapshot().calls == 20

    getattr(server, outage)()
    try:
        # A breaker that has no cached state asks Redis first: rejected from the first call.
        fresh = Breaker(SERVICE, client, cfg, prefix=prefix)
        ran = 0
        for _ in range(10):
            with pytest.raises(CircuitOpenError):
                fresh.call(fn)
        assert ran == 0

        # A warm breaker runs at most the one call whose record reveals the outage.
        ran = 0
        states: list[str] = []

        def rejects() -> bool:
            try:
                warm.call(fn)
            except CircuitOpenError as exc:
                states.append(exc.state)
                return True
            return False

        took = _poll("the warm breaker rejects", cfg.max_staleness + 2.0, rejects, interval=0.01)
        ran_before_rejecting = ran
        ran = 0
        for _ in range(20):
            with pytest.raises(CircuitOpenError) as info:
                warm.call(fn)
            states.append(info.value.state)
            time.sleep(0.01)  # load pacing: spans several backoff periods
        print(
            f"\nreject/{outage}: warm breaker ran {ran_before_rejecting} calls over {took:.2f} s "
            f"before rejecting; rejection states {sorted(set(states))}"
        )
        assert ran == 0
        assert ran_before_rejecting <= 1
        assert set(states) == {"unavailable"}
    finally:
        if outage == "pause":
            server.resume()


def test_script_flush_storm_loses_nothing(
    server: Server, client: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 calls during a SCRIPT FLUSH storm raise nothing but their own errors and all count.

    The budget is wide (2 s): this test is about NOSCRIPT, and on a loaded machine the 50 ms
    default lets a record's reply (EVAL compiles the script) come late, which is an outage by
    design (the budget's own tests are above): its records are skipped, and logged."""
    wide = connect(server.url, timeout=2.0)
    breaker = Breaker(SERVICE, wide, _config(redis_timeout=2.0), prefix=prefix)
    stop = threading.Event()
    flushes = 0
    flush_errors: list[BaseException] = []

    def storm() -> None:
        nonlocal flushes
        flusher = server.client()
        try:
            while not stop.is_set() and flushes < 1_000_000:
                flusher.script_flush()
                flushes += 1
                time.sleep(0.001)  # load generation rate, not synchronisation
        except BaseException as exc:  # reported by the main thread
            flush_errors.append(exc)

    def fn(i: int) -> int:
        if i % 3 == 0:
            raise Boom(i)
        return i

    n, failures, other = 10_000, 0, []
    thread = threading.Thread(target=storm, name="script-flush-storm", daemon=True)
    caplog.set_level(logging.WARNING, logger="distbreaker")
    thread.start()
    try:
        for i in range(n):
            try:
                assert breaker.call(fn, i) == i
            except Boom:
                failures += 1
            except Exception as exc:
                other.append(exc)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert not flush_errors, flush_errors
    snap = breaker.snapshot()
    breaker.close()
    wide.close()
    print(f"\nSCRIPT FLUSH storm: {flushes} flushes during {n} calls")
    assert other == []
    assert flushes > 10
    assert [r.getMessage() for r in caplog.records] == []  # no Redis error, so no dropped record
    assert (snap.calls, snap.failures) == (n, failures)
