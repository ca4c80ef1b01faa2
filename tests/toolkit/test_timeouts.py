"""Call timeouts (asyncio): the call is cancelled, and counts as a failure and, by its duration,
as a slow call; sync breakers detect slow calls only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

import distbreaker.asyncio as dba
from distbreaker import Breaker, CallTimeoutError, CircuitOpenError, ConfigError
from distbreaker.testing import FrozenClock


async def test_timeout_cancels_the_call_and_counts_failure_and_slow(amake: Callable[..., dba.Breaker]) -> None:
    """A call past `timeout` is cancelled, raises CallTimeoutError, and is recorded as one
    failure that is also slow (timeout >= slow_call_duration)."""
    b = amake(slow_call_duration=0.05, minimum_calls=100)
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(CallTimeoutError) as info:
        await b.call(hang, timeout=0.05)
    assert cancelled.is_set()
    assert isinstance(info.value, TimeoutError)
    assert (info.value.service, info.value.timeout) == ("svc", 0.05)
    s = await b.snapshot()
    assert (s.calls, s.failures, s.slow_calls) == (1, 1, 1)


async def test_timeout_below_slow_call_duration_is_a_failure_only(amake: Callable[..., dba.Breaker]) -> None:
    """With a frozen clock the recorded duration is exactly `timeout`: slow only when it
    reaches `slow_call_duration`."""
    clock = FrozenClock()
    b = amake(clock=clock, slow_call_duration=0.5, minimum_calls=100)
    await b.call(lambda: asyncio.sleep(0), timeout=0.01)  # in time: a success, not slow
    with pytest.raises(CallTimeoutError):
        await b.call(asyncio.sleep, 30, timeout=0.02)  # 0.02 < 0.5: failure, not slow
    with pytest.raises(CallTimeoutError):
        await b.call(asyncio.sleep, 30, timeout=timedelta(seconds=0.5) / 20)
    s = await b.snapshot()
    assert (s.calls, s.failures, s.slow_calls) == (3, 2, 0)

    slow = amake("slow", clock=clock, slow_call_duration=0.02, minimum_calls=100)
    with pytest.raises(CallTimeoutError):
        await slow.call(asyncio.sleep, 30, timeout=0.02)  # 0.02 >= 0.02: failure and slow
    s = await slow.snapshot()
    assert (s.calls, s.failures, s.slow_calls) == (1, 1, 1)


async def test_timeout_is_a_failure_whatever_failure_exceptions_say(amake: Callable[..., dba.Breaker]) -> None:
    """A timeout counts as a failure even when `failure_exceptions` would not cover it, and
    trips the breaker like any failure."""
    b = amake(failure_exceptions=(KeyError,), consecutive_failures=2)
    for _ in range(2):
        with pytest.raises(CallTimeoutError):
            await b.call(asyncio.sleep, 30, timeout=0.01)
    with pytest.raises(CircuitOpenError):
        await b.call(asyncio.sleep, 0, timeout=0.01)
    assert (await b.snapshot()).state == "open"


async def test_a_timeout_raised_by_the_function_is_its_own(amake: Callable[..., dba.Breaker]) -> None:
    """A TimeoutError that the function raises itself is not the breaker's timeout: it
    propagates unchanged and is classified like any exception."""
    b = amake(failure_exceptions=(KeyError,), minimum_calls=100)

    async def own() -> None:
        raise TimeoutError("upstream said so")

    with pytest.raises(TimeoutError, match="upstream") as info:
        await b.call(own, timeout=5)
    assert not isinstance(info.value, CallTimeoutError)
    s = await b.snapshot()
    assert (s.calls, s.failures) == (1, 0)  # not a failure by this config


async def test_protect_timeout_with_fallback(amake: Callable[..., dba.Breaker]) -> None:
    """`@breaker.protect(timeout=..., fallback=...)`: the fallback gets the CallTimeoutError;
    calls in time are unaffected."""
    b = amake(minimum_calls=100)
    seen: list[BaseException] = []

    def fallback(exc: BaseException) -> str:
        seen.append(exc)
        return "late"

    @b.protect(timeout=0.05, fallback=fallback)
    async def work(delay: float) -> str:
        await asyncio.sleep(delay)
        return "done"

    assert await work(0) == "done"
    assert await work(30) == "late"
    assert isinstance(seen[0], CallTimeoutError)
    s = await b.snapshot()
    assert (s.calls, s.failures) == (2, 1)


async def test_sync_function_is_not_interrupted(amake: Callable[..., dba.Breaker]) -> None:
    """A sync function cannot be cancelled: its result is returned even past the timeout."""
    b = amake()
    assert await b.call(lambda: 7, timeout=0.001) == 7


async def test_invalid_timeouts(amake: Callable[..., dba.Breaker]) -> None:
    """A timeout must be a positive number of seconds or a timedelta."""
    b = amake()
    for bad in (0, -1, "1s", True):
        with pytest.raises(ConfigError, match="timeout"):
            await b.call(asyncio.sleep, 0, timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="timeout"):
            b.protect(timeout=bad)  # type: ignore[arg-type]


def test_sync_breaker_detects_slow_calls(make: Callable[..., Breaker]) -> None:
    """The sync breaker has no call timeout: a slow call is detected by `slow_call_duration`
    (counted as slow, and trips by `slow_call_rate_threshold`), not interrupted."""
    clock = FrozenClock()
    b = make(clock=clock, slow_call_duration=1.0, slow_call_rate_threshold=0.5, minimum_calls=2)

    def slow() -> str:
        clock.advance(2.0)  # the call takes 2 s on the breaker's clock
        return "ok"

    assert b.call(slow) == "ok"
    assert b.call(slow) == "ok"
    s = b.snapshot()
    assert s.state == "open" and s.last_transition is not None and "slow" in s.last_transition.cause
