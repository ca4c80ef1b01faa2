"""A function run every `interval` seconds by one daemon thread or one asyncio task, stoppable.

Used by `distbreaker.health` and `distbreaker.degradation`. An exception of a round is logged
and the next round runs; nothing else ends the loop but `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

log = logging.getLogger("distbreaker")

__all__ = ["AsyncPeriodic", "Periodic"]


class Periodic:
    """Run `fn` now and then every `interval` seconds in a daemon thread until `stop()`."""

    def __init__(self, fn: Callable[[], object], interval: float, name: str) -> None:
        self._fn = fn
        self.interval = interval
        self.name = name
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stopping = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(self._stopping,), name=self.name, daemon=True)
            self._thread.start()

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self._fn()
            except Exception:
                log.exception("%s: a round failed", self.name)
            if stopping.wait(self.interval):
                return

    def stop(self, timeout: float | None = None) -> None:
        """Stop and wait for the thread (at most `timeout` seconds; a round in progress ends first)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


class AsyncPeriodic:
    """Await `fn()` now and then every `interval` seconds in one task until `stop()`."""

    def __init__(self, fn: Callable[[], Awaitable[object]], interval: float, name: str) -> None:
        self._fn = fn
        self.interval = interval
        self.name = name
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the task on the running event loop (no-op when it runs)."""
        if self.running:
            return
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(self._stopping), name=self.name)

    async def _run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self._fn()
            except Exception:
                log.exception("%s: a round failed", self.name)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop and wait for the task; after `timeout` seconds a round in progress is cancelled."""
        task, self._task = self._task, None
        if self._stopping is not None:
            self._stopping.set()
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
