"""Pub/sub invalidation: one listener per process and client (a thread, or an asyncio task).

Every script publishes its transitions on ``<prefix>:events``. The listener applies them to
every breaker of the process that caches that service, so a trip made by any worker (or an
operator) reaches the others within milliseconds instead of `max_staleness`. After a lost
connection it resubscribes and drops every cached state, since messages may have been lost
(the next call of each breaker then asks Redis).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import weakref
from typing import Any

from ._cluster import acheck_eviction, ainit, check_eviction
from ._core import BreakerCore, text
from ._log import LIMITED

_POLL = 0.5             # seconds a listener waits for a message before checking its work
_BACKOFF_MIN, _BACKOFF_MAX = 0.1, 2.0


class Routes:
    """Which breakers of this process listen to which channel and service (no I/O)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, dict[str, weakref.WeakSet[BreakerCore]]] = {}

    def add(self, core: BreakerCore) -> None:
        with self._lock:
            self._routes.setdefault(core.keys.channel, {}).setdefault(core.service, weakref.WeakSet()).add(core)

    def remove(self, core: BreakerCore) -> None:
        with self._lock:
            services = self._routes.get(core.keys.channel, {})
            services.get(core.service, weakref.WeakSet()).discard(core)

    def _cores(self) -> list[BreakerCore]:
        with self._lock:
            return [c for services in self._routes.values() for cores in services.values() for c in cores]

    def channels(self) -> set[str]:
        """Channels that still have a live breaker."""
        with self._lock:
            return {ch for ch, services in self._routes.items() if any(len(c) for c in services.values())}

    def dispatch(self, message: dict[str, Any]) -> None:
        """Apply one pub/sub message to the breakers it concerns."""
        if message.get("type") != "message":
            return
        try:
            event = json.loads(text(message["data"]))
            with self._lock:
                cores = list(self._routes.get(text(message["channel"]), {}).get(event["service"], ()))
        except (ValueError, KeyError, TypeError):
            LIMITED.warning(("malformed", message.get("channel")), "ignoring a malformed message on %r",
                            message.get("channel"))
            return
        for core in cores:
            core.event(event)

    def invalidate(self) -> None:
        """Drop every cached state (after a gap in the subscription)."""
        for core in self._cores():
            core.view.forget()


class _Loop:
    """State of a listener loop shared by the thread and the task: backoff and gap."""

    def __init__(self) -> None:
        self.backoff = 0.0
        self.gap = False
        self.subscribed: set[str] = set()

    def failed(self, exc: BaseException) -> float:
        if not self.gap:  # once per gap (a flapping Redis: 3 lines, then one a minute)
            LIMITED.warning("pubsub-down", "pub/sub listener lost Redis (%s); breakers fall back to max_staleness",
                            exc, burst=3)
        self.gap = True
        self.subscribed = set()
        self.backoff = min(max(self.backoff * 2, _BACKOFF_MIN), _BACKOFF_MAX)
        return self.backoff

    def healthy(self, routes: Routes) -> None:
        self.backoff = 0.0
        if self.gap:
            self.gap = False
            routes.invalidate()
            LIMITED.warning("pubsub-up", "pub/sub listener resubscribed; cached breaker states dropped", burst=3)


class SyncListener:
    """The listener thread of one sync client."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.routes = Routes()
        self.pid = os.getpid()
        self.ready = threading.Event()  # set once subscribed (tests wait on it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add(self, core: BreakerCore) -> None:
        self.routes.add(core)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="distbreaker-listener", daemon=True)
                self._thread.start()

    def remove(self, core: BreakerCore) -> None:
        self.routes.remove(core)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        loop, pubsub = _Loop(), None
        try:
            while not self._stop.is_set():
                wanted = self.routes.channels()
                if not wanted:
                    break  # every breaker of this client is gone
                try:
                    if pubsub is None:
                        check_eviction(self.client)  # once per client and process, off the call path
                        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                    if wanted - loop.subscribed:
                        pubsub.subscribe(*(wanted - loop.subscribed))
                        loop.subscribed |= wanted
                    message = pubsub.get_message(timeout=_POLL)
                    loop.healthy(self.routes)
                    self.ready.set()
                    if message is not None:
                        self.routes.dispatch(message)
                except Exception as exc:  # RedisError, OSError, or a socket closed under us
                    self.ready.clear()
                    _close(pubsub)
                    pubsub = None
                    self._stop.wait(loop.failed(exc))
        finally:
            _close(pubsub)
            self.ready.clear()


class AsyncListener:
    """The listener task of one asyncio client, in one event loop."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.routes = Routes()
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, core: BreakerCore) -> None:
        self.routes.add(core)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="distbreaker-listener")

    def remove(self, core: BreakerCore) -> None:
        self.routes.remove(core)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        loop, pubsub = _Loop(), None
        try:
            while True:
                wanted = self.routes.channels()
                if not wanted:
                    break
                try:
                    if pubsub is None:
                        await ainit(self.client)  # an asyncio RedisCluster's pub/sub needs its slot table
                        await acheck_eviction(self.client)
                        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                    if wanted - loop.subscribed:
                        await pubsub.subscribe(*(wanted - loop.subscribed))
                        loop.subscribed |= wanted
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL)
                    loop.healthy(self.routes)
                    self.ready.set()
                    if message is not None:
                        self.routes.dispatch(message)
                except Exception as exc:  # RedisError, OSError, or a socket closed under us
                    self.ready.clear()
                    await _aclose(pubsub)
                    pubsub = None
                    await asyncio.sleep(loop.failed(exc))
        finally:
            self.ready.clear()
            await _aclose(pubsub)


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:  # the connection is already broken
            pass


async def _aclose(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            await pubsub.aclose()
        except Exception:
            pass


_sync_listeners: weakref.WeakKeyDictionary[Any, SyncListener] = weakref.WeakKeyDictionary()
_async_listeners: weakref.WeakKeyDictionary[Any, AsyncListener] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def sync_listener(client: Any) -> SyncListener:
    """The listener of `client` in this process (a new one after a fork)."""
    with _registry_lock:
        listener = _sync_listeners.get(client)
        if listener is None or listener.pid != os.getpid():
            listener = _sync_listeners[client] = SyncListener(client)
        return listener


def async_listener(client: Any) -> AsyncListener:
    """The listener of `client` in the running event loop."""
    with _registry_lock:
        listener = _async_listeners.get(client)
        if listener is None or (listener._task is not None and listener._task.get_loop() is not asyncio.get_running_loop()):
            listener = _async_listeners[client] = AsyncListener(client)
        return listener
