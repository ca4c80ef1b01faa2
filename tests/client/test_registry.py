"""BreakerRegistry (sync and asyncio): one breaker per key, overrides, LRU eviction."""

from __future__ import annotations

import pytest

import distbreaker.asyncio as dba
from distbreaker import BreakerConfig, BreakerRegistry, ConfigError, connect
from distbreaker._listener import sync_listener


def test_get_returns_one_breaker_per_key_with_overrides(redis_url: str, prefix: str) -> None:
    """get() makes a breaker once per key; per-service configs override the default."""
    special = BreakerConfig(minimum_calls=50)
    reg = BreakerRegistry(
        connect(redis_url, timeout=1), BreakerConfig(minimum_calls=5), prefix=prefix, configs={"payments": special}
    )
    assert reg.get("payments") is reg.get("payments")
    assert reg.get("payments").config is special
    assert reg.get("search").config.minimum_calls == 5
    reg.get("search").call(lambda: None)
    assert reg.get("search").snapshot().calls == 1
    assert reg.get("search").prefix == prefix
    reg.close()
    assert len(reg) == 0


def test_least_recently_used_breakers_are_evicted_and_closed(redis_url: str, prefix: str) -> None:
    """Past max_breakers the least recently used breaker leaves memory and stops listening."""
    reg = BreakerRegistry(connect(redis_url, timeout=1), prefix=prefix, max_breakers=2)
    a, b = reg.get("a"), reg.get("b")
    reg.get("a")  # a is now the most recent
    reg.get("c")
    assert reg.services() == ["a", "c"] and "b" not in reg
    assert b._listener is None and a._listener is not None
    b.call(lambda: None)  # an evicted breaker still works for calls in flight
    assert reg.get("b") is not b  # a new one, same shared state
    assert reg.get("b").snapshot().calls == 1
    reg.close()


def test_invalid_arguments() -> None:
    """max_breakers and service names are validated."""
    with pytest.raises(ConfigError, match="max_breakers"):
        BreakerRegistry(None, max_breakers=0)
    reg = BreakerRegistry(None, max_breakers=1)
    with pytest.raises(ValueError, match="service"):
        reg.get("bad name")


async def test_async_registry(redis_url: str, prefix: str) -> None:
    """The asyncio registry hands out async breakers and evicts/closes the same way."""
    client = dba.connect(redis_url, timeout=1)
    reg = dba.BreakerRegistry(client, prefix=prefix, max_breakers=1)
    a = reg.get("a")
    assert isinstance(a, dba.Breaker) and reg.get("a") is a
    await a.call(lambda: None)
    assert a._listener is not None
    reg.get("b")
    await reg.close()
    assert a._listener is None and len(reg) == 0
    await client.aclose()


def test_listener_routes_stay_bounded_by_max_breakers(redis_url: str, prefix: str) -> None:
    """5000 distinct services through a registry keeping 100: the listener keeps routes for the
    breakers in memory only (an evicted breaker's route goes with it), not one per service ever seen."""
    client = connect(redis_url, timeout=1)
    reg = BreakerRegistry(client, prefix=prefix, max_breakers=100)
    for i in range(5000):
        reg.get(f"svc-{i}")
    listener = sync_listener(client)
    assert len(reg) == 100
    assert len(listener.routes) == 100
    reg.close()
    assert len(listener.routes) == 0
