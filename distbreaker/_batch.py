"""Batched mode: one flusher per process (a thread; a task per event loop for asyncio) sends the
outcomes each batched breaker summed locally, one record.lua per breaker and batch.

Fork (gunicorn ``--preload``, any pre-fork server): a forked child starts with an empty batch
in every batched breaker it inherited (what the parent summed, and its pending batches, are the
parent's to send: sending them from the child too would count them twice), gets its own flusher
thread, and flushes what it summed itself at a normal interpreter exit (including ``sys.exit``
in a worker, and the end of a ``multiprocessing`` child started with the fork method); only
``os._exit`` skips that. An asyncio breaker in a child starts the flusher of the child's event
loop at its first batched outcome; asyncio batched breakers are flushed by ``await close()``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
import weakref
from typing import Any, Protocol

from ._log import LIMITED
from ._runner import TaskRunner, ThreadRunner


class _SyncBatched(Protocol):
    flush_interval: float

    def flush(self) -> None: ...


class _AsyncBatched(Protocol):
    flush_interval: float

    async def flush(self) -> None: ...


def _flush_failed(breaker: Any) -> None:
    service = getattr(breaker, "service", "?")
    LIMITED.log(logging.ERROR, ("flush-failed", service), "flush of breaker %r failed", service, burst=3, exc_info=True)


def _drop_inherited(breaker: Any) -> None:
    """In a forked child: empty `breaker`'s batch (the parent's outcomes) and renew its flush lock
    (a parent thread may have held it at the fork)."""
    core = getattr(breaker, "_core", None)
    batch = getattr(core, "batch", None)
    if core is not None and batch is not None:
        core.batched(batch.size)
    if isinstance(getattr(breaker, "_flush_lock", None), type(threading.Lock())):
        breaker._flush_lock = threading.Lock()


class SyncFlusher:
    """The flusher thread of this process: flushes every batched breaker each `flush_interval`
    (the smallest of its breakers'). A caller flushes inline when its batch is full or could trip."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._breakers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._runner = ThreadRunner("distbreaker-flusher", self._step, restart_in_child=True, forked=self._forked)
        self._started = False  # the first round waits an interval before flushing

    def add(self, breaker: _SyncBatched) -> None:
        with self._lock:
            self._breakers.add(breaker)
        self._runner.start()

    def remove(self, breaker: _SyncBatched) -> None:
        with self._lock:
            self._breakers.discard(breaker)

    @property
    def running(self) -> bool:
        return self._runner.running

    def flush_all(self) -> None:
        for breaker in list(self._breakers):
            try:
                breaker.flush()
            except Exception:  # a flush must never kill the flusher; the breaker logged it
                _flush_failed(breaker)

    def _step(self) -> float | None:
        breakers = list(self._breakers)
        if not breakers:
            self._started = False
            return None
        if self._started:
            self.flush_all()
        self._started = True
        interval: float = min(b.flush_interval for b in breakers)
        return interval

    def _forked(self) -> None:
        """In a forked child: this flusher is the child's now, its breakers' batches empty."""
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._started = False
        for breaker in list(self._breakers):
            _drop_inherited(breaker)
        _at_exit_of_multiprocessing_child()

    def stop(self) -> None:
        self._runner.stop()


class AsyncFlusher:
    """The flusher task of one event loop."""

    def __init__(self) -> None:
        self._breakers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._runner = TaskRunner("distbreaker-flusher", self._step)
        self._started = False

    def add(self, breaker: _AsyncBatched) -> None:
        self._breakers.add(breaker)
        self._runner.start()

    def remove(self, breaker: _AsyncBatched) -> None:
        self._breakers.discard(breaker)

    @property
    def running(self) -> bool:
        return self._runner.running

    async def _step(self) -> float | None:
        breakers = list(self._breakers)
        if not breakers:
            self._started = False
            return None
        if self._started:
            for breaker in breakers:
                try:
                    await breaker.flush()
                except Exception:
                    _flush_failed(breaker)
        self._started = True
        interval: float = min(b.flush_interval for b in breakers)
        return interval

    async def stop(self) -> None:
        self._started = False
        await self._runner.stop()


_sync: SyncFlusher | None = None
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncFlusher] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def sync_flusher() -> SyncFlusher:
    """This process's flusher."""
    global _sync
    with _lock:
        if _sync is None:
            _sync = SyncFlusher()
        return _sync


def async_flusher() -> AsyncFlusher:
    """The running event loop's flusher."""
    loop = asyncio.get_running_loop()
    with _lock:
        flusher = _async.get(loop)
        if flusher is None:
            flusher = _async[loop] = AsyncFlusher()
        return flusher


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for flusher in list(_async.values()):  # asyncio breakers: the parent's outcomes stay the parent's
        for breaker in list(flusher._breakers):
            _drop_inherited(breaker)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:  # nothing counted is lost on a clean interpreter exit
    flusher = _sync
    if flusher is not None and flusher.pid == os.getpid():
        flusher.flush_all()


def _at_exit_of_multiprocessing_child() -> None:
    """A `multiprocessing` child started by fork ends with ``os._exit`` after its target, with
    no atexit: flush there too, through multiprocessing's own exit hooks."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return
    flusher = _sync
    # Process._bootstrap clears the finalizers inherited from the parent, then runs the
    # after-fork hooks: register the exit flush from one of those.
    util.register_after_fork(flusher, lambda f: util.Finalize(f, _flush_at_exit, exitpriority=100))
