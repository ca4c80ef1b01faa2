"""Pub/sub hints: one listener per process and client (a thread, or an asyncio task).

Every script publishes its transitions on ``<prefix>:events``. A message is only a hint: it
names a service whose state changed, and the listener (never a caller's thread) re-reads that
breaker's state from Redis (read.lua, one round trip) and gives every breaker of the process
that caches that service what Redis answered. Nothing a message says is taken as the state, so
a forged or garbled message costs at most a read. Re-reads are coalesced and rate-limited per
breaker: a burst of messages is drained first, then read once; each breaker has a bucket of
`_BURST` reads refilled at `_RATE` per second, so a flood of messages costs at most `_RATE`
reads per second and breaker. A malformed message is ignored, with a rate-limited log line.

After a lost connection the listener resubscribes and drops every cached state, since messages
may have been lost (the next call of each breaker then asks Redis).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import weakref
from typing import Any

from ._cluster import acheck_eviction, ainit, check_eviction
from ._core import BreakerCore, Eval, decode_event, text
from ._log import LIMITED
from ._model import Transition
from ._runner import TaskRunner, ThreadRunner, next_backoff
from ._scripts import Steps, adrive, drive, eval_steps

_POLL = 0.5  # seconds a listener waits for a message before checking its work
_DRAIN = 100  # messages taken at once before the re-reads they asked for
_BURST = 5  # re-reads a breaker may make at once ...
_RATE = 20.0  # ... and per second after that
_CLAIMS = 32  # transitions a pending hint remembers for the hooks


class _Hint:
    """The re-read bookkeeping of one breaker: a token bucket, and the transitions the messages
    since the last read claim (for `on_transition` only)."""

    __slots__ = ("claims", "heard", "refilled", "tokens")

    def __init__(self) -> None:
        self.tokens = float(_BURST)
        self.refilled = 0.0
        self.claims: dict[int, tuple[Transition, int]] = {}
        self.heard = -1  # generation up to which the hooks heard of transitions; -1 = not yet

    def ready(self, now: float) -> float:
        """Seconds until this pending hint may read (0: now)."""
        self.tokens = min(float(_BURST), self.tokens + (now - self.refilled) * _RATE)
        self.refilled = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / _RATE


def _claim(service: str, event: dict[str, Any]) -> tuple[Transition, int] | None:
    """The transition a message claims (for the hooks), or None (not one, or garbled)."""
    try:
        t = decode_event(service, event)
        return None if t is None else (t, int(event["ts"]))
    except (KeyError, ValueError, TypeError, AttributeError, OverflowError):
        return None


def _generation(event: dict[str, Any]) -> int | None:
    """The generation a message names, or None."""
    value = event.get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _malformed(channel: Any, why: str) -> None:
    LIMITED.warning(
        ("pubsub-malformed", text(channel)), "ignoring a malformed message on %r (%s)", text(channel), why, burst=3
    )


class Routes:
    """Which breakers of this process listen to which channel and service, and which of them
    want a re-read (no I/O). Empty entries are removed with their last breaker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: dict[str, dict[str, weakref.WeakSet[BreakerCore]]] = {}
        self._hints: weakref.WeakKeyDictionary[BreakerCore, _Hint] = weakref.WeakKeyDictionary()
        self._pending: dict[BreakerCore, _Hint] = {}  # the hints that want a read (no scan of every breaker)

    def add(self, core: BreakerCore) -> None:
        with self._lock:
            self._routes.setdefault(core.keys.channel, {}).setdefault(core.service, weakref.WeakSet()).add(core)
            self._hints.setdefault(core, _Hint())

    def remove(self, core: BreakerCore) -> None:
        with self._lock:
            self._hints.pop(core, None)
            self._pending.pop(core, None)
            services = self._routes.get(core.keys.channel)
            if services is None:
                return
            cores = services.get(core.service)
            if cores is not None:
                cores.discard(core)
                if not cores:
                    del services[core.service]
            if not services:
                del self._routes[core.keys.channel]

    def __len__(self) -> int:
        """How many (channel, service) routes are kept."""
        with self._lock:
            return sum(len(services) for services in self._routes.values())

    def _cores(self) -> list[BreakerCore]:
        with self._lock:
            return [c for services in self._routes.values() for cores in services.values() for c in cores]

    def channels(self) -> set[str]:
        """Channels that still have a live breaker (routes emptied by the garbage collector go)."""
        with self._lock:
            for channel in list(self._routes):
                services = self._routes[channel]
                for service in [s for s, cores in services.items() if not cores]:
                    del services[service]
                if not services:
                    del self._routes[channel]
            return set(self._routes)

    def dispatch(self, message: dict[str, Any]) -> None:
        """Take one pub/sub message: mark the breakers of its service for a re-read, unless their
        cache already holds the generation it names (a state change always makes a new one), as
        after a breaker's own transition. Never raises."""
        if message.get("type") != "message":
            return
        channel = message.get("channel", "?")
        try:
            event = json.loads(text(message["data"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            _malformed(channel, "not JSON")
            return
        service = event.get("service") if isinstance(event, dict) else None
        if not isinstance(service, str):
            _malformed(channel, "no service")
            return
        claim = _claim(service, event)
        generation = _generation(event)
        with self._lock:
            for core in self._routes.get(text(channel), {}).get(service, ()):
                hint = self._hints.get(core)
                if hint is None:
                    continue
                hooks = core.hooks
                if (
                    generation is not None
                    and core.view.state is not None
                    and generation <= core.view.generation
                    and not (
                        claim is not None and generation > hint.heard and hooks is not None and hooks.on_transition
                    )
                ):
                    continue  # the cache already holds that generation or a newer one (e.g. our own echo)
                self._pending[core] = hint
                if claim is not None and len(hint.claims) < _CLAIMS:
                    hint.claims[claim[0].generation] = claim

    def due(self, now: float) -> tuple[list[tuple[BreakerCore, _Hint, list[tuple[Transition, int]]]], float]:
        """The breakers to re-read now (each with its claims, taken), and the seconds until the
        next pending one may read (`_POLL` when none is pending)."""
        out = []
        wait = _POLL
        with self._lock:
            for core, hint in list(self._pending.items()):
                later = hint.ready(now)
                if later:
                    wait = min(wait, later)
                    continue
                hint.tokens -= 1
                del self._pending[core]
                claims, hint.claims = list(hint.claims.values()), {}
                out.append((core, hint, claims))
        return out, wait

    def invalidate(self) -> None:
        """Drop every cached state (after a gap in the subscription)."""
        for core in self._cores():
            core.view.forget()

    def forked(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held this one)."""
        self._lock = threading.Lock()


def _reread(core: BreakerCore, claims: list[tuple[Transition, int]], heard: int) -> Steps[int]:
    """Read the breaker's state (read.lua, creating nothing) and hand it to the core."""
    now = "" if core.test_clock is None else str(round(core.test_clock() * 1000))
    request = Eval(core.scripts["read"], core.key_list, [now, core.fingerprint, "1"], core.config_args)
    reply = yield from eval_steps(request)
    return core.event(reply, claims, heard)


def _reread_failed(core: BreakerCore, exc: BaseException) -> None:
    core.view.forget()  # the next call asks Redis itself
    LIMITED.log(
        logging.WARNING,
        ("pubsub-reread", core.prefix),
        "breaker %r: re-reading its state after a pub/sub message failed (%s); its next call asks Redis",
        core.service,
        exc,
        burst=3,
    )


class _Gap:
    """State of a listener loop shared by the thread and the task: backoff and gap."""

    def __init__(self) -> None:
        self.backoff = 0.0
        self.gap = False
        self.subscribed: set[str] = set()

    def failed(self, exc: BaseException) -> float:
        if not self.gap:  # once per gap (a flapping Redis: 3 lines, then one a minute)
            LIMITED.warning(
                "pubsub-down", "pub/sub listener lost Redis (%s); breakers fall back to max_staleness", exc, burst=3
            )
        self.gap = True
        self.subscribed = set()
        self.backoff = next_backoff(self.backoff)
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
        self.ready = threading.Event()  # set once subscribed (tests wait on it)
        self._pubsub: Any = None
        self._gap = _Gap()
        self._runner = ThreadRunner(
            "distbreaker-listener", self._step, restart_in_child=True, forked=self._forked, finished=self._finished
        )

    def add(self, core: BreakerCore) -> None:
        self.routes.add(core)
        self._runner.start()

    def remove(self, core: BreakerCore) -> None:
        self.routes.remove(core)

    def stop(self, timeout: float = 5.0) -> None:
        self._runner.stop(timeout)

    @property
    def running(self) -> bool:
        return self._runner.running

    def _step(self) -> float | None:
        wanted = self.routes.channels()
        if not wanted:
            return None  # every breaker of this client is gone
        gap = self._gap
        reads, wait = self.routes.due(time.monotonic())
        for core, hint, claims in reads:
            try:
                hint.heard = drive(self.client, _reread(core, claims, hint.heard))
            except Exception as exc:  # RedisError, or a reply the core cannot take
                _reread_failed(core, exc)
        try:
            pubsub = self._pubsub
            if pubsub is None:
                check_eviction(self.client)  # once per client and process, off the call path
                pubsub = self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            if wanted - gap.subscribed:
                pubsub.subscribe(*(wanted - gap.subscribed))
                gap.subscribed |= wanted
            message = pubsub.get_message(timeout=wait)
            gap.healthy(self.routes)
            self.ready.set()
            for _ in range(_DRAIN):  # take a burst whole: its re-reads coalesce
                if message is None:
                    break
                self.routes.dispatch(message)
                message = pubsub.get_message(timeout=0)
        except Exception as exc:  # RedisError, OSError, or a socket closed under us
            self.ready.clear()
            self._finished()
            return gap.failed(exc)
        return 0.0

    def _finished(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self.ready.clear()
        _close(pubsub)

    def _forked(self) -> None:
        """In a forked child: the parent's connection is not ours to close; subscribe anew and
        drop what the cache holds (messages between the fork and the subscription are lost)."""
        self._pubsub = None
        self.ready = threading.Event()
        self._gap = _Gap()
        self._gap.gap = True
        self.routes.forked()


class AsyncListener:
    """The listener task of one asyncio client, in one event loop."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.routes = Routes()
        self.ready = asyncio.Event()
        self._pubsub: Any = None
        self._gap = _Gap()
        self._runner = TaskRunner("distbreaker-listener", self._step, finished=self._finished)

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._runner.loop

    def add(self, core: BreakerCore) -> None:
        self.routes.add(core)
        self._runner.start()

    def remove(self, core: BreakerCore) -> None:
        self.routes.remove(core)

    async def stop(self) -> None:
        await self._runner.stop()

    @property
    def running(self) -> bool:
        return self._runner.running

    async def _step(self) -> float | None:
        wanted = self.routes.channels()
        if not wanted:
            return None
        gap = self._gap
        reads, wait = self.routes.due(time.monotonic())
        for core, hint, claims in reads:
            try:
                hint.heard = await adrive(self.client, _reread(core, claims, hint.heard))
            except Exception as exc:
                _reread_failed(core, exc)
        try:
            pubsub = self._pubsub
            if pubsub is None:
                await ainit(self.client)  # an asyncio RedisCluster's pub/sub needs its slot table
                await acheck_eviction(self.client)
                pubsub = self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            if wanted - gap.subscribed:
                await pubsub.subscribe(*(wanted - gap.subscribed))
                gap.subscribed |= wanted
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            gap.healthy(self.routes)
            self.ready.set()
            for _ in range(_DRAIN):
                if message is None:
                    break
                self.routes.dispatch(message)
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
        except Exception as exc:  # RedisError, OSError, or a socket closed under us
            self.ready.clear()
            await self._finished()
            return gap.failed(exc)
        return 0.0

    async def _finished(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
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
    """The listener of `client` in this process (after a fork, the child's own thread)."""
    with _registry_lock:
        listener = _sync_listeners.get(client)
        if listener is None:
            listener = _sync_listeners[client] = SyncListener(client)
        return listener


def async_listener(client: Any) -> AsyncListener:
    """The listener of `client` in the running event loop."""
    with _registry_lock:
        listener = _async_listeners.get(client)
        if listener is None or (listener.loop is not None and listener.loop is not asyncio.get_running_loop()):
            listener = _async_listeners[client] = AsyncListener(client)
        return listener


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
