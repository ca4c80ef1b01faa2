"""Degradation levels from the error rate across breakers and, optionally, CPU and memory."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from _toolkit import wait_for

import distbreaker.asyncio as dba
from distbreaker import Breaker, ConfigError, Snapshot, State
from distbreaker.toolkit.degradation import (
    Assessment,
    AsyncDegradationMonitor,
    DegradationMonitor,
    Level,
    Thresholds,
    assess,
    process_usage,
)


class Down(Exception):
    pass


def fail() -> None:
    raise Down


def outcomes(b: Breaker, successes: int, failures: int) -> None:
    for _ in range(successes):
        b.call(lambda: None)
    for _ in range(failures):
        with pytest.raises(Down):
            b.call(fail)


def snap(state: State = State.CLOSED, calls: int = 0, failures: int = 0) -> Snapshot:
    return Snapshot("svc", state, 1, calls, failures, 0, 0, None, None, "", "", 0, 0, 0, 0.0)


def test_levels_are_ordered_strings() -> None:
    """Levels compare by severity and print as their names."""
    assert Level.NORMAL < Level.DEGRADED < Level.CRITICAL < Level.EMERGENCY
    assert Level.EMERGENCY >= Level.CRITICAL and not Level.NORMAL > Level.DEGRADED
    assert max(Level.DEGRADED, Level.NORMAL) is Level.DEGRADED
    assert str(Level.CRITICAL) == "critical" and Level("degraded") is Level.DEGRADED
    assert [lv.rank for lv in Level] == [0, 1, 2, 3]


def test_assess_is_pure() -> None:
    """The mean of per-breaker rates: open counts 1.0, a window under minimum_calls 0.0."""
    few = snap(calls=3, failures=3)  # under minimum_calls: 0.0
    half = snap(calls=10, failures=5)  # 0.5
    down = snap(State.OPEN)  # 1.0
    a = assess([few, half, down], [10, 10, 10])
    assert a.error_rate == pytest.approx(0.5) and a.level is Level.EMERGENCY
    assert a.causes == ("error_rate 0.50 >= 0.50 (emergency)",)
    b = assess([few, half], [10, 10], previous=Level.EMERGENCY)
    assert (b.level, b.previous, b.error_rate) == (Level.CRITICAL, Level.EMERGENCY, 0.25)
    assert assess([], []).level is Level.NORMAL
    c = assess([few], [1], cpu=(Thresholds(degraded=50, critical=80, emergency=95), 90.0))
    assert c.level is Level.EMERGENCY and "cpu 90% >= 80% (critical)" in c.causes and c.cpu == 90.0


def test_levels_follow_the_breakers(make: Callable[..., Breaker]) -> None:
    """Driving failures through three real breakers moves the level up, and recovery moves it
    back; `on_change` sees each change once."""
    a = make("a", minimum_calls=10, failure_rate_threshold=0.9)
    b = make("b", minimum_calls=10, consecutive_failures=3)
    c = make("c", minimum_calls=10)
    changes: list[Assessment] = []
    monitor = DegradationMonitor([a, b, c], on_change=changes.append)
    assert monitor.level is Level.NORMAL and monitor.last is None
    outcomes(c, 10, 0)
    assert monitor.refresh().level is Level.NORMAL and changes == []

    outcomes(a, 6, 4)  # a: 0.4 -> mean 0.13
    r = monitor.refresh()
    assert (r.level, r.error_rate) == (Level.DEGRADED, pytest.approx(0.4 / 3))
    outcomes(a, 0, 5)  # a: 9/15 -> mean 0.2
    assert monitor.refresh().level is Level.DEGRADED
    outcomes(b, 0, 3)  # b opens: 1.0 -> mean 0.53
    r = monitor.refresh()
    assert r.level is Level.EMERGENCY and monitor.level is Level.EMERGENCY
    b.reset()
    a.reset()
    assert monitor.refresh().level is Level.NORMAL
    assert [(x.previous, x.level) for x in changes] == [
        (Level.NORMAL, Level.DEGRADED),
        (Level.DEGRADED, Level.EMERGENCY),
        (Level.EMERGENCY, Level.NORMAL),
    ]


def test_critical_and_custom_thresholds(make: Callable[..., Breaker]) -> None:
    """Custom error-rate thresholds; one breaker of four open is 0.25, critical by default."""
    bs = [make(n, consecutive_failures=1) for n in "abcd"]
    outcomes(bs[0], 0, 1)
    assert DegradationMonitor(bs).refresh().level is Level.CRITICAL
    strict = DegradationMonitor(bs, error_rate=Thresholds(degraded=0.01, critical=0.02, emergency=0.2))
    assert strict.refresh().level is Level.EMERGENCY
    dynamic = DegradationMonitor(lambda: bs[1:])  # a callable: the set is read at each refresh
    assert dynamic.refresh().level is Level.NORMAL


def test_cpu_and_memory_signals(make: Callable[..., Breaker]) -> None:
    """CPU and memory (from a `usage` callable here) raise the level on their own."""
    usage = {"now": (10.0, 20.0)}
    monitor = DegradationMonitor(
        [make()],
        cpu=Thresholds(degraded=70, critical=85, emergency=95),
        memory=Thresholds(degraded=60, critical=80, emergency=90),
        usage=lambda: usage["now"],
    )
    r = monitor.refresh()
    assert (r.level, r.cpu, r.memory) == (Level.NORMAL, 10.0, 20.0)
    usage["now"] = (88.0, 20.0)
    assert monitor.refresh().level is Level.CRITICAL
    usage["now"] = (10.0, 95.0)
    r = monitor.refresh()
    assert r.level is Level.EMERGENCY and r.causes == ("memory 95% >= 90% (emergency)",)


def test_psutil_usage(make: Callable[..., Breaker]) -> None:
    """Without `usage`, psutil measures this process (CPU percent of all cores, RSS percent)."""
    pytest.importorskip("psutil")
    sample = process_usage()
    cpu, memory = sample()
    assert 0.0 <= cpu <= 100.0 and 0.0 < memory < 100.0
    monitor = DegradationMonitor([make()], memory=Thresholds(degraded=99.0, critical=99.5, emergency=100.0))
    r = monitor.refresh()
    assert r.level is Level.NORMAL and r.memory is not None and r.cpu is None


def test_invalid_thresholds(make: Callable[..., Breaker]) -> None:
    """Thresholds must be ascending numbers; signals must be Thresholds."""
    with pytest.raises(ConfigError):
        Thresholds(degraded=0.5, critical=0.2, emergency=0.9)
    with pytest.raises(ConfigError):
        Thresholds(degraded="a", critical=0.2, emergency=0.9)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cpu"):
        DegradationMonitor([make()], cpu=(70, 85, 95), usage=lambda: (0.0, 0.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="interval"):
        DegradationMonitor([make()], interval=0)


def test_background_thread_tracks_the_level_and_stops(make: Callable[..., Breaker]) -> None:
    """Started, the monitor refreshes in a daemon thread; the level follows a trip; `stop()` ends it."""
    b = make("b", consecutive_failures=1)
    with DegradationMonitor([b], interval=0.02) as monitor:
        wait_for(lambda: monitor.last is not None, what="the first refresh")
        assert monitor.level is Level.NORMAL
        outcomes(b, 0, 1)
        wait_for(lambda: monitor.level is Level.EMERGENCY, what="the level to rise")
    assert not monitor.running
    assert not any(t.name == "distbreaker-degradation" for t in threading.enumerate())


async def test_async_monitor(amake: Callable[..., dba.Breaker]) -> None:
    """The asyncio monitor gathers snapshots concurrently; its task refreshes and stops."""
    a, b = amake("a", consecutive_failures=1), amake("b")

    async def afail() -> None:
        raise Down

    monitor = AsyncDegradationMonitor([a, b], interval=0.02)
    assert (await monitor.refresh()).level is Level.NORMAL
    with pytest.raises(Down):
        await a.call(afail)
    async with monitor:
        assert monitor.running
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while monitor.level is not Level.EMERGENCY:
            assert loop.time() < deadline, "the level did not rise"
            await asyncio.sleep(0.005)
    assert not monitor.running and monitor.last is not None
    assert monitor.last.error_rate == 0.5


def test_choose_and_degrade_to_follow_the_level(make: Callable[..., Breaker]) -> None:
    """choose() and @degrade_to run the primary while normal and the fallback from the given level on."""
    a = make("a", minimum_calls=1, consecutive_failures=1)
    monitor = DegradationMonitor([a])
    calls: list[str] = []

    def cheap(user: str) -> str:
        calls.append("cheap")
        return f"cached:{user}"

    @monitor.degrade_to(cheap, at="critical")
    def full(user: str) -> str:
        calls.append("full")
        return f"fresh:{user}"

    monitor.refresh()
    assert monitor.choose(full, cheap) is full
    assert full("ann") == "fresh:ann" and full.__name__ == "full"
    outcomes(a, 0, 1)  # a opens: error rate 1.0 -> emergency
    assert monitor.refresh().level is Level.EMERGENCY
    assert monitor.choose(full, cheap) is cheap
    assert monitor.choose(full, cheap, at=Level.EMERGENCY) is cheap
    assert full("bob") == "cached:bob"
    assert calls == ["full", "cheap"]
    a.reset()
    monitor.refresh()
    assert full("cy") == "fresh:cy"
    with pytest.raises(ConfigError):
        monitor.choose(full, cheap, at="bad")


async def test_degrade_to_async(amake: Callable[..., dba.Breaker]) -> None:
    """@degrade_to on an async function awaits a sync or async fallback by the async monitor's level."""
    a = amake("a", minimum_calls=1, consecutive_failures=1)
    monitor = AsyncDegradationMonitor([a])

    async def cheap(x: int) -> int:
        return -x

    @monitor.degrade_to(cheap)
    async def full(x: int) -> int:
        return x

    @monitor.degrade_to(lambda x: x * 10)
    async def other(x: int) -> int:
        return x

    await monitor.refresh()
    assert (await full(2), await other(2)) == (2, 2)
    with pytest.raises(Down):
        await a.call(fail)
    assert (await monitor.refresh()).level is Level.EMERGENCY
    assert (await full(2), await other(2)) == (-2, 20)
