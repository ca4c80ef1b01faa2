"""The one background runner of the package: a step function run again and again by a daemon
thread (`ThreadRunner`) or an asyncio task (`TaskRunner`), with start, stop, wake-up, the
backoff after failures, and what happens in a forked child.

Used by the pub/sub listener (`_listener`), the batched-mode flusher (`_batch`) and the
toolkit's periodic checks (`_periodic`: `distbreaker.toolkit.health`, `distbreaker.toolkit.degradation`).

A step returns how many seconds to wait before the next step (0: at once; a `wake()` cuts the
wait short), or None to end the runner (it ends only if nobody started it again meanwhile:
`start()` on a running runner makes it take one more step, so work added while the last step
decided to end is never left without a runner). An exception escaping a step is logged
(rate-limited) and the next step runs after `next_backoff`.

Fork: a thread does not survive `os.fork()`. In the child, every `ThreadRunner` gets fresh
locks and events (a lock held by a parent thread at the fork would never be released), runs
its `forked` callback (e.g. the flusher empties the batches copied from the parent), and, if
its thread was running in the parent and `restart_in_child` is set, starts a new thread.
Asyncio tasks live in their event loop: a loop is not carried across a fork in practice, and
a `TaskRunner` starts again on the loop that uses it next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ._log import LIMITED

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "TaskRunner", "ThreadRunner", "cancel_requested", "next_backoff"]

BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0


def next_backoff(previous: float) -> float:
    """The wait after a failure, given the previous one (0 after a success): 0.1 s, doubled by
    each failure in a row, at most 2 s. Used by the breakers after a Redis error and by the
    runners."""
    return min(max(previous * 2, BACKOFF_MIN), BACKOFF_MAX)


def _step_failed(name: str) -> None:
    LIMITED.log(logging.ERROR, ("runner-failed", name), "%s: a background step failed", name, burst=3, exc_info=True)


class ThreadRunner:
    """Run ``step()`` in a daemon thread named `name` until it returns None or `stop()`.

    Args:
        name: the thread's name.
        step: one round of work; returns the seconds to wait before the next, or None to end.
        restart_in_child: after `os.fork()`, start a new thread in the child when one ran in
            the parent.
        forked: called in a forked child before any restart (reset state copied from the parent).
        finished: called in the thread when it ends (release what the steps held).
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], float | None],
        *,
        restart_in_child: bool = False,
        forked: Callable[[], None] | None = None,
        finished: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._step = step
        self._restart = restart_in_child
        self._forked = forked
        self._finished = finished
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._again = False  # start() was called while the thread ran: take one more step
        _THREAD_RUNNERS.add(self)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the thread, or make a running one take one more step."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._again = True
                return
            self._start()

    def _start(self) -> None:  # self._lock held (or the only thread, in a forked child)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._again = False
        self._thread = threading.Thread(
            target=self._run, args=(self._stopping, self._wake), name=self.name, daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Cut the current wait short."""
        self._wake.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and wait for it (at most `timeout` seconds; a step in progress ends first)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self, stopping: threading.Event, wake: threading.Event) -> None:
        backoff = 0.0
        try:
            while not stopping.is_set():
                try:
                    delay = self._step()
                    backoff = 0.0
                except Exception:
                    _step_failed(self.name)
                    delay = backoff = next_backoff(backoff)
                if delay is None:
                    with self._lock:
                        if not self._again or stopping.is_set():
                            if self._thread is threading.current_thread():
                                self._thread = None
                            return
                        self._again = False
                    continue
                if delay > 0 and wake.wait(delay):
                    wake.clear()
        finally:
            if self._finished is not None:
                try:
                    self._finished()
                except Exception:
                    _step_failed(self.name)

    def _after_fork_in_child(self) -> None:
        was_running = self._thread is not None
        self._lock = threading.Lock()
        self._thread = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._again = False
        if self._forked is not None:
            try:
                self._forked()
            except Exception:
                _step_failed(self.name)
        if was_running and self._restart:
            self._start()


_THREAD_RUNNERS: weakref.WeakSet[ThreadRunner] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for runner in list(_THREAD_RUNNERS):
        runner._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def cancel_requested(task: asyncio.Task[Any] | None) -> bool:
    """True when `task` has been asked to cancel (Python >= 3.11 counts the requests; False on
    3.10). A loop of awaits checks it each round: a cancellation that something below swallowed
    (Python 3.11's `wait_for` returns a result that is ready when the cancellation lands; an
    `asyncio.timeout` entered while a cancellation is pending turns its own expiry into
    TimeoutError, which redis-py's `get_message(timeout=)` answers with None) is still counted,
    and the loop ends instead of running on (it held an event loop's shutdown forever)."""
    cancelling = getattr(task, "cancelling", None)
    return cancelling is not None and cancelling() > 0


class TaskRunner:
    """Await ``step()`` in an asyncio task named `name` until it returns None or `stop()`.

    The task runs on the loop that called `start()` (one runner per loop where that matters).

    Args:
        name: the task's name.
        step: one round of work; returns the seconds to wait before the next, or None to end.
        finished: awaited in the task when it ends (release what the steps held).
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[float | None]],
        *,
        finished: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._step = step
        self._finished = finished
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._again = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop of the task (None before the first start)."""
        return None if self._task is None else self._task.get_loop()

    def start(self) -> None:
        """Start the task on the running loop, or make a running one take one more step."""
        loop = asyncio.get_running_loop()
        if self.running and self.loop is loop:
            self._again = True
            return
        self._stopping, self._wake, self._again = asyncio.Event(), asyncio.Event(), False
        self._task = loop.create_task(self._run(self._stopping, self._wake), name=self.name)

    def wake(self) -> None:
        """Cut the current wait short (from the task's loop)."""
        if self._wake is not None:
            self._wake.set()

    async def stop(self, timeout: float | None = 0.0) -> None:
        """Stop the task; after `timeout` seconds (0: at once) a step in progress is cancelled."""
        task, self._task = self._task, None
        if self._stopping is not None and self._wake is not None:
            self._stopping.set()
            self._wake.set()
        if task is None or task.done() or task is asyncio.current_task():
            return
        if timeout != 0:
            await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self, stopping: asyncio.Event, wake: asyncio.Event) -> None:
        backoff = 0.0
        task = asyncio.current_task()
        try:
            while not stopping.is_set():
                if cancel_requested(task):  # a cancellation a step swallowed: end here
                    raise asyncio.CancelledError
                try:
                    delay = await self._step()
                    backoff = 0.0
                except Exception:
                    _step_failed(self.name)
                    delay = backoff = next_backoff(backoff)
                if delay is None:
                    if not self._again or stopping.is_set():
                        return
                    self._again = False
                    continue
                if delay > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(wake.wait(), delay)
                    wake.clear()
        finally:
            if self._finished is not None:
                try:
                    await self._finished()
                except Exception:
                    _step_failed(self.name)
