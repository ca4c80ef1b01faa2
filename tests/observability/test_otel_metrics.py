"""Metrics, read with the SDK's in-memory reader, against a real server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from _obs import Otel, unique, wait_for

import distbreaker.asyncio as dba
from distbreaker import Breaker, BreakerConfig, CircuitOpenError, connect
from distbreaker._otel import CALLS, REDIS_DURATION, REDIS_ERRORS, STATE, TRANSITIONS
from distbreaker.testing import FrozenClock


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def ok() -> str:
    return "ok"


def outcome(name: str, slow: bool | None = None) -> tuple[Any, ...]:
    attrs: dict[str, Any] = {"outcome": name}
    if slow is not None:
        attrs["slow"] = slow
    return tuple(sorted(attrs.items()))


def test_calls_are_counted_once_per_call_by_outcome(otel: Otel, redis_url: str, prefix: str) -> None:
    """Successes, failures (slow or not), ignored calls and rejections add up to the calls made."""
    svc, clock = unique(), FrozenClock()
    b = Breaker(
        svc,
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=1000, slow_call_duration=1.0, ignored_exceptions=(KeyError,)),
        prefix=prefix,
        clock=clock,
        listen=False,
    )

    def slow_ok() -> None:
        clock.advance(1.5)

    def slow_boom() -> None:
        clock.advance(1.5)
        raise Boom

    for _ in range(4):
        b.call(ok)
    with b:
        pass
    b.call(slow_ok)
    b.call(slow_ok)
    for fn in (boom, boom, slow_boom):
        with pytest.raises(Boom):
            b.call(fn)
    with pytest.raises(KeyError), b:
        raise KeyError("ignored")
    b.trip(reason="test")
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            b.call(ok)
    assert b.call(ok, fallback=lambda exc: "fallback") == "fallback"  # a rejection too
    assert otel.values(CALLS, svc) == {
        outcome("success", False): 5,
        outcome("success", True): 2,
        outcome("failure", False): 2,
        outcome("failure", True): 1,
        outcome("ignored"): 1,
        outcome("rejected"): 4,
    }
    b.close()


def test_transitions_learnt_from_pubsub_are_not_counted(otel: Otel, redis_url: str, prefix: str) -> None:
    """Two clients in one process: only the one whose script tripped the breaker counts it."""
    svc = unique()
    cfg = BreakerConfig(minimum_calls=1, max_staleness=60)
    watcher = Breaker(svc, connect(redis_url, timeout=1), cfg, prefix=prefix)
    worker = Breaker(svc, connect(redis_url, timeout=1), cfg, prefix=prefix, listen=False)
    watcher.call(ok)
    assert watcher._listener is not None
    wait_for("the listener", watcher._listener.ready.is_set)
    with pytest.raises(Boom):
        worker.call(boom)
    wait_for("the watcher to learn of the trip", lambda: str(watcher._core.view.state) == "open")
    assert otel.values(TRANSITIONS, svc) == {(("from", "closed"), ("to", "open")): 1}
    watcher.close()
    worker.close()


def test_every_transition_counts_with_its_pair(otel: Otel, redis_url: str, prefix: str) -> None:
    """closed>open, open>half_open, half_open>closed and the operator's ones are each counted."""
    svc, clock = unique(), FrozenClock()
    b = Breaker(
        svc,
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=1, open_duration=10),
        prefix=prefix,
        clock=clock,
        listen=False,
    )
    with pytest.raises(Boom):
        b.call(boom)  # closed > open
    clock.advance(11)
    b.call(ok)  # open > half_open (acquire), half_open > closed (record)
    b.trip(reason="INC-1", actor="alice")  # closed > forced_open
    b.reset(actor="alice")  # forced_open > closed
    pair = lambda a, z: (("from", a), ("to", z))  # noqa: E731
    assert otel.values(TRANSITIONS, svc) == {
        pair("closed", "open"): 1,
        pair("open", "half_open"): 1,
        pair("half_open", "closed"): 1,
        pair("closed", "forced_open"): 1,
        pair("forced_open", "closed"): 1,
    }
    b.close()


def test_state_gauge_follows_the_cached_state(otel: Otel, redis_url: str, prefix: str) -> None:
    """0 closed, 1 half_open, 2 open, 3 forced_open, 4 disabled; a closed breaker leaves the gauge."""
    svc, clock = unique(), FrozenClock()
    b = Breaker(
        svc,
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=1, open_duration=10),
        prefix=prefix,
        clock=clock,
        listen=False,
    )
    assert otel.values(STATE, svc) == {}  # nothing cached yet
    b.call(ok)
    assert otel.values(STATE, svc) == {(): 0}
    with pytest.raises(Boom):
        b.call(boom)
    assert otel.values(STATE, svc) == {(): 2}
    clock.advance(11)
    b.snapshot()  # read.lua moves it to half_open
    assert otel.values(STATE, svc) == {(): 1}
    b.trip(reason="x")
    assert otel.values(STATE, svc) == {(): 3}
    b.disable(reason="x")
    assert otel.values(STATE, svc) == {(): 4}
    b.reset()
    assert otel.values(STATE, svc) == {(): 0}
    b.close()
    assert otel.values(STATE, svc) == {}


def test_redis_round_trips_are_timed(otel: Otel, redis_url: str, prefix: str) -> None:
    """The histogram gets acquire and record round trips, in seconds, per script."""
    svc = unique()
    b = Breaker(svc, connect(redis_url, timeout=1), prefix=prefix, listen=False)
    b.call(ok)  # acquire (nothing cached) + record: the record is within the sample interval
    time.sleep(0.02)
    b.call(ok)  # record
    hist = otel.points(REDIS_DURATION, svc)
    assert set(hist) == {(("script", "acquire"),), (("script", "record"),)}
    for p in hist.values():
        assert p.count >= 1 and 0 < p.sum / p.count < 1.0
    b.close()


def test_redis_errors_are_counted(otel: Otel, dead_url: str) -> None:
    """A refused connection counts as a Redis error, by class; the call still runs (allow)."""
    svc = unique()
    b = Breaker(svc, connect(dead_url), listen=False)
    assert b.call(ok) == "ok"
    assert otel.values(REDIS_ERRORS, svc) == {(("error", "ConnectionError"),): 1}
    assert otel.values(CALLS, svc) == {outcome("success", False): 1}
    b.close()


async def test_the_asyncio_breaker_records_the_same(otel: Otel, redis_url: str, prefix: str) -> None:
    """Outcomes, rejections and transitions of distbreaker.asyncio.Breaker are counted alike."""
    svc = unique()
    client = dba.connect(redis_url, timeout=1)
    b = dba.Breaker(svc, client, BreakerConfig(minimum_calls=3), prefix=prefix, listen=False)

    async def aboom() -> None:
        raise Boom

    assert await b.call(ok) == "ok"
    for _ in range(2):
        with pytest.raises(Boom):
            await b.call(aboom)
    with pytest.raises(CircuitOpenError):
        await b.call(ok)
    assert otel.values(CALLS, svc) == {
        outcome("success", False): 1,
        outcome("failure", False): 2,
        outcome("rejected"): 1,
    }
    assert otel.values(TRANSITIONS, svc) == {(("from", "closed"), ("to", "open")): 1}
    assert otel.values(STATE, svc) == {(): 2}
    await b.close()
    await client.aclose()


def test_batched_flushes_count_their_transitions(otel: Otel, redis_url: str, prefix: str) -> None:
    """In batched mode the flush's reply reports the trip: counted once, by this process."""
    svc = unique()
    b = Breaker(
        svc,
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=5),
        prefix=prefix,
        listen=False,
        mode="batched",
        flush_interval=60,
    )
    for _ in range(5):
        with pytest.raises(Boom):
            b.call(boom)
    b.flush()
    assert otel.values(TRANSITIONS, svc) == {(("from", "closed"), ("to", "open")): 1}
    assert otel.values(CALLS, svc) == {outcome("failure", False): 5}
    b.close()


def test_without_an_sdk_nothing_is_recorded_and_nothing_breaks(redis_url: str, prefix: str) -> None:
    """With the API's no-op provider a breaker works as usual (the default for library users)."""
    b = Breaker(unique(), connect(redis_url, timeout=1), BreakerConfig(minimum_calls=1), prefix=prefix, listen=False)
    assert b.call(ok) == "ok"
    with pytest.raises(Boom):
        b.call(boom)
    with pytest.raises(CircuitOpenError):
        b.call(ok)
    b.close()


def test_the_library_imports_no_sdk() -> None:
    """No module of the library (or the CLI) imports the SDK: the API only."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*(root / "distbreaker").rglob("*.py"), *(root / "cli").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("opentelemetry.sdk")]
    assert offenders == []


def test_breakers_work_when_the_sdk_is_not_installed() -> None:
    """With opentelemetry.sdk unimportable, breakers still count, reject and trip (API no-ops)."""
    code = """if True:
        import importlib.abc, sys
        class NoSdk(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
                    raise ImportError(name)
        sys.meta_path.insert(0, NoSdk())
        import distbreaker, distbreaker.asyncio
        from distbreaker import BreakerConfig, CircuitOpenError
        from distbreaker.testing import make_breaker
        b = make_breaker("x", BreakerConfig(minimum_calls=1))
        assert b.call(lambda: "ok") == "ok"
        try:
            b.call(lambda: 1 / 0)
        except ZeroDivisionError:
            pass
        try:
            b.call(lambda: None)
            raise SystemExit("not rejected")
        except CircuitOpenError:
            pass
        assert not [m for m in sys.modules if m.startswith("opentelemetry.sdk")]
    """
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_state_gauge_applies_expiry_to_an_idle_breaker(otel: Otel, redis_url: str, prefix: str) -> None:
    """An idle breaker's gauge does not stay stale: open past open_until is observed as
    half_open, a forced state past its expiry as closed, without any call reading Redis
    (issue 17; pybreaker #15, resilience4j #347)."""
    svc, clock = unique(), FrozenClock()
    client = connect(redis_url, timeout=1)
    b = Breaker(svc, client, BreakerConfig(minimum_calls=1, open_duration=10), prefix=prefix, clock=clock, listen=False)
    with pytest.raises(Boom):
        b.call(boom)
    assert otel.values(STATE, svc) == {(): 2}
    clock.advance(9.9)
    assert otel.values(STATE, svc) == {(): 2}
    clock.advance(0.2)  # open_until has passed; nothing has read Redis since
    assert otel.values(STATE, svc) == {(): 1}
    assert b.snapshot().state.value == "half_open"  # what the scripts then say
    b.trip(for_=60, reason="x")
    assert otel.values(STATE, svc) == {(): 3}
    clock.advance(61)
    assert otel.values(STATE, svc) == {(): 0}
    b.disable(for_=5, reason="x")
    clock.advance(4)
    assert otel.values(STATE, svc) == {(): 4}
    clock.advance(2)
    assert otel.values(STATE, svc) == {(): 0}
    b.trip(reason="no expiry")
    clock.advance(10**6)
    assert otel.values(STATE, svc) == {(): 3}
    b.close()


def test_call_counts_are_exact_across_threads_and_repeated_reads(otel: Otel, redis_url: str, prefix: str) -> None:
    """Threads counting at once, with the SDK reading meanwhile, lose no call: the tallies take
    no lock on the call path, and a read does not disturb them."""
    svc = unique()
    client = connect(redis_url, timeout=1)
    cfg = BreakerConfig(minimum_calls=10**6)
    b = Breaker(svc, client, cfg, prefix=prefix, listen=False, mode="batched", flush_interval=60)
    opened = Breaker(unique(), client, BreakerConfig(max_staleness=3600), prefix=prefix, listen=False)
    opened.trip(for_=3600)
    start = threading.Barrier(5)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(500):
                b.call(ok)
                try:
                    opened.call(ok)
                except CircuitOpenError:
                    pass
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    start.wait(timeout=10)
    for _ in range(20):  # reads while the threads count
        otel.values(CALLS, svc)
    for t in threads:
        t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert otel.values(CALLS, svc) == {outcome("success", False): 2000}
    assert otel.values(CALLS, opened.service) == {outcome("rejected"): 2000}
    assert otel.values(CALLS, svc) == {outcome("success", False): 2000}  # a read changes nothing
    b.close()
    opened.close()


def test_the_span_lookup_matches_the_api(otel: Otel) -> None:
    """`_otel.current_span()` (the call path's cheaper read) finds the span the API's
    `get_current_span()` finds, and nothing outside a span."""
    from opentelemetry.trace import get_current_span

    from distbreaker._otel import current_span

    assert current_span() is None and not get_current_span().is_recording()
    with otel.tracer.start_as_current_span("outer") as span:
        assert current_span() is span is get_current_span()
        with otel.tracer.start_as_current_span("inner") as inner:
            assert current_span() is inner is get_current_span()
        assert current_span() is span
    assert current_span() is None
