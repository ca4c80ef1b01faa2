"""BreakerConfig: frozen, validated on construction, durations normalised to float seconds."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Literal

from .errors import ConfigError

__all__ = ["BreakerConfig", "Duration", "seconds"]

Duration = float | timedelta

_DURATIONS = ("window", "slow_call_duration", "open_duration", "max_open_duration", "probe_timeout",
              "redis_timeout", "max_staleness", "idle_ttl")


def seconds(value: Duration | None, name: str) -> float | None:
    """Normalise a duration (seconds or timedelta) to float seconds; `name` for errors."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be seconds (float) or a timedelta, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """How a breaker decides. Every duration is seconds (float) or a `timedelta`.

    Args:
        failure_rate_threshold: open when failures / calls >= this (0 < x <= 1). Default 0.5.
        minimum_calls: calls needed in the window before rates count. Default 10.
        window: length of the sliding time window, seconds. Default 60.
        buckets: the window is kept as this many time buckets. Default 10.
        consecutive_failures: also open after this many failures in a row; None = off.
        slow_call_duration: a call that takes at least this long is slow; None = off.
        slow_call_rate_threshold: open when slow calls / calls >= this. Default 1.0.
        open_duration: how long the first open lasts, seconds. Default 30.
        backoff_multiplier: each reopen lasts this many times longer (>= 1). Default 2.0.
        max_open_duration: cap on the open duration, seconds. Default 600.
        half_open_max_calls: probes admitted at once, fleet-wide. Default 1.
        half_open_successes: successful probes that close the breaker. Default 1.
        probe_timeout: a probe lease expires after this, seconds. Default 10.
        failure_exceptions: exceptions that count as failures. Default (Exception,).
        ignored_exceptions: exceptions that count as nothing. Default ().
        on_redis_error: what to do while Redis is unreachable: "allow" (run the call),
            "reject" (raise CircuitOpenError), or "local" (an in-process breaker with the same
            config decides; its counts are dropped, not replayed, when Redis answers again).
            Default "allow".
        redis_timeout: budget of any breaker Redis operation on the call path. Default 0.05.
        max_staleness: longest a worker acts on a cached state without hearing from Redis.
            Default 1.0.
        idle_ttl: a breaker unused this long expires from Redis. Default 7 days.
    """

    failure_rate_threshold: float = 0.5
    minimum_calls: int = 10
    window: Duration = 60.0
    buckets: int = 10
    consecutive_failures: int | None = None
    slow_call_duration: Duration | None = None
    slow_call_rate_threshold: float = 1.0
    open_duration: Duration = 30.0
    backoff_multiplier: float = 2.0
    max_open_duration: Duration = 600.0
    half_open_max_calls: int = 1
    half_open_successes: int = 1
    probe_timeout: Duration = 10.0
    failure_exceptions: tuple[type[BaseException], ...] = (Exception,)
    ignored_exceptions: tuple[type[BaseException], ...] = ()
    on_redis_error: Literal["allow", "reject", "local"] = "allow"
    redis_timeout: Duration = 0.05
    max_staleness: Duration = 1.0
    idle_ttl: Duration = 7 * 86400.0
    _lua: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _DURATIONS:
            object.__setattr__(self, name, seconds(getattr(self, name), name))
        self._check()
        lua = (
            repr(float(self.failure_rate_threshold)),
            str(self.minimum_calls),
            str(_ms(self.window)),
            str(self.buckets),
            str(self.consecutive_failures or 0),
            repr(float(self.slow_call_rate_threshold)),
            str(_ms(self.open_duration)),
            repr(float(self.backoff_multiplier)),
            str(_ms(self.max_open_duration)),
            str(self.half_open_max_calls),
            str(self.half_open_successes),
            str(_ms(self.probe_timeout)),
            str(_ms(self.idle_ttl)),
        )
        object.__setattr__(self, "_lua", lua)
        object.__setattr__(self, "_fingerprint", hashlib.sha1(",".join(lua).encode()).hexdigest()[:10])

    def _check(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(name, f"must be {what}, got {getattr(self, name)!r}")

        def is_int(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need(is_num("failure_rate_threshold") and 0 < self.failure_rate_threshold <= 1,
             "failure_rate_threshold", "a number with 0 < x <= 1")
        need(is_num("slow_call_rate_threshold") and 0 < self.slow_call_rate_threshold <= 1,
             "slow_call_rate_threshold", "a number with 0 < x <= 1")
        for name in ("minimum_calls", "buckets", "half_open_max_calls", "half_open_successes"):
            need(is_int(name) and getattr(self, name) >= 1, name, "an int >= 1")
        need(self.consecutive_failures is None
             or (is_int("consecutive_failures") and self.consecutive_failures >= 1),
             "consecutive_failures", "None or an int >= 1")
        need(is_num("backoff_multiplier") and self.backoff_multiplier >= 1,
             "backoff_multiplier", "a number >= 1")
        for name in _DURATIONS:
            v = getattr(self, name)
            if v is None and name == "slow_call_duration":
                continue
            need(math.isfinite(v) and v > 0, name, "a positive duration")
        need(self.window * 1000 >= self.buckets,  # type: ignore[operator]
             "window", "at least one millisecond per bucket")
        need(self.max_open_duration >= self.open_duration,  # type: ignore[operator]
             "max_open_duration", "at least open_duration")
        for name in ("failure_exceptions", "ignored_exceptions"):
            v = getattr(self, name)
            need(isinstance(v, tuple) and all(isinstance(t, type) and issubclass(t, BaseException) for t in v),
                 name, "a tuple of exception classes")
        need(self.on_redis_error in ("allow", "reject", "local"), "on_redis_error",
             "'allow', 'reject' or 'local'")

    @property
    def fingerprint(self) -> str:
        """A short hash of the values the scripts use; workers that differ show different ones."""
        return self._fingerprint

    def replace(self, **changes: object) -> BreakerConfig:
        """Return a copy with `changes` applied (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        values.update(changes)
        return BreakerConfig(**values)


def _ms(value: float | timedelta | None) -> int:
    assert isinstance(value, float)
    return max(1, round(value * 1000))
