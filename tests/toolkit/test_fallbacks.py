"""Fallbacks: on the decorator (`protect`), as a registry default, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import distbreaker.asyncio as dba
from distbreaker import Breaker, BreakerConfig, BreakerRegistry, CircuitOpenError, ConfigError


class Boom(Exception):
    pass


class Ignored(Exception):
    pass


def test_protect_fallback_gets_the_failure_then_the_rejection(make: Callable[..., Breaker]) -> None:
    """`@breaker.protect(fallback=...)` answers with the fallback for the call's own failure and,
    once the breaker is open, for the `CircuitOpenError` (without running the function)."""
    b = make(consecutive_failures=2)
    seen: list[BaseException] = []
    ran: list[int] = []

    def fallback(exc: BaseException) -> str:
        seen.append(exc)
        return "cached"

    @b.protect(fallback=fallback)
    def fetch(n: int) -> str:
        """Fetch."""
        ran.append(n)
        raise Boom(n)

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch."
    assert [fetch(1), fetch(2), fetch(3)] == ["cached"] * 3
    assert ran == [1, 2]
    assert [type(e) for e in seen] == [Boom, Boom, CircuitOpenError]
    assert b.snapshot().state == "open"


def test_protect_passes_the_functions_own_keywords(make: Callable[..., Breaker]) -> None:
    """A decorated function may take keyword arguments named like the breaker's (`fallback`)."""
    b = make()

    @b.protect(fallback=lambda exc: "fb")
    def echo(*, fallback: str) -> str:
        return fallback

    @b
    def echo_plain(*, fallback: str) -> str:
        return fallback

    assert echo(fallback="mine") == "mine"
    assert echo_plain(fallback="mine") == "mine"
    assert b.snapshot().calls == 2


def test_protect_without_fallback_and_plain_decorator_still_raise(make: Callable[..., Breaker]) -> None:
    """`@breaker` and `@breaker.protect()` raise the failure and the rejection as before."""
    b = make(consecutive_failures=1)

    @b.protect()
    def bad() -> None:
        raise Boom

    @b
    def good() -> int:
        return 1

    with pytest.raises(Boom):
        bad()
    with pytest.raises(CircuitOpenError):
        good()


def test_fallback_is_not_used_for_ignored_exceptions(make: Callable[..., Breaker]) -> None:
    """An exception that does not count as a failure propagates; the fallback is for failures."""
    b = make(ignored_exceptions=(Ignored,))

    @b.protect(fallback=lambda exc: "fb")
    def f() -> None:
        raise Ignored

    with pytest.raises(Ignored):
        f()


def test_sync_protect_refuses_a_coroutine_function(make: Callable[..., Breaker]) -> None:
    """The sync breaker's `protect` refuses an ``async def``, like ``@breaker``."""
    b = make()

    async def f() -> None:
        pass

    with pytest.raises(TypeError, match="coroutine function"):
        b.protect(fallback=lambda exc: None)(f)


def test_registry_default_fallback(client: Any, prefix: str) -> None:
    """A registry's `fallback` answers `call` and `protect` of every service unless the call
    gives its own."""
    registry = BreakerRegistry(
        client,
        BreakerConfig(consecutive_failures=1),
        prefix=prefix,
        listen=False,
        fallback=lambda exc: f"default:{type(exc).__name__}",
    )

    def fail() -> None:
        raise Boom

    try:
        assert registry.call("a", fail) == "default:Boom"
        assert registry.call("a", fail) == "default:CircuitOpenError"
        assert registry.call("a", fail, fallback=lambda exc: "own") == "own"

        @registry.protect("b")
        def b_fail(x: int) -> int:
            raise Boom

        @registry.protect("c", fallback=lambda exc: -1)
        def c_fail(x: int) -> int:
            raise Boom

        assert b_fail(1) == "default:Boom"
        assert c_fail(1) == -1
        assert registry.get("b").snapshot().state == "open"  # the failure was counted (and tripped it)
        assert registry.call("d", lambda: 5) == 5
    finally:
        registry.close()


def test_registry_protect_validates_eagerly(client: Any, prefix: str) -> None:
    """`registry.protect` checks the service name and the function kind when decorating."""
    registry = BreakerRegistry(client, prefix=prefix, listen=False)

    async def coro() -> None:
        pass

    with pytest.raises(ConfigError):
        registry.protect("no spaces")
    with pytest.raises(TypeError):
        registry.protect("x")(coro)  # type: ignore[arg-type]
    assert len(registry) == 0


async def test_async_protect_with_an_async_fallback(amake: Callable[..., dba.Breaker]) -> None:
    """The asyncio `protect` awaits an async fallback, for failures and for rejections."""
    b = amake(consecutive_failures=1)
    seen: list[type[BaseException]] = []

    async def fallback(exc: BaseException) -> str:
        await asyncio.sleep(0)
        seen.append(type(exc))
        return "fb"

    @b.protect(fallback=fallback)
    async def fetch() -> str:
        raise Boom

    assert [await fetch(), await fetch()] == ["fb", "fb"]
    assert seen == [Boom, CircuitOpenError]
    assert not b.allows()


async def test_async_protect_sync_fallback_and_plain_decorator(amake: Callable[..., dba.Breaker]) -> None:
    """A sync fallback works with the asyncio decorator; plain ``@breaker`` still works and
    still refuses a sync function."""
    b = amake()

    @b.protect(fallback=lambda exc: 0)
    async def bad() -> int:
        raise Boom

    @b
    async def good(x: int, *, timeout: int) -> int:
        return x + timeout

    assert await bad() == 0
    assert await good(1, timeout=2) == 3  # the function's own `timeout` keyword is its own
    with pytest.raises(TypeError):
        b.protect()(lambda: None)  # type: ignore[arg-type,return-value]
    assert (await b.snapshot()).calls == 2


async def test_async_registry_default_fallback(aclient: Any, prefix: str) -> None:
    """The asyncio registry's default fallback (here async) answers `call` and `protect`."""

    async def default(exc: BaseException) -> str:
        return f"default:{type(exc).__name__}"

    registry = dba.BreakerRegistry(
        aclient, BreakerConfig(consecutive_failures=1), prefix=prefix, listen=False, fallback=default
    )

    async def fail() -> None:
        raise Boom

    @registry.protect("b")
    async def b_fail() -> str:
        raise Boom

    try:
        assert await registry.call("a", fail) == "default:Boom"
        assert await registry.call("a", fail) == "default:CircuitOpenError"
        assert await registry.call("a", fail, fallback=lambda exc: "own") == "own"
        assert await b_fail() == "default:Boom"
        assert await b_fail() == "default:CircuitOpenError"
    finally:
        await registry.close()


def test_allows_is_local(make: Callable[..., Breaker]) -> None:
    """`allows()` is True while closed, False once the cache knows the breaker is open."""
    b = make(consecutive_failures=1)
    assert b.allows()  # nothing cached yet: a call would ask Redis
    with pytest.raises(Boom):
        b.call(lambda: (_ for _ in ()).throw(Boom()))
    assert not b.allows()
    b.reset()
    assert b.allows()
