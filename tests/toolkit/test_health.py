"""Health checks: a probe closes a half-open breaker early through the breaker's normal call;
closed and forced breakers are never probed; the checker's thread/task stops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from _toolkit import wait_for

import distbreaker.asyncio as dba
from distbreaker import Breaker, CallTimeoutError, CircuitOpenError, ConfigError, State
from distbreaker.testing import FrozenClock
from distbreaker.toolkit.failover import Failover, Provider
from distbreaker.toolkit.health import AsyncHealthChecker, HealthChecker


class Down(Exception):
    pass


def fail() -> None:
    raise Down


def opened(make: Callable[..., Breaker], clock: FrozenClock, service: str = "svc") -> Breaker:
    """A breaker that one failure has opened for 30 s on `clock`."""
    b = make(service, clock=clock, consecutive_failures=1, open_duration=30)
    with pytest.raises(Down):
        b.call(fail)
    assert b.snapshot().state == "open"
    return b


def test_probe_closes_a_due_breaker_early(make: Callable[..., Breaker]) -> None:
    """Before `open_until` nothing is probed; after it, one successful probe (a lease, then a
    recorded success) closes the breaker without any real call."""
    clock = FrozenClock()
    b = opened(make, clock)
    probes: list[int] = []
    checker = HealthChecker(interval=60)
    checker.add(b, lambda: probes.append(1))
    result = checker.check()["svc"]
    assert (result.state, result.probed, result.ok) == (State.OPEN, False, None)
    assert probes == []
    clock.advance(31)
    result = checker.check()["svc"]
    assert result.probed and result.ok and result.error is None
    assert probes == [1]
    s = b.snapshot()
    assert s.state == "closed" and s.last_transition is not None and "probe" in s.last_transition.cause
    assert checker.results()["svc"] == result


def test_failed_probe_reopens_with_backoff(make: Callable[..., Breaker]) -> None:
    """A failing probe counts as a failed probe call: the breaker reopens, for longer."""
    clock = FrozenClock()
    b = opened(make, clock)
    checker = HealthChecker(interval=60)
    checker.add(b, fail)
    clock.advance(31)
    result = checker.check()["svc"]
    assert result.probed and result.ok is False and isinstance(result.error, Down)
    s = b.snapshot()
    assert s.state == "open" and s.open_count == 2


def test_closed_and_forced_breakers_are_not_probed(make: Callable[..., Breaker]) -> None:
    """Probes never dilute a closed breaker's window, nor override an operator's forced state."""
    probes: list[str] = []
    closed, forced, disabled = make("closed"), make("forced"), make("disabled")
    closed.call(lambda: None)
    forced.trip(reason="INC-1")
    disabled.disable()
    checker = HealthChecker(interval=60)
    for b in (closed, forced, disabled):
        checker.add(b, lambda name=b.service: probes.append(name))  # type: ignore[misc]
    results = checker.check()
    assert probes == []
    assert {k: r.state for k, r in results.items()} == {
        "closed": State.CLOSED,
        "forced": State.FORCED_OPEN,
        "disabled": State.DISABLED,
    }
    assert closed.snapshot().calls == 1


def test_probe_waits_for_a_free_lease(make: Callable[..., Breaker]) -> None:
    """With the only probe slot held by a real call, the health probe is not admitted."""
    clock = FrozenClock()
    b = opened(make, clock)
    clock.advance(31)
    probes: list[int] = []
    checker = HealthChecker(interval=60)
    checker.add(b, lambda: probes.append(1))
    with b:  # a real call holds the half-open lease
        result = checker.check()["svc"]
    assert not result.probed and isinstance(result.error, CircuitOpenError) and probes == []


def test_checker_thread_closes_the_breaker_and_stops(make: Callable[..., Breaker]) -> None:
    """Started, the checker thread probes every `interval` and closes the due breaker; `stop()`
    ends the thread."""
    clock = FrozenClock()
    b = opened(make, clock)
    clock.advance(31)
    probed = threading.Event()
    checker = HealthChecker(interval=0.02)
    checker.add(b, probed.set)
    with checker:
        assert checker.running
        wait_for(lambda: b.snapshot().state == "closed", what="the probe to close the breaker")
        assert probed.is_set()
    assert not checker.running
    assert not any(t.name == "distbreaker-health" for t in threading.enumerate())


def test_add_failover_and_remove(make: Callable[..., Breaker]) -> None:
    """`add_failover` adds the providers that have a probe; `remove` drops one."""
    a, b = make("a"), make("b")
    chain: Failover[int] = Failover([Provider(a, lambda: 1, probe=lambda: None), Provider(b, lambda: 2)])
    checker = HealthChecker(interval=1)
    checker.add_failover(chain)
    assert set(checker.check()) == {"a"}
    checker.remove("a")
    assert checker.check() == {} and checker.results() == {}


def test_invalid_arguments() -> None:
    """The interval is bounded; a probe must be callable."""
    with pytest.raises(ConfigError, match="interval"):
        HealthChecker(interval=0)
    with pytest.raises(ConfigError, match="interval"):
        AsyncHealthChecker(interval=7200)
    with pytest.raises(TypeError):
        HealthChecker().add(object(), "probe")  # type: ignore[arg-type]


async def test_async_checker_task_closes_the_breaker_and_stops(amake: Callable[..., dba.Breaker]) -> None:
    """The asyncio checker awaits an async probe (with its timeout) in a task, closes the due
    breaker, and its task ends on `stop()`."""
    clock = FrozenClock()
    b = amake(clock=clock, consecutive_failures=1, open_duration=30)

    async def afail() -> None:
        raise Down

    with pytest.raises(Down):
        await b.call(afail)
    probes: list[int] = []

    async def probe() -> None:
        await asyncio.sleep(0)
        probes.append(1)

    checker = AsyncHealthChecker(interval=0.02, timeout=1.0)
    checker.add(b, probe)
    loop = asyncio.get_running_loop()
    async with checker:
        assert checker.running
        deadline = loop.time() + 5
        while "svc" not in checker.results():  # the first round, while the breaker is not due yet
            assert loop.time() < deadline, "no round ran"
            await asyncio.sleep(0.005)
        assert not checker.results()["svc"].probed and probes == []
        clock.advance(31)
        deadline = loop.time() + 5
        while (await b.snapshot()).state != "closed":
            assert loop.time() < deadline, "the probe did not close the breaker"
            await asyncio.sleep(0.005)
    assert not checker.running
    assert probes == [1]


async def test_async_probe_timeout_counts_as_failed(amake: Callable[..., dba.Breaker]) -> None:
    """A hanging async probe is cancelled after the checker's timeout and reopens the breaker."""
    clock = FrozenClock()
    b = amake(clock=clock, consecutive_failures=1, open_duration=30)
    with pytest.raises(Down):
        await b.call(fail)
    clock.advance(31)
    checker = AsyncHealthChecker(interval=60, timeout=0.02)
    checker.add(b, lambda: asyncio.sleep(30))
    result = (await checker.check())["svc"]
    assert result.probed and result.ok is False
    assert (await b.snapshot()).open_count == 2


async def test_async_round_checks_breakers_concurrently(amake: Callable[..., dba.Breaker]) -> None:
    """The probes of one async round run concurrently: three probes that each wait until all
    three have started (deadlock if run one after the other) all succeed and close their breakers."""
    clock = FrozenClock()
    breakers = [amake(name, clock=clock, consecutive_failures=1, open_duration=30) for name in ("p1", "p2", "p3")]
    for b in breakers:
        with pytest.raises(Down):
            await b.call(fail)
    clock.advance(31)
    started = 0
    all_started = asyncio.Event()

    async def probe() -> None:
        nonlocal started
        started += 1
        if started == len(breakers):
            all_started.set()
        await all_started.wait()

    checker = AsyncHealthChecker(interval=60, timeout=5.0)
    for b in breakers:
        checker.add(b, probe)
    results = await checker.check()
    assert sorted(results) == ["p1", "p2", "p3"]
    assert all(r.probed and r.ok for r in results.values()), results
    assert [(await b.snapshot()).state for b in breakers] == [State.CLOSED] * 3


async def test_async_round_one_hanging_probe_does_not_hold_the_others(amake: Callable[..., dba.Breaker]) -> None:
    """A probe hanging past the timeout fails only its own breaker; the other closes in the same round."""
    clock = FrozenClock()
    hung, fine = amake("hung", clock=clock, consecutive_failures=1), amake("fine", clock=clock, consecutive_failures=1)
    for b in (hung, fine):
        with pytest.raises(Down):
            await b.call(fail)
    clock.advance(31)
    checker = AsyncHealthChecker(interval=60, timeout=0.05)
    checker.add(hung, lambda: asyncio.sleep(30))
    checker.add(fine, lambda: None)
    results = await checker.check()
    assert (results["hung"].ok, results["fine"].ok) == (False, True)
    assert (await hung.snapshot()).state is State.OPEN and (await fine.snapshot()).state is State.CLOSED


def test_sync_checker_timeout(make: Callable[..., Breaker]) -> None:
    """HealthChecker(timeout=) stops waiting for a hanging probe: it counts as failed and reopens."""
    clock = FrozenClock()
    b = make(clock=clock, consecutive_failures=1, open_duration=30)
    with pytest.raises(Down):
        b.call(fail)
    clock.advance(31)
    release = threading.Event()
    checker = HealthChecker(interval=60, timeout=0.05)
    checker.add(b, lambda: release.wait(30))
    try:
        result = checker.check()["svc"]
    finally:
        release.set()
    assert result.probed and result.ok is False and isinstance(result.error, CallTimeoutError)
    assert b.snapshot().open_count == 2
