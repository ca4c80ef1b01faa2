"""Health checks: a periodic probe per provider that can close a half-open breaker early.

Without a probe, a breaker that has opened closes only when real traffic comes back to it:
once `open_duration` has passed, the next real call becomes the half-open probe. A provider
that a failover chain routes around may wait long for that call, and when it comes a user's
request is the test. A `HealthChecker` probes instead: every `interval` seconds, for each
breaker that is open past its `open_until` or half-open, it runs the probe through the
breaker's normal `call`. The call acquires a probe lease like any other (at most
`half_open_max_calls` fleet-wide), and a successful probe counts as a successful call, so
`half_open_successes` of them close the breaker; a failing probe reopens it with backoff.

Closed, disabled and forced-open breakers are never probed: synthetic successes must not dilute
a closed breaker's failure rate, and a forced state is an operator's decision. A breaker still
open before its `open_until` is skipped from the local cache, with no Redis round trip:

    from distbreaker.toolkit.health import HealthChecker

    checker = HealthChecker(interval=5.0)
    checker.add(search_breaker, lambda: httpx.get("http://search/health", timeout=1).raise_for_status())
    checker.start()        # a daemon thread; checker.stop() ends it
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .._config import seconds
from .._model import State
from .._timeout import check_timeout
from ..errors import CircuitOpenError, ConfigError
from ._periodic import AsyncPeriodic, Periodic

__all__ = ["AsyncHealthChecker", "HealthChecker", "HealthResult"]

_PROBED = (State.OPEN, State.HALF_OPEN)


@dataclass(frozen=True, slots=True)
class HealthResult:
    """What one round of health checks did for one breaker.

    Attributes:
        service: the breaker.
        state: its state before the round (None when Redis could not be read).
        probed: whether the probe ran (it runs only when the breaker admitted it as a probe).
        ok: the probe succeeded (None when it did not run).
        error: the probe's exception, the breaker's rejection, or the error reading the state.
        at: when (``time.time()``).
    """

    service: str
    state: State | None
    probed: bool
    ok: bool | None
    error: BaseException | None
    at: float


def _interval(value: Any) -> float:
    interval = seconds(value, "interval")
    if interval is None or not 0.01 <= interval <= 3600:
        raise ConfigError("interval", f"must be between 0.01 and 3600 seconds, got {value!r}")
    return interval


def _check_probe(probe: Any) -> None:
    if not callable(probe):
        raise TypeError(f"probe must be callable, got {probe!r}")


def _wants_probe(breaker: Any, state: State) -> bool:
    """Probe a breaker that is half-open, or open but due (its cache no longer rejects)."""
    return state in _PROBED and breaker.allows()


class _Base:
    def __init__(self) -> None:
        self._checks: dict[str, tuple[Any, Callable[[], Any]]] = {}
        self._results: dict[str, HealthResult] = {}

    def add(self, breaker: Any, probe: Callable[[], Any]) -> None:
        """Probe `breaker`'s provider with ``probe()`` (no arguments; raise when unhealthy)."""
        _check_probe(probe)
        self._checks[breaker.service] = (breaker, probe)

    def add_failover(self, failover: Any) -> None:
        """Add every provider of a `distbreaker.toolkit.failover` chain that has a ``probe``."""
        for provider in failover.providers:
            if provider.probe is not None:
                self.add(provider.breaker, provider.probe)

    def remove(self, service: str) -> None:
        """Stop probing the breaker of `service`."""
        self._checks.pop(service, None)
        self._results.pop(service, None)

    def results(self) -> dict[str, HealthResult]:
        """The last result per breaker (no I/O)."""
        return dict(self._results)

    def _done(
        self, service: str, state: State | None, probed: bool, ok: bool | None, error: BaseException | None
    ) -> HealthResult:
        result = HealthResult(service, state, probed, ok, error, time.time())
        self._results[service] = result
        return result


class HealthChecker(_Base):
    """Periodic health probes for sync breakers (`distbreaker.Breaker`), in one daemon thread.

    Args:
        interval: seconds between rounds (or a timedelta), 0.01 to 3600. Default 10.
        timeout: stop waiting for a probe after this many seconds; it counts as failed (the
            breaker's `call` timeout: the probe runs in a worker thread, which Python cannot
            stop, so it keeps running until it returns by itself). Default None: the probe
            runs in the checker's thread with no limit.

    Probes run one after the other. Give a probe its own timeout (e.g. the HTTP client's)
    either way. Use it as a context manager to start and stop it.
    """

    def __init__(self, *, interval: float | timedelta = 10.0, timeout: float | timedelta | None = None) -> None:
        super().__init__()
        self.interval = _interval(interval)
        self.timeout = check_timeout(timeout)
        self._periodic = Periodic(self.check, self.interval, "distbreaker-health")

    @property
    def running(self) -> bool:
        """Whether the thread runs."""
        return self._periodic.running

    def check(self) -> dict[str, HealthResult]:
        """Run one round now, in the caller's thread; return its results."""
        out = {}
        for service, (breaker, probe) in list(self._checks.items()):
            out[service] = self._check_one(breaker, probe)
        return out

    def _check_one(self, breaker: Any, probe: Callable[[], Any]) -> HealthResult:
        service = breaker.service
        try:
            state = breaker.state  # the cache while fresh, else one read
        except Exception as exc:
            return self._done(service, None, False, None, exc)
        if not _wants_probe(breaker, state):
            return self._done(service, state, False, None, None)
        try:
            breaker.call(probe, timeout=self.timeout)
        except CircuitOpenError as exc:  # not admitted (every probe slot taken, or not due yet)
            return self._done(service, state, False, None, exc)
        except Exception as exc:
            return self._done(service, state, True, False, exc)
        return self._done(service, state, True, True, None)

    def start(self) -> HealthChecker:
        """Start the thread (a round at once, then one every `interval`); no-op when it runs."""
        self._periodic.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread; wait at most `timeout` seconds for a round in progress."""
        self._periodic.stop(timeout)

    def __enter__(self) -> HealthChecker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncHealthChecker(_Base):
    """Periodic health probes for `distbreaker.asyncio.Breaker`s, in one asyncio task.

    Args:
        interval: seconds between rounds (or a timedelta), 0.01 to 3600. Default 10.
        timeout: each probe is cancelled after this many seconds and counts as failed (the
            breaker's `call` timeout). Default 5; None: no limit.

    The breakers of a round are checked concurrently (`asyncio.gather`): a round takes about
    as long as its slowest probe (at most `timeout`), not their sum. Probes may be sync or
    async (an async one is awaited; a sync one blocks the loop while it runs, so the
    concurrency helps only async probes). Use it as an async context manager to start and
    stop it.
    """

    def __init__(self, *, interval: float | timedelta = 10.0, timeout: float | timedelta | None = 5.0) -> None:
        super().__init__()
        self.interval = _interval(interval)
        self.timeout = check_timeout(timeout)
        self._periodic = AsyncPeriodic(self.check, self.interval, "distbreaker-health")

    def add(self, breaker: Any, probe: Callable[[], Any | Awaitable[Any]]) -> None:
        """Probe `breaker`'s provider with ``probe()`` (sync or async; raise when unhealthy)."""
        super().add(breaker, probe)

    @property
    def running(self) -> bool:
        """Whether the task runs."""
        return self._periodic.running

    async def check(self) -> dict[str, HealthResult]:
        """Run one round now, every breaker's check concurrently; return its results."""
        checks = list(self._checks.items())
        results = await asyncio.gather(*(self._check_one(breaker, probe) for _, (breaker, probe) in checks))
        return {service: result for (service, _), result in zip(checks, results, strict=True)}

    async def _check_one(self, breaker: Any, probe: Callable[[], Any]) -> HealthResult:
        service = breaker.service
        try:
            state = breaker.state or (await breaker.snapshot()).state
        except Exception as exc:
            return self._done(service, None, False, None, exc)
        if not _wants_probe(breaker, state):
            return self._done(service, state, False, None, None)
        try:
            await breaker.call(probe, timeout=self.timeout)
        except CircuitOpenError as exc:
            return self._done(service, state, False, None, exc)
        except Exception as exc:
            return self._done(service, state, True, False, exc)
        return self._done(service, state, True, True, None)

    def start(self) -> AsyncHealthChecker:
        """Start the task on the running loop (a round at once, then one every `interval`)."""
        self._periodic.start()
        return self

    async def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the task; after `timeout` seconds a round in progress is cancelled."""
        await self._periodic.stop(timeout)

    async def __aenter__(self) -> AsyncHealthChecker:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
