"""BreakerConfig: frozen, validated on construction, durations normalised to float seconds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any, Literal

from . import _schema
from .errors import ConfigError

__all__ = ["BreakerConfig", "Duration", "seconds"]

Duration = float | timedelta


def seconds(value: object, name: str) -> float | None:
    """Normalise a duration (seconds or timedelta; None passes) to float seconds; anything else
    is a `ConfigError` naming `name` (so callers may pass what a user gave, unchecked)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, f"must be seconds (float) or a timedelta, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        raise ConfigError(name, f"must be a finite number of seconds, got {value!r}") from None


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
        half_open_successes: successful probes that close the breaker. Default 1 (used only
            while `half_open_failure_rate_threshold` is None).
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
        half_open_failure_rate_threshold: None (default): one failed or slow probe reopens the
            breaker and `half_open_successes` successful probes close it. A ratio x (0 < x <= 1):
            the verdict is the failure rate of `half_open_max_calls` probes (a slow probe
            counts as failed): reopen when failed / half_open_max_calls >= x, else close,
            decided as soon as the probes still out cannot change it (resilience4j's
            permittedNumberOfCallsInHalfOpenState with its failureRateThreshold).
        minimum_failing_workers: None (default): off. N (1..32): a closed breaker opens only
            when, besides its trip conditions, at least N distinct clients (processes)
            reported a failure or a slow call in the window, so one bad worker cannot trip
            the fleet. `Snapshot.failing_clients` / `distbreaker status` show the count.
        failure_predicate: ``exc -> bool``, asked about an exception that `failure_exceptions`
            selects (and `ignored_exceptions` does not): True counts it as a failure, False as
            a success. None (default): every such exception is a failure.
        result_predicate: ``value -> bool``, asked about the value a call returned: True counts
            the call as a failure (e.g. an HTTP 503 returned, not raised); the value is still
            returned, and no fallback runs. None (default): every return is a success.

    The two predicates are per-process callables: they are not sent to Redis and not part of
    the `fingerprint`, so workers with different predicates share one fleet config. A
    predicate that raises counts the call as a failure and is logged (rate-limited, naming
    the breaker).

    .. versionchanged:: 0.2.0 `failure_predicate` and `result_predicate`,
       `half_open_failure_rate_threshold` and `minimum_failing_workers`.
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
    half_open_failure_rate_threshold: float | None = None
    minimum_failing_workers: int | None = None
    failure_predicate: Callable[[Exception], object] | None = None
    result_predicate: Callable[[Any], object] | None = None
    _lua: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The values the scripts use: checked (and normalised) by the schema, which the
        # scripts' own checks are generated from; then the rules between them.
        script: dict[str, float | int] = {}
        for f in _schema.FIELDS:
            value = f.check(getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            script[f.name] = f.script_value(value)
        rule = _schema.broken_rule(script)
        if rule is not None:
            raise ConfigError(rule.field, f"must be {rule.words}, got {getattr(self, rule.field)!r}")
        for name, (high, off) in _schema.LOCAL_DURATIONS.items():
            object.__setattr__(self, name, _schema.check_seconds(name, getattr(self, name), high=high, off=off))
        for name in ("failure_exceptions", "ignored_exceptions"):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and all(isinstance(t, type) and issubclass(t, BaseException) for t in v)):
                raise ConfigError(name, f"must be a tuple of exception classes, got {v!r}")
        for name in ("failure_predicate", "result_predicate"):
            v = getattr(self, name)
            if v is not None and not callable(v):
                raise ConfigError(name, f"must be a callable or None, got {v!r}")
        if self.on_redis_error not in ("allow", "reject", "local"):
            raise ConfigError("on_redis_error", f"must be 'allow', 'reject' or 'local', got {self.on_redis_error!r}")
        lua = tuple(f.text(script[f.name]) for f in _schema.FIELDS)
        object.__setattr__(self, "_lua", lua)
        object.__setattr__(self, "_fingerprint", _schema.fingerprint(lua))

    @property
    def fingerprint(self) -> str:
        """A short hash of the values the scripts use; workers that differ show different ones."""
        return self._fingerprint

    def replace(self, **changes: object) -> BreakerConfig:
        """Return a copy with `changes` applied (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        values.update(changes)
        return BreakerConfig(**values)
