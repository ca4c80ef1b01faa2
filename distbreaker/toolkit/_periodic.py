"""A function run every `interval` seconds by one daemon thread or one asyncio task, stoppable.

Used by `distbreaker.toolkit.health` and `distbreaker.toolkit.degradation`, on the package's one background
runner (`_runner`). An exception of a round is logged and the next round runs; nothing else
ends the loop but `stop()`. A checker started before `os.fork()` does not run in the child
until it is started there.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .._runner import TaskRunner, ThreadRunner

log = logging.getLogger("distbreaker")

__all__ = ["AsyncPeriodic", "Periodic"]


class Periodic:
    """Run `fn` now and then every `interval` seconds in a daemon thread until `stop()`."""

    def __init__(self, fn: Callable[[], object], interval: float, name: str) -> None:
        self._fn = fn
        self.interval = interval
        self.name = name
        self._runner = ThreadRunner(name, self._round)

    def _round(self) -> float:
        try:
            self._fn()
        except Exception:
            log.exception("%s: a round failed", self.name)
        return self.interval

    @property
    def running(self) -> bool:
        return self._runner.running

    def start(self) -> None:
        if not self._runner.running:
            self._runner.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop and wait for the thread (at most `timeout` seconds; a round in progress ends first)."""
        self._runner.stop(timeout)


class AsyncPeriodic:
    """Await `fn()` now and then every `interval` seconds in one task until `stop()`."""

    def __init__(self, fn: Callable[[], Awaitable[object]], interval: float, name: str) -> None:
        self._fn = fn
        self.interval = interval
        self.name = name
        self._runner = TaskRunner(name, self._round)

    async def _round(self) -> float:
        try:
            await self._fn()
        except Exception:
            log.exception("%s: a round failed", self.name)
        return self.interval

    @property
    def running(self) -> bool:
        return self._runner.running

    def start(self) -> None:
        """Start the task on the running event loop (no-op when it runs)."""
        if not self._runner.running:
            self._runner.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop and wait for the task; after `timeout` seconds a round in progress is cancelled."""
        await self._runner.stop(timeout)
