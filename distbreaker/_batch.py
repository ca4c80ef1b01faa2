"""Batched mode: one flusher per process (a thread; a task per event loop for asyncio) sends the
outcomes each batched breaker summed locally, one record.lua per breaker and batch."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import weakref
from typing import Any, Protocol

from ._log import LIMITED


class _SyncBatched(Protocol):
    flush_interval: float

    def flush(self) -> None: ...


class _AsyncBatched(Protocol):
    flush_interval: float

    async def flush(self) -> None: ...


def _flush_failed(breaker: Any) -> None:
    service = getattr(breaker, "service", "?")
    LIMITED.log(logging.ERROR, ("flush-failed", service), "flush of breaker %r failed", service, burst=3,
                exc_info=True)


class SyncFlusher:
    """The flusher thread of this process: flushes every batched breaker each `flush_interval`
    (the smallest of its breakers'). A caller flushes inline when its batch is full or could trip."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._breakers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, breaker: _SyncBatched) -> None:
        with self._lock:
            self._breakers.add(breaker)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="distbreaker-flusher", daemon=True)
                self._thread.start()

    def remove(self, breaker: _SyncBatched) -> None:
        with self._lock:
            self._breakers.discard(breaker)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def flush_all(self) -> None:
        for breaker in list(self._breakers):
            try:
                breaker.flush()
            except Exception:  # a flush must never kill the flusher; the breaker logged it
                _flush_failed(breaker)

    def _run(self) -> None:
        while not self._stop.is_set():
            breakers = list(self._breakers)
            if not breakers:
                break
            self._wake.wait(min(b.flush_interval for b in breakers))
            self._wake.clear()
            self.flush_all()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)


class AsyncFlusher:
    """The flusher task of one event loop."""

    def __init__(self) -> None:
        self._breakers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None

    def add(self, breaker: _AsyncBatched) -> None:
        self._breakers.add(breaker)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="distbreaker-flusher")

    def remove(self, breaker: _AsyncBatched) -> None:
        self._breakers.discard(breaker)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            breakers = list(self._breakers)
            if not breakers:
                break
            await asyncio.sleep(min(b.flush_interval for b in breakers))  # stop() cancels it
            for breaker in list(self._breakers):
                try:
                    await breaker.flush()
                except Exception:
                    _flush_failed(breaker)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


_sync: SyncFlusher | None = None
_async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncFlusher] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def sync_flusher() -> SyncFlusher:
    """This process's flusher (a new one after a fork)."""
    global _sync
    with _lock:
        if _sync is None or _sync.pid != os.getpid():
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


@atexit.register
def _flush_at_exit() -> None:  # nothing counted is lost on a clean interpreter exit
    flusher = _sync
    if flusher is not None and flusher.pid == os.getpid():
        flusher.flush_all()
