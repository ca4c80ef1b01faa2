"""Type-checked only (mypy --strict), never run: the public API keeps users' types."""

from __future__ import annotations

from datetime import timedelta
from typing import assert_type

import redis

import distbreaker
import distbreaker.asyncio as dba
from distbreaker import (
    Breaker,
    BreakerConfig,
    BreakerRegistry,
    CircuitOpenError,
    Snapshot,
    State,
    Transition,
    connect,
)
from distbreaker.failover import Failover as OldFailover
from distbreaker.failover import Provider as OldProvider
from distbreaker.retry import is_retryable as old_is_retryable
from distbreaker.toolkit.failover import Failover, Provider
from distbreaker.toolkit.retry import is_retryable


def sync_api(r: redis.Redis) -> None:
    b = Breaker("payments", r, BreakerConfig(minimum_calls=20, window=timedelta(minutes=1)))

    @b
    def charge(order_id: int, *, amount: float) -> str:
        return f"{order_id}:{amount}"

    assert_type(charge(1, amount=2.0), str)
    assert_type(b.call(charge, 1, amount=2.0), str)
    assert_type(b.call(charge, 1, amount=2.0, fallback=lambda exc: "queued"), str)
    assert_type(b.state, State)
    assert_type(b.snapshot(), Snapshot)
    assert_type(b.trip(for_=600, reason="INC-42"), Snapshot)
    with b:
        pass
    registry = BreakerRegistry(connect("redis://localhost:6379/0"))
    assert_type(registry.get("search"), Breaker)
    try:
        charge(1, amount=1.0)
    except CircuitOpenError as exc:
        assert_type(exc.service, str)
        assert_type(exc.retry_after, float | None)
    history = distbreaker.Admin(r).history("payments")
    assert_type(history, list[Transition])


async def async_api(r: object) -> None:
    b = dba.Breaker("payments", r)

    @b
    async def charge(order_id: int) -> int:
        return order_id

    assert_type(await charge(1), int)
    assert_type(await b.call(charge, 1), int)

    def sync_fn(x: str) -> str:
        return x

    assert_type(await b.call(sync_fn, "x"), str)
    async with b:
        pass
    assert_type(await b.snapshot(), Snapshot)
    registry = dba.BreakerRegistry(dba.connect("redis://localhost:6379/0"))
    assert_type(registry.get("search"), dba.Breaker)


def toolkit_paths(old: OldFailover[str], provider: OldProvider) -> None:
    # The older paths name the very classes of `distbreaker.toolkit` (mypy sees one type).
    assert_type(old, Failover[str])
    assert_type(provider, Provider)
    assert_type(old_is_retryable(ValueError()), bool)
    assert_type(is_retryable(ValueError()), bool)
