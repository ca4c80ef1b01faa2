"""Retries compose with the breaker from outside: tenacity and stamina retry failures (each
attempt counted by the breaker) and stop at once on a CircuitOpenError."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import stamina
import tenacity

import distbreaker.asyncio as dba
from distbreaker import Breaker, CallTimeoutError, CircuitOpenError
from distbreaker.toolkit.retry import is_retryable, retry_if_not_open, retryable


class Flaky(Exception):
    pass


@pytest.fixture(autouse=True)
def no_stamina_waits() -> Iterator[None]:
    """stamina's test mode: no backoff sleeps, attempts as configured."""
    stamina.set_testing(True, attempts=100, cap=True)
    yield
    stamina.set_testing(False)


def flaky(failures: int) -> tuple[Callable[[], str], list[int]]:
    """A function that fails `failures` times, then succeeds; and the list of its attempts."""
    attempts: list[int] = []

    def fn() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) <= failures:
            raise Flaky(len(attempts))
        return "ok"

    return fn, attempts


def test_predicates() -> None:
    """`is_retryable` and `retryable(...)` never retry a CircuitOpenError."""
    opened = CircuitOpenError("svc", "open", 1.0, "")
    assert is_retryable(Flaky()) and is_retryable(CallTimeoutError("svc", 1.0))
    assert not is_retryable(opened) and not is_retryable(KeyboardInterrupt())
    anything = retryable(Exception)
    assert anything(Flaky()) and not anything(opened)
    assert not retryable(KeyError)(Flaky())
    with pytest.raises(TypeError):
        retryable()
    with pytest.raises(TypeError):
        retryable("Flaky")  # type: ignore[arg-type]


def test_tenacity_retries_outside_the_breaker(make: Callable[..., Breaker]) -> None:
    """A flaky function retried by tenacity around `breaker.call`: every attempt is counted."""
    b = make(minimum_calls=100)
    fn, attempts = flaky(2)

    @tenacity.retry(
        retry=retry_if_not_open, stop=tenacity.stop_after_attempt(5), wait=tenacity.wait_none(), reraise=True
    )
    def charge() -> str:
        return b.call(fn)

    assert charge() == "ok"
    assert attempts == [1, 2, 3]
    s = b.snapshot()
    assert (s.calls, s.failures) == (3, 2)


def test_tenacity_stops_at_once_on_an_open_breaker(make: Callable[..., Breaker]) -> None:
    """When the breaker opens between attempts, the next attempt's CircuitOpenError ends the
    retry at once (combined with `&` with another tenacity strategy)."""
    b = make(consecutive_failures=2)
    fn, attempts = flaky(100)
    tries: list[int] = []

    @tenacity.retry(
        retry=tenacity.retry_if_exception_type(Exception) & retry_if_not_open,
        stop=tenacity.stop_after_attempt(10),
        wait=tenacity.wait_none(),
        reraise=True,
        before=lambda state: tries.append(state.attempt_number),
    )
    def charge() -> str:
        return b.call(fn)

    with pytest.raises(CircuitOpenError):
        charge()
    assert attempts == [1, 2]  # the function ran twice, then the breaker opened
    assert tries == [1, 2, 3]  # the third attempt was rejected, and there was no fourth
    with pytest.raises(CircuitOpenError):
        charge()
    assert tries == [1, 2, 3, 1]  # an open breaker: one attempt, no retry


def test_stamina_retries_outside_the_breaker_and_stops_on_open(make: Callable[..., Breaker]) -> None:
    """stamina with `on=is_retryable`: failures are retried and counted; an open breaker ends
    the retries at once."""
    b = make(consecutive_failures=3)
    fn, attempts = flaky(2)

    @stamina.retry(on=is_retryable, attempts=10)
    def charge() -> str:
        return b.call(fn)

    assert charge() == "ok"
    assert attempts == [1, 2, 3]

    down, down_attempts = flaky(100)
    tries: list[int] = []

    @stamina.retry(on=is_retryable, attempts=10)
    def charge_down() -> str:
        tries.append(1)
        return b.call(down)

    with pytest.raises(CircuitOpenError):
        charge_down()
    assert len(down_attempts) == 3 and len(tries) == 4
    s = b.snapshot()
    assert s.state == "open"


async def test_async_tenacity_and_stamina(amake: Callable[..., dba.Breaker]) -> None:
    """The same predicates work for tenacity's AsyncRetrying and stamina's async retries."""
    b = amake(consecutive_failures=4)
    fn, attempts = flaky(100)

    async def attempt() -> str:
        return await b.call(fn)

    tries = 0
    with pytest.raises(CircuitOpenError):
        async for try_ in tenacity.AsyncRetrying(
            retry=retry_if_not_open, stop=tenacity.stop_after_attempt(10), wait=tenacity.wait_none(), reraise=True
        ):
            with try_:
                tries += 1
                await attempt()
    assert (len(attempts), tries) == (4, 5)

    await b.reset()
    fn2, attempts2 = flaky(2)

    @stamina.retry(on=retryable(Exception), attempts=10)
    async def charge() -> str:
        return await b.call(fn2)

    assert await charge() == "ok"
    assert attempts2 == [1, 2, 3]
