"""The sync Breaker: a thin shell over the sans-IO core; it only does I/O."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from redis.exceptions import RedisError

from . import _ops
from ._config import BreakerConfig
from ._core import (
    ALLOW,
    DEFAULT_PREFIX,
    FAILURE,
    IGNORED,
    REJECT,
    SUCCESS,
    View,
    classify,
    decode_snapshot,
    keys_for,
    text,
    validate_prefix,
    validate_service,
)
from ._model import Snapshot, State
from ._scripts import SCRIPTS, LuaScript, run
from .errors import CircuitOpenError, RedisUnavailableError, translate

__all__ = ["Breaker"]

P = ParamSpec("P")
T = TypeVar("T")
Permit = tuple[int, str] | None  # (generation, lease id); None = admitted without Redis

log = logging.getLogger("distbreaker")

_RECORD, _ACQUIRE, _CONTROL, _READ = (SCRIPTS[n] for n in ("record", "acquire", "control", "read"))
_ADMITTED = (State.CLOSED, State.DISABLED)
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 2.0


class Breaker:
    """A circuit breaker whose state is shared, through Redis, by every process that uses it.

    Use it as a decorator, a context manager, or with `call`::

        payments = Breaker("payments", connect("redis://localhost:6379/0"))

        @payments
        def charge(order): ...

        with payments:
            ...

        payments.call(charge, order, fallback=lambda exc: queued(order))

    Args:
        service: the breaker's name, 1-128 characters of ``[A-Za-z0-9._:-]``.
        redis: a `redis.Redis` client; `distbreaker.connect` makes one with timeouts that
            fit the budget (`redis_timeout`).
        config: thresholds and timings (`BreakerConfig()` by default).
        prefix: key prefix in Redis. Default ``"distbreaker"``.
        clock: for tests only: a callable returning seconds; it replaces both the local
            monotonic clock and the Redis server clock.
    """

    def __init__(
        self,
        service: str,
        redis: Any,
        config: BreakerConfig | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.service = validate_service(service)
        self.prefix = validate_prefix(prefix)
        self.config = config if config is not None else BreakerConfig()
        if not isinstance(self.config, BreakerConfig):
            raise TypeError(f"config must be a BreakerConfig, got {type(config).__name__}")
        self.redis = redis
        self._keys = keys_for(prefix, service)
        self._key_list = (self._keys.state, self._keys.events)
        self._test_clock = clock
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._fingerprint = self.config.fingerprint
        self._config_args = list(self.config._lua)
        self._config_sent = False  # the first call stores our config; later ones send only its hash
        self._view = View(self.config.max_staleness)  # type: ignore[arg-type]
        self._local = threading.local()
        self._slow = self.config.slow_call_duration
        self._down_until = 0.0
        self._backoff = 0.0
        _ops.check_client_budget(redis, self.config)

    def __repr__(self) -> str:
        return f"Breaker({self.service!r}, state={self._view.state or 'unknown'})"

    # -- Redis -------------------------------------------------------------------------------
    def _eval(self, script: LuaScript, extra: list[str]) -> Any:
        """Run `script` on this breaker's keys; raises redis errors untranslated."""
        now = "" if self._test_clock is None else str(round(self._test_clock() * 1000))
        args = [now, self._fingerprint, *extra]
        if not self._config_sent:
            reply = run(self.redis, script, self._key_list, args + self._config_args)
            self._config_sent = True
            return reply
        return run(self.redis, script, self._key_list, args, self._config_args)

    def _failed(self, exc: RedisError, now: float) -> None:
        """Handle a Redis error on the call path: back off on outages, raise anything else."""
        err = translate(exc, self.service)
        if not isinstance(err, RedisUnavailableError):
            raise err from exc
        if not self._backoff:
            log.warning("breaker %r: %s; on_redis_error=%r until Redis answers",
                        self.service, err, self.config.on_redis_error)
        self._backoff = min(max(self._backoff * 2, _BACKOFF_MIN), _BACKOFF_MAX)
        self._down_until = now + self._backoff
        if self.config.on_redis_error == "reject":
            self._view.forget()  # a cached "closed" must not keep admitting calls during the outage

    def _recovered(self) -> None:
        if self._backoff:
            log.warning("breaker %r: Redis answers again", self.service)
            self._backoff = 0.0
            self._down_until = 0.0

    def _degraded(self, now: float) -> Permit:
        if self.config.on_redis_error == "reject":
            raise CircuitOpenError(self.service, "unavailable", max(0.0, self._down_until - now),
                                   "Redis unavailable and on_redis_error='reject'")
        return None

    # -- The call path -----------------------------------------------------------------------
    def _admit(self) -> Permit:
        now = self._clock()
        view = self._view
        decision = view.decide(now)
        if decision == ALLOW:
            return (view.generation, "")
        if decision == REJECT:
            raise view.rejection(self.service, now)
        if now < self._down_until:
            return self._degraded(now)
        try:
            reply = self._eval(_ACQUIRE, [])
        except RedisError as exc:
            self._failed(exc, now)
            return self._degraded(now)
        self._recovered()
        now = self._clock()
        state = view.update(reply, now)
        lease = reply[14]
        if lease or state in _ADMITTED:
            return (view.generation, text(lease) if lease else "")
        raise view.rejection(self.service, now, int(reply[15]), int(reply[2]))

    def _record(self, permit: Permit, outcome: int, duration: float) -> None:
        if permit is None:
            return
        gen, lease = permit
        if outcome == IGNORED:
            if not lease:
                return
            counts = ["0", "0", "0"]
        else:
            slow = "1" if self._slow is not None and duration >= self._slow else "0"
            counts = ["1", "0", slow] if outcome == SUCCESS else ["0", "1", slow]
        now = self._clock()
        if now < self._down_until:
            return
        try:
            reply = self._eval(_RECORD, [str(gen), *counts, lease])
        except RedisError as exc:
            self._failed(exc, now)
            return
        self._recovered()
        self._view.update(reply, self._clock())

    def call(self, fn: Callable[..., T], /, *args: Any, fallback: Callable[[BaseException], T] | None = None,
             **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker.

        Args:
            fn: the protected function.
            fallback: called with the exception when the breaker rejects the call
                (`CircuitOpenError`) or the call fails (an exception that counts as a
                failure); its result is returned instead of raising.

        Raises:
            CircuitOpenError: the breaker is open and no fallback was given.
        """
        try:
            permit = self._admit()
        except CircuitOpenError as exc:
            if fallback is None:
                raise
            return fallback(exc)
        clock = self._clock
        start = clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            outcome = classify(self.config, exc)
            self._record(permit, outcome, clock() - start)
            if fallback is not None and outcome == FAILURE:
                return fallback(exc)
            raise
        self._record(permit, SUCCESS, clock() - start)
        return result

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate `fn` so that every call goes through the breaker."""
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn.__qualname__} is a coroutine function: decorate it with "
                            "distbreaker.asyncio.Breaker, not distbreaker.Breaker")

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def __enter__(self) -> Breaker:
        permit = self._admit()
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append((permit, self._clock()))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        permit, start = self._local.stack.pop()
        self._record(permit, classify(self.config, exc), self._clock() - start)

    # -- State and operator actions ----------------------------------------------------------
    def _control(self, op: str, until_ms: int, reason: str, actor: str | None) -> Snapshot:
        reason, actor = _ops.check_reason(reason), _ops.actor_or_default(actor)
        try:
            reply = self._eval(_CONTROL, [op, str(until_ms), reason, actor])
        except RedisError as exc:
            raise translate(exc, self.service) from exc
        self._view.update(reply, self._clock())
        return decode_snapshot(self.service, reply)

    def snapshot(self) -> Snapshot:
        """Read the shared state from Redis (one round trip)."""
        try:
            reply = self._eval(_READ, ["1"])
        except RedisError as exc:
            raise translate(exc, self.service) from exc
        self._view.update(reply, self._clock())
        return decode_snapshot(self.service, reply)

    @property
    def state(self) -> State:
        """The current state: from the local cache while fresh, else read from Redis."""
        view = self._view
        if view.state is not None and self._clock() - view.fetched_at <= view.max_staleness:
            return view.state
        return self.snapshot().state

    def _until(self, for_: float | None) -> int:
        if for_ is None:
            return 0
        if self._test_clock is not None:
            return round((self._test_clock() + for_) * 1000)
        return _ops.server_ms(self.redis) + round(for_ * 1000)

    def trip(self, *, for_: float | Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force the breaker open fleet-wide, for `for_` seconds (None = until reset)."""
        return self._control("trip", self._until(_ops.duration(for_)), reason, actor)

    def disable(self, *, for_: float | Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force the breaker closed fleet-wide (outcomes still counted), for `for_` seconds."""
        return self._control("disable", self._until(_ops.duration(for_)), reason, actor)

    def reset(self, *, reason: str = "", actor: str | None = None) -> Snapshot:
        """Return the breaker to closed with an empty window, clearing any forced state."""
        return self._control("reset", 0, reason, actor)
