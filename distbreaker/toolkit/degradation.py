"""Degradation levels: how unwell the app's dependencies are, for switching features off.

A `DegradationMonitor` reads a set of breakers (one snapshot each, one Redis round trip per
breaker) and, optionally, this process's CPU and memory use, and turns them into a `Level`:
``normal`` < ``degraded`` < ``critical`` < ``emergency``. The app asks the monitor, with no I/O,
before doing something it can live without:

    from distbreaker.toolkit.degradation import DegradationMonitor, Level

    monitor = DegradationMonitor([payments, search, recommendations], interval=5.0).start()
    ...
    if monitor.level < Level.DEGRADED:
        page.add(recommendations_widget())

or lets the monitor pick between a full and a cheap version of a function:

    @monitor.degrade_to(cached_recommendations, at=Level.DEGRADED)
    def recommendations(user): ...          # runs cached_recommendations(user) when degraded

    render = monitor.choose(full_render, light_render, at=Level.CRITICAL)

How the level is worked out (`assess`):

- Each breaker gives an error rate: 1.0 while it is ``open``, ``forced_open`` or
  ``half_open`` (its window was cleared when it opened, and it is not trusted yet); otherwise
  its window's ``failures / calls`` once the window holds at least its config's
  ``minimum_calls`` calls, and 0.0 before that (too few calls to mean anything; the breaker
  itself does not act on them either).
- The error rate across breakers is the mean of theirs, so each dependency weighs the same
  whatever its traffic: one of four dependencies down is 0.25.
- Each signal maps to a level through its `Thresholds` (the highest threshold reached); the
  level is the highest of the signals: error rate, and CPU and memory when configured.

CPU is this process's CPU time as a percentage of all cores, memory its resident set as a
percentage of the machine's memory, both read with psutil (an optional dependency: pass
`cpu=` or `memory=` only where it is installed, or give your own `usage=` callable).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, ParamSpec, TypeVar, cast

from .._config import seconds
from .._model import Snapshot, State
from ..errors import ConfigError
from ._periodic import AsyncPeriodic, Periodic

__all__ = [
    "Assessment",
    "AsyncDegradationMonitor",
    "DegradationMonitor",
    "Level",
    "Thresholds",
    "assess",
    "process_usage",
]

_UNHEALTHY = (State.OPEN, State.FORCED_OPEN, State.HALF_OPEN)

P = ParamSpec("P")
T = TypeVar("T")


class Level(str, Enum):
    """Degradation levels, ordered: ``Level.NORMAL < Level.DEGRADED < Level.CRITICAL < Level.EMERGENCY``."""

    NORMAL = "normal"
    DEGRADED = "degraded"
    CRITICAL = "critical"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        """0 for normal up to 3 for emergency."""
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Level):
            return NotImplemented
        return _RANK[self] < _RANK[other]

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Level):
            return NotImplemented
        return _RANK[self] <= _RANK[other]

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Level):
            return NotImplemented
        return _RANK[self] > _RANK[other]

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Level):
            return NotImplemented
        return _RANK[self] >= _RANK[other]

    def __str__(self) -> str:
        return self.value


_RANK = {level: i for i, level in enumerate(Level)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """The values of a signal at which each level starts (each ≥ the previous one).

    Args:
        degraded: from this value on, at least ``degraded``.
        critical: from this value on, at least ``critical``.
        emergency: from this value on, ``emergency``.
    """

    degraded: float
    critical: float
    emergency: float

    def __post_init__(self) -> None:
        values = (self.degraded, self.critical, self.emergency)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            raise ConfigError("thresholds", f"must be numbers, got {values!r}")
        if not self.degraded <= self.critical <= self.emergency:
            raise ConfigError("thresholds", f"must satisfy degraded <= critical <= emergency, got {values!r}")

    def level(self, value: float) -> Level:
        """The level `value` reaches."""
        if value >= self.emergency:
            return Level.EMERGENCY
        if value >= self.critical:
            return Level.CRITICAL
        if value >= self.degraded:
            return Level.DEGRADED
        return Level.NORMAL


ERROR_RATE = Thresholds(degraded=0.1, critical=0.25, emergency=0.5)


@dataclass(frozen=True, slots=True)
class Assessment:
    """One evaluation of the signals.

    Attributes:
        level: the resulting level.
        previous: the level before this assessment.
        error_rate: the mean error rate across the breakers (0.0 to 1.0; 0.0 with no breakers).
        cpu: process CPU, percent of all cores, or None when not measured.
        memory: process resident memory, percent of the machine's, or None when not measured.
        causes: one line per signal that reached a level above normal, e.g.
            ``"error_rate 0.33 >= 0.25 (critical)"``.
        snapshots: the breakers' snapshots it was made from.
    """

    level: Level
    previous: Level
    error_rate: float
    cpu: float | None
    memory: float | None
    causes: tuple[str, ...]
    snapshots: tuple[Snapshot, ...]


def breaker_error_rate(snapshot: Snapshot, minimum_calls: int) -> float:
    """A breaker's error rate for the monitor: 1.0 while open, forced open or half-open; its
    failure rate once the window has `minimum_calls` calls; else 0.0."""
    if snapshot.state in _UNHEALTHY:
        return 1.0
    if snapshot.calls < max(1, minimum_calls):
        return 0.0
    return snapshot.failure_rate


def assess(
    snapshots: Sequence[Snapshot],
    minimum_calls: Sequence[int],
    *,
    error_rate: Thresholds = ERROR_RATE,
    cpu: tuple[Thresholds, float] | None = None,
    memory: tuple[Thresholds, float] | None = None,
    previous: Level = Level.NORMAL,
) -> Assessment:
    """The level of a set of breaker snapshots (and measured CPU/memory), with no I/O.

    Args:
        snapshots: one per breaker.
        minimum_calls: each breaker's `minimum_calls`, in the same order.
        error_rate: thresholds of the mean error rate. Default degraded 0.1, critical 0.25,
            emergency 0.5.
        cpu: (thresholds, measured percent), or None.
        memory: (thresholds, measured percent), or None.
        previous: the level before, copied into the result.
    """
    rates = [breaker_error_rate(s, m) for s, m in zip(snapshots, minimum_calls, strict=True)]
    rate = sum(rates) / len(rates) if rates else 0.0
    signals = [("error_rate", error_rate, rate, "{:.2f}")]
    if cpu is not None:
        signals.append(("cpu", *cpu, "{:.0f}%"))
    if memory is not None:
        signals.append(("memory", *memory, "{:.0f}%"))
    level, causes = Level.NORMAL, []
    for name, thresholds, value, fmt in signals:
        reached = thresholds.level(value)
        if reached > Level.NORMAL:
            start = getattr(thresholds, reached.value)
            causes.append(f"{name} {fmt.format(value)} >= {fmt.format(start)} ({reached})")
        level = max(level, reached)
    return Assessment(
        level, previous, rate, cpu[1] if cpu else None, memory[1] if memory else None, tuple(causes), tuple(snapshots)
    )


def process_usage() -> Callable[[], tuple[float, float]]:
    """A sampler of (CPU percent of all cores, resident memory percent) of this process, with psutil.

    CPU is measured between two calls (the first call returns 0.0).

    Raises:
        ImportError: psutil is not installed.
    """
    try:
        import psutil  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise ImportError("CPU and memory levels need psutil: pip install psutil") from exc
    process = psutil.Process()
    cores = psutil.cpu_count() or 1

    def sample() -> tuple[float, float]:
        return process.cpu_percent(None) / cores, process.memory_percent()

    return sample


def _level(at: Any) -> Level:
    try:
        return Level(at)
    except ValueError:
        raise ConfigError("at", f"must be a Level (or its name), got {at!r}") from None


def _interval(value: Any) -> float:
    interval = seconds(value, "interval")
    if interval is None or not 0.01 <= interval <= 3600:
        raise ConfigError("interval", f"must be between 0.01 and 3600 seconds, got {value!r}")
    return interval


class _Base:
    def __init__(
        self,
        breakers: Iterable[Any] | Callable[[], Iterable[Any]],
        error_rate: Thresholds,
        cpu: Thresholds | None,
        memory: Thresholds | None,
        usage: Callable[[], tuple[float, float]] | None,
        on_change: Callable[[Assessment], object] | None,
        interval: Any,
    ) -> None:
        self._breakers = breakers if callable(breakers) else tuple(breakers)
        for name, value in (("error_rate", error_rate), ("cpu", cpu), ("memory", memory)):
            if value is not None and not isinstance(value, Thresholds):
                raise ConfigError(name, f"must be a Thresholds, got {value!r}")
        self.error_rate, self.cpu, self.memory = error_rate, cpu, memory
        if usage is None and (cpu is not None or memory is not None):
            usage = process_usage()
        self._usage = usage
        self.on_change = on_change
        self.interval = _interval(interval)
        self.last: Assessment | None = None

    @property
    def level(self) -> Level:
        """The level of the last assessment (``normal`` before the first); no I/O."""
        last = self.last
        return last.level if last is not None else Level.NORMAL

    def choose(
        self, primary: Callable[P, T], fallback: Callable[P, T], *, at: Level | str = Level.DEGRADED
    ) -> Callable[P, T]:
        """`fallback` when the current level is `at` or above, else `primary` (no I/O).

        Args:
            primary: the full version.
            fallback: the cheap version, taking the same arguments.
            at: the level (or its name) from which `fallback` is chosen. Default
                ``Level.DEGRADED``.

        .. versionadded:: 0.2.0
        """
        return fallback if self.level >= _level(at) else primary

    def degrade_to(
        self,
        fallback: Callable[P, Any],
        *,
        at: Level | str = Level.DEGRADED,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """A decorator: each call runs the decorated function, or `fallback` with the same
        arguments when the level is `at` or above at that moment (`choose`, no I/O).

        On an ``async def`` the wrapper is a coroutine function and `fallback` may be sync or
        async (awaited if it returns an awaitable).

        .. versionadded:: 0.2.0
        """
        at = _level(at)
        if not callable(fallback):
            raise TypeError(f"fallback must be callable, got {fallback!r}")

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    value = self.choose(fn, fallback, at=at)(*args, **kwargs)
                    return await value if inspect.isawaitable(value) else value

                return run_async  # type: ignore[return-value]

            @functools.wraps(fn)
            def run(*args: P.args, **kwargs: P.kwargs) -> T:
                return cast("T", self.choose(fn, fallback, at=at)(*args, **kwargs))

            return run

        return decorate

    def _breaker_list(self) -> list[Any]:
        breakers = self._breakers
        return list(breakers() if callable(breakers) else breakers)

    def _finish(self, breakers: list[Any], snapshots: Sequence[Snapshot]) -> Assessment:
        cpu = memory = None
        if self._usage is not None and (self.cpu is not None or self.memory is not None):
            cpu_now, memory_now = self._usage()
            cpu = (self.cpu, cpu_now) if self.cpu is not None else None
            memory = (self.memory, memory_now) if self.memory is not None else None
        previous = self.level
        result = assess(
            snapshots,
            [b.config.minimum_calls for b in breakers],
            error_rate=self.error_rate,
            cpu=cpu,
            memory=memory,
            previous=previous,
        )
        self.last = result
        if result.level is not previous and self.on_change is not None:
            self.on_change(result)
        return result


class DegradationMonitor(_Base):
    """The degradation level of a set of `distbreaker.Breaker`s (and, optionally, of this
    process's CPU and memory), refreshed by `refresh()` or by a daemon thread (`start()`).

    Args:
        breakers: the breakers, or a callable returning them at each refresh (e.g. the
            breakers a registry holds now).
        error_rate: `Thresholds` of the mean error rate across breakers. Default degraded 0.1,
            critical 0.25, emergency 0.5.
        cpu: `Thresholds` of process CPU, percent of all cores (e.g. 70/85/95), or None (off,
            the default). Needs psutil unless `usage` is given.
        memory: `Thresholds` of process resident memory, percent of the machine's, or None.
        usage: a callable returning ``(cpu_percent, memory_percent)``, instead of psutil.
        on_change: called with the `Assessment` whenever the level changes (in the refreshing
            thread).
        interval: seconds between refreshes of `start()`. Default 5.
    """

    def __init__(
        self,
        breakers: Iterable[Any] | Callable[[], Iterable[Any]],
        *,
        error_rate: Thresholds = ERROR_RATE,
        cpu: Thresholds | None = None,
        memory: Thresholds | None = None,
        usage: Callable[[], tuple[float, float]] | None = None,
        on_change: Callable[[Assessment], object] | None = None,
        interval: float | timedelta = 5.0,
    ) -> None:
        super().__init__(breakers, error_rate, cpu, memory, usage, on_change, interval)
        self._periodic = Periodic(self.refresh, self.interval, "distbreaker-degradation")

    def refresh(self) -> Assessment:
        """Read every breaker's snapshot (one round trip each) and CPU/memory; return the new
        assessment (also kept as `last`)."""
        breakers = self._breaker_list()
        return self._finish(breakers, [b.snapshot() for b in breakers])

    @property
    def running(self) -> bool:
        """Whether the refreshing thread runs."""
        return self._periodic.running

    def start(self) -> DegradationMonitor:
        """Refresh now and then every `interval` seconds in a daemon thread; no-op when it runs."""
        self._periodic.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread; wait at most `timeout` seconds for a refresh in progress."""
        self._periodic.stop(timeout)

    def __enter__(self) -> DegradationMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncDegradationMonitor(_Base):
    """`DegradationMonitor` for `distbreaker.asyncio.Breaker`s: ``await refresh()``; `start()`
    runs an asyncio task. Same arguments."""

    def __init__(
        self,
        breakers: Iterable[Any] | Callable[[], Iterable[Any]],
        *,
        error_rate: Thresholds = ERROR_RATE,
        cpu: Thresholds | None = None,
        memory: Thresholds | None = None,
        usage: Callable[[], tuple[float, float]] | None = None,
        on_change: Callable[[Assessment], object] | None = None,
        interval: float | timedelta = 5.0,
    ) -> None:
        super().__init__(breakers, error_rate, cpu, memory, usage, on_change, interval)
        self._periodic = AsyncPeriodic(self.refresh, self.interval, "distbreaker-degradation")

    async def refresh(self) -> Assessment:
        """Read every breaker's snapshot (concurrently) and CPU/memory; return the new assessment."""
        breakers = self._breaker_list()
        snapshots = await asyncio.gather(*(b.snapshot() for b in breakers))
        return self._finish(breakers, snapshots)

    @property
    def running(self) -> bool:
        """Whether the refreshing task runs."""
        return self._periodic.running

    def start(self) -> AsyncDegradationMonitor:
        """Refresh now and then every `interval` seconds in a task on the running loop."""
        self._periodic.start()
        return self

    async def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the task; after `timeout` seconds a refresh in progress is cancelled."""
        await self._periodic.stop(timeout)

    async def __aenter__(self) -> AsyncDegradationMonitor:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
