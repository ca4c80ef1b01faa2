"""Test helpers: unit-test code that uses a breaker, without a Redis server.

`make_breaker` builds a real `distbreaker.Breaker` (the same Lua scripts, the same state
machine) on an in-process fakeredis server, driven by a `FrozenClock` that only moves when the
test moves it:

```python
from distbreaker.testing import FrozenClock, force_open, make_breaker

def test_checkout_queues_when_payments_is_open():
    clock = FrozenClock()
    payments = make_breaker("payments", clock=clock)
    force_open(payments)
    assert checkout(order, breaker=payments) == "queued"
```

Needs the ``testing`` extra (``pip install -e '.[testing]'`` from a checkout, which installs
``fakeredis[lua]``). fakeredis is imported only when a fake client is made. A pytest plugin
built on these helpers provides the fixtures ``breaker_clock`` and ``fake_breaker``
(`distbreaker.pytest_plugin`).
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ._breaker import Breaker
from ._config import BreakerConfig
from ._core import DEFAULT_PREFIX
from ._model import Snapshot

if TYPE_CHECKING:
    import redis

__all__ = [
    "EPOCH",
    "FakeBreakerFactory",
    "FrozenClock",
    "fake_redis",
    "force_closed",
    "force_open",
    "make_breaker",
    "reset",
]

EPOCH = 1_700_000_000.0
"""Where a `FrozenClock` starts: 2023-11-14 22:13:20 UTC, in seconds since the epoch."""

TEST_ACTOR = "test"
"""The actor that `force_open`, `force_closed` and `reset` record."""

# No pub/sub listener thread: it would apply other breakers' transitions at moments the test
# does not control. Breakers made here learn of each other's changes at their next round trip
# (or after max_staleness on the frozen clock), which is deterministic.
_OPTIONS: dict[str, Any] = {"listen": False} if "listen" in inspect.signature(Breaker).parameters else {}


def _seconds(value: float | timedelta, name: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be seconds (float) or a timedelta, got {value!r}")
    return float(value)


class FrozenClock:
    """A clock that stands still until the test moves it.

    Call it to read the time in seconds. Pass it to a breaker as ``clock=`` and it serves as
    both the worker's local clock and the Redis server's clock, so open durations, probe
    leases, window buckets and ``max_staleness`` all follow it. The scripts work in whole
    milliseconds: move it by at least 0.001 s for a change to show.

    Args:
        start: the initial time in seconds since the epoch. Default `EPOCH`.
    """

    __slots__ = ("_now",)

    def __init__(self, start: float = EPOCH) -> None:
        self._now = _seconds(start, "start")

    def __call__(self) -> float:
        """Return the current time in seconds."""
        return self._now

    def __repr__(self) -> str:
        return f"FrozenClock({self._now!r})"

    def advance(self, seconds: float | timedelta) -> float:
        """Move the clock forward by `seconds` (a float or a `timedelta`).

        Returns:
            The new time.

        Raises:
            ValueError: `seconds` is negative (use `set` to go back).
        """
        step = _seconds(seconds, "seconds")
        if step < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r} (use set() to go back)")
        self._now += step
        return self._now

    def set(self, seconds: float) -> None:
        """Set the time to `seconds` since the epoch (backwards too)."""
        self._now = _seconds(seconds, "seconds")


def fake_redis(*, socket_timeout: float = 0.05) -> redis.Redis:
    """Return a client of a new, empty in-process fakeredis server (Lua enabled).

    Replies are bytes (``decode_responses=False``), as with `distbreaker.connect`. Several
    breakers built on the same client share their state, like workers sharing one Redis.

    Args:
        socket_timeout: reported to the breaker as the client's timeout, seconds (fakeredis
            does no network I/O). The default matches the default ``redis_timeout``, so the
            breaker does not warn about a long timeout.

    Raises:
        ImportError: fakeredis is not installed (``pip install 'fakeredis[lua]>=2.40'``, the testing extra).
    """
    try:
        import fakeredis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "distbreaker.testing needs fakeredis with Lua: pip install 'fakeredis[lua]>=2.40' (the testing extra)"
        ) from exc
    return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=False, socket_timeout=socket_timeout)


def make_breaker(
    service: str = "test",
    config: BreakerConfig | None = None,
    *,
    redis: Any = None,
    clock: FrozenClock | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> Breaker:
    """Return a `distbreaker.Breaker` on a fake Redis, driven by a frozen clock.

    Pass the `FrozenClock` you want to move (``clock.advance(30)``) and, to make several
    breakers that share state like the workers of a fleet, the same `redis` client. The
    breaker does not listen to pub/sub: a change made through another breaker reaches it at
    its next round trip to Redis, or once its cached state is older than ``max_staleness``
    on the frozen clock, never at a moment the test does not control.

    Args:
        service: the breaker's service name. Default ``"test"``.
        config: its `BreakerConfig` (the defaults when None).
        redis: the client to use; a new `fake_redis` when None. A real ``redis.Redis``
            works too.
        clock: the clock of the breaker and of the scripts; a new `FrozenClock` when None
            (time then never moves for this breaker).
        prefix: key prefix. Default ``"distbreaker"``.
    """
    if config is None:
        config = BreakerConfig()
    if redis is None:
        redis = fake_redis(socket_timeout=_seconds(config.redis_timeout, "redis_timeout"))
    return Breaker(
        service, redis, config, prefix=prefix, clock=clock if clock is not None else FrozenClock(), **_OPTIONS
    )


def force_open(breaker: Breaker, *, for_: float | timedelta | None = None, reason: str = "forced by test") -> Snapshot:
    """Force `breaker` open (``forced_open``): every call is rejected with `CircuitOpenError`.

    Same as ``breaker.trip(...)`` with the actor ``"test"``; it reaches Redis, so every
    breaker sharing the client sees it.

    Args:
        breaker: the breaker.
        for_: seconds (or a `timedelta`) on the breaker's clock, then it returns to closed;
            None = until `reset`.
        reason: recorded with the state and carried by the `CircuitOpenError`.

    Returns:
        The new snapshot.
    """
    return breaker.trip(for_=for_, reason=reason, actor=TEST_ACTOR)


def force_closed(
    breaker: Breaker, *, for_: float | timedelta | None = None, reason: str = "forced by test"
) -> Snapshot:
    """Force `breaker` closed (``disabled``): every call runs, outcomes are counted, it never trips.

    Same as ``breaker.disable(...)`` with the actor ``"test"``.

    Args:
        breaker: the breaker.
        for_: seconds (or a `timedelta`) on the breaker's clock, then it returns to automatic
            (closed, window kept); None = until `reset`.
        reason: recorded with the state.

    Returns:
        The new snapshot.
    """
    return breaker.disable(for_=for_, reason=reason, actor=TEST_ACTOR)


def reset(breaker: Breaker, *, reason: str = "reset by test") -> Snapshot:
    """Return `breaker` to closed with an empty window, clearing any forced state.

    Same as ``breaker.reset(...)`` with the actor ``"test"``.

    Returns:
        The new snapshot.
    """
    return breaker.reset(reason=reason, actor=TEST_ACTOR)


class FakeBreakerFactory:
    """Makes breakers that share one fake Redis and one `FrozenClock`: what the
    ``fake_breaker`` fixture is.

    Calling it returns a new `Breaker`: ``fake_breaker("payments", minimum_calls=4)``.
    Two breakers of the same service behave like two workers of a fleet.

    Args:
        clock: the clock of every breaker it makes.
        redis: the shared client; a new `fake_redis` when None.
        prefix: key prefix. Default ``"distbreaker"``.

    Attributes:
        clock: the shared `FrozenClock`.
        redis: the shared client (for `distbreaker.Admin`, or to look at the keys).
        prefix: the key prefix.
    """

    def __init__(self, clock: FrozenClock, redis: Any = None, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.clock = clock
        self.redis = redis if redis is not None else fake_redis()
        self.prefix = prefix

    def __call__(self, service: str = "svc", **config_fields: Any) -> Breaker:
        """Return a breaker for `service` with ``BreakerConfig(**config_fields)``."""
        return make_breaker(
            service, BreakerConfig(**config_fields), redis=self.redis, clock=self.clock, prefix=self.prefix
        )
