"""The asyncio Breaker over `redis.asyncio`: the same names and behaviour as the sync one.

It is a shell over the same sans-IO core (`_core.BreakerCore`) and the same steps
(`_action_steps`); only the I/O differs (`await`).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from datetime import timedelta
from time import perf_counter
from types import CoroutineType
from typing import Any, Literal, ParamSpec, TypeVar, cast, overload

import redis.asyncio
from redis.exceptions import RedisError, ResponseError

from . import _arg_checks, _bulk, _functions, _schema, _transport
from ._action_steps import control_steps, snapshot_steps
from ._batch import AsyncFlusher, async_flusher
from ._config import BreakerConfig
from ._connect import client_options
from ._core import (
    DEFAULT_PREFIX,
    FAILURE,
    FLUSH,
    SUCCESS,
    BreakerCore,
    CallHandle,
    Eval,
    Permit,
    PermitStack,
    classify,
    classify_result,
    validate_service,
)
from ._functions import use_functions
from ._hooks import CallHook, Hooks, TransitionHook
from ._listener import AsyncListener, async_listener
from ._model import Outcome, Snapshot, State, Transition
from ._nesting import INSIDE
from ._reporters import standard_reporters
from ._scripts import Steps, adrive, eval_steps, scripts_for
from ._timeout import check_timeout, within
from ._transport import alane_for, check_client
from .admin import SCAN_COUNT, Events, FleetConfig, Inspection, _Operations, close_matches
from .bulkhead import AsyncBulkhead as Bulkhead
from .errors import BulkheadFullError, CallTimeoutError, CircuitOpenError, ConfigError, redact, translate
from .registry import _Registry

__all__ = ["Admin", "Breaker", "BreakerRegistry", "Bulkhead", "connect", "connect_cluster", "connect_sentinel"]

P = ParamSpec("P")
T = TypeVar("T")


def connect(url: str, *, timeout: float = 0.05, functions: bool = False, **kwargs: Any) -> redis.asyncio.Redis:
    """`distbreaker.connect` for asyncio: a `redis.asyncio.Redis` bounded by `timeout` seconds.

    Its pool does not block (redis-py's asyncio blocking pool costs ~40 µs per command here) but
    allows 1000 connections; past that a command fails at once and counts as Redis unavailable.
    The breakers' own commands share ONE connection per event loop, pipelined (written as they
    come, replies matched in order; see docs/concepts.md, "Connections"): a burst of concurrent
    calls on a fresh client sets up one connection, not one per task. When replies are
    outstanding and none arrives for `timeout` (a hung Redis), that connection is dropped and
    every command on it fails with a Redis timeout at once: a burst costs about one `timeout`.
    `functions=True`: the scripts run as Redis Functions (FCALL), as with `distbreaker.connect`.
    """
    options = client_options(url, timeout, asyncio=True)
    options.pop("timeout")  # the blocking pool's wait
    options["max_connections"] = 1000
    options.update(kwargs)
    try:
        client = redis.asyncio.Redis.from_pool(redis.asyncio.ConnectionPool.from_url(url, **options))
    except ValueError as exc:
        raise ConfigError("url", redact(str(exc))) from None
    return use_functions(client, functions)


async def connect_cluster(url: str, *, timeout: float = 0.05, **kwargs: Any) -> Any:
    """`distbreaker.connect_cluster` for asyncio: a `redis.asyncio.cluster.RedisCluster` bounded by
    `timeout` seconds with no retries, already initialised (redis-py's asyncio cluster client
    fails when several commands run at once on a client that was not: `await rc.initialize()`
    any client you build yourself before sharing it)."""
    from redis.asyncio.cluster import RedisCluster

    from ._cluster import REDIRECTS, cluster_options

    options = cluster_options(url, timeout, asyncio=True)
    options.update(kwargs)
    try:
        client = RedisCluster.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError("url", redact(str(exc))) from None
    client.RedisClusterRequestTTL = REDIRECTS
    await client.initialize()
    return client


def connect_sentinel(
    sentinels: Iterable[tuple[str, int]],
    service_name: str,
    *,
    timeout: float = 0.05,
    sentinel_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """`distbreaker.connect_sentinel` for asyncio: a `redis.asyncio.Redis` to the current master."""
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel
    from redis.backoff import NoBackoff

    options = client_options("redis://sentinel", timeout, asyncio=True)
    options.pop("timeout")
    options.pop("max_connections")
    to_sentinels = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
        **(sentinel_kwargs or {}),
    }
    options.update(kwargs)
    sentinel = Sentinel(list(sentinels), sentinel_kwargs=to_sentinels, **options)  # type: ignore[no-untyped-call, unused-ignore]
    client = sentinel.master_for(service_name, redis_class=_SentinelRedis)
    client._sentinel_clients = list(sentinel.sentinels)
    return client


class _SentinelRedis(redis.asyncio.Redis):
    """The master client of `connect_sentinel`: `aclose()` also closes the sentinel connections."""

    _sentinel_clients: list[Any] = []

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self._sentinel_clients:
            await sentinel.aclose()


async def _resolve(value: T | Awaitable[T]) -> T:
    if inspect.isawaitable(value):
        return await value
    return value


class Breaker:
    """`distbreaker.Breaker` for asyncio: ``async with``, a decorator for ``async def``, and
    ``await breaker.call(fn, ...)`` (fn and fallback may be sync or async).

    Args:
        service: the breaker's name, 1-128 characters of ``[A-Za-z0-9._:-]``.
        redis: a `redis.asyncio.Redis` client (`distbreaker.asyncio.connect` makes one).
        config: thresholds and timings (`BreakerConfig()` by default).
        prefix: key prefix in Redis. Default ``"distbreaker"``.
        clock: for tests only: a callable returning seconds (local and server clock).
        listen: apply transitions published by other processes as they happen (one pub/sub
            task per event loop and client). Default True.
        mode: ``"sync"`` (default) or ``"batched"`` (outcomes summed locally and sent by one
            task per event loop every `flush_interval`; see `distbreaker.Breaker`).
        flush_interval: seconds between flushes in batched mode. Default 0.1.
        flush_size: flush at once when this many outcomes wait. Default 1000.
        on_transition: a function (or several), sync or async, called with a `Transition` once
            per transition this process learns of (its own calls', or through pub/sub). Sync
            ones run inline; a coroutine function runs as a task on the loop, never awaited by
            the call (`close()` waits for those still running). An exception is logged, never
            raised.
        on_call: a function (or several), sync or async, called with a `CallDetails` after
            every call (admitted or rejected). Same rules as `on_transition`.
    """

    def __init__(
        self,
        service: str,
        redis: Any,
        config: BreakerConfig | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] | None = None,
        listen: bool = True,
        mode: Literal["sync", "batched"] = "sync",
        flush_interval: float = 0.1,
        flush_size: int = 1000,
        on_transition: TransitionHook | Iterable[TransitionHook] | None = None,
        on_call: CallHook | Iterable[CallHook] | None = None,
    ) -> None:
        _schema.check_options(listen, clock)
        self._hooks = hooks = Hooks(on_transition, on_call, asynchronous=True)
        self._core = core = BreakerCore(service, config, prefix, clock, scripts_for(redis), hooks, standard_reporters())
        self.service, self.prefix, self.config, self.redis = core.service, core.prefix, core.config, redis
        self._stack = PermitStack()
        check_client(redis, asynchronous=True)  # a sync client here is refused, saying what to pass
        # the lane speaks EVALSHA; scripts run as Redis Functions (FCALL) go through adrive()
        self._lane = None if any(s.function for s in core.scripts.values()) else alane_for(redis)
        _arg_checks.check_client_budget(redis, core.config)
        self._listen = listen
        self._listener: AsyncListener | None = None  # started by the first round trip (needs a loop)
        self.mode, self.flush_interval = _arg_checks.check_mode(mode, flush_interval, flush_size)
        self._flusher: AsyncFlusher | None = None  # started by the first batched outcome
        self._asking: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None  # the acquire in flight
        self._flush_lock: asyncio.Lock | None = None
        if mode == "batched":
            core.batched(flush_size)

    async def flush(self) -> None:
        """Send the outcomes summed locally (batched mode); those that fail stay for the next flush."""
        core = self._core
        if core.batch is None:
            return
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            for batch_id, gen, request in core.flush_requests():
                try:
                    reply = await self._run(request)
                except RedisError as exc:
                    core.flush_failed(batch_id, exc)
                    return  # in order: a later batch must not overtake a pending one
                core.flushed(batch_id, gen, reply)

    def _start_listening(self) -> None:
        if self._listen and self._listener is None:
            self._listener = async_listener(self.redis)
            self._listener.add(self._core)

    async def close(self) -> None:
        """Flush what batched mode summed and stop listening (the listener and flusher tasks end
        with their last breaker)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.remove(self)
            await self.flush()
            if not flusher._breakers:
                await flusher.stop()
        listener, self._listener, self._listen = self._listener, None, False
        if listener is not None:
            listener.remove(self._core)
            if not listener.routes.channels():
                await listener.stop()
        self._core.close()
        await self._hooks.drain()

    def __repr__(self) -> str:
        return f"asyncio.Breaker({self.service!r}, state={self._core.view.state or 'unknown'})"

    # -- the call path (I/O only; the core decides) ------------------------------------------
    async def _run(self, request: Eval) -> Any:
        if self._listener is None and self._listen:
            self._start_listening()
        start = perf_counter()
        lane = self._lane
        future = lane.request(request) if lane is not None else None
        if future is not None:
            try:
                reply = await future  # the common call: the pipe's write and its reply (_transport.ALane)
            except ResponseError as exc:  # NOSCRIPT, NOCONFIG, ...: the steps take it from there
                reply = await adrive(self.redis, eval_steps(request), exc)
        else:
            reply = await adrive(self.redis, eval_steps(request))
        self._core.ran(request, start)
        return reply

    async def _admit(self) -> Permit:
        permit = self._core.admit()
        if type(permit) is not Eval:
            return permit  # type: ignore[return-value]
        return await self._ask(permit)

    async def _ask(self, request: Eval) -> Permit:
        """Run the acquire `request` (the cache did not admit the call)."""
        core = self._core
        # One acquire at a time per event loop: the tasks that find the cache empty or stale while
        # another task of the loop asks Redis wait for its reply (it refreshes the cache) and
        # decide again; only those the cache still does not admit (half-open: a probe lease
        # each) ask themselves. A cold burst of 1000 tasks sends one acquire, not 1000.
        loop = asyncio.get_running_loop()
        asking = self._asking
        if asking is not None and asking[0] is loop:
            await asking[1].wait()
            again = core.admit()
            if type(again) is not Eval:
                return again  # type: ignore[return-value]
            request = again
        mine = (loop, asyncio.Event())
        if self._asking is None:
            self._asking = mine
        try:
            reply = await self._run(request)
        except RedisError as exc:
            core.failed(exc)
            return core.degraded(core.clock())
        finally:
            if self._asking is mine:
                self._asking = None
            mine[1].set()  # the waiters run after this task has applied the reply (no await below)
        return core.acquired(reply)

    async def _record(
        self, permit: Permit, outcome: Outcome, duration: float, exc: BaseException | None = None
    ) -> None:
        core = self._core
        if core.batch is not None and (self._flusher is None or not self._flusher.running):  # a new loop
            self._flusher = async_flusher()
            self._flusher.add(self)
        request = core.record(permit, outcome, duration)
        if request is FLUSH:
            await self.flush()
        elif request is not None:
            try:
                reply = await self._run(request)  # type: ignore[arg-type]
            except RedisError as err:
                core.failed(err)
            else:
                core.recorded(reply, permit[0])  # type: ignore[index]  # (a request: a permit of (generation, lease))
        core.finished(outcome, duration, exc)

    @overload
    async def call(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        fallback: Callable[[BaseException], T | Awaitable[T]] | None = None,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> T: ...

    @overload
    async def call(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        fallback: Callable[[BaseException], T | Awaitable[T]] | None = None,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> T: ...

    async def call(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        fallback: Callable[[BaseException], Any] | None = None,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` (awaited when it returns an awaitable) through the breaker.

        Args:
            fn: the protected function, sync or async.
            fallback: called with the exception when the breaker rejects the call or the call
                fails; its result (awaited if needed) is returned instead of raising. A value
                that `result_predicate` counts as a failure is returned as it is.
            timeout: seconds (or a timedelta) the awaitable may take; then it is cancelled and
                `CallTimeoutError` is raised (or given to `fallback`). A timeout always counts
                as a failure, with a duration of at least `timeout`: it is also slow when
                ``timeout >= slow_call_duration``. A sync `fn` is not interrupted. None (default):
                no limit.

        A call made from inside a call through this breaker (its `call` or a decorated
        function), in the same task or a task started inside it, runs directly: neither
        admitted nor counted again (the outer call counts once); its `fallback` and `timeout`
        still apply. An ``async with`` block always takes its own permit.

        Raises:
            CircuitOpenError: the breaker is open and no fallback was given.
            CallTimeoutError: the call ran past `timeout` and no fallback was given.
        """
        limit = check_timeout(timeout) if timeout is not None else None
        inside = INSIDE.get()
        if self in inside:
            return await self._nested(fn, args, kwargs, fallback, limit)
        core = self._core
        try:
            admitted = core.admission()  # the common call: the cache admits it, no await
            if type(admitted) is Eval:
                admitted = await self._ask(admitted)
        except CircuitOpenError as exc:  # Redis down and on_redis_error="reject", or acquire denied
            if fallback is None:
                raise
            return await _resolve(fallback(exc))
        if type(admitted) is CircuitOpenError:  # the cache's rejection: raised from here, one frame
            if fallback is None:
                raise admitted
            return await _resolve(fallback(admitted))
        permit: Permit = admitted  # type: ignore[assignment]
        clock = core.clock
        start = clock()
        expired: CallTimeoutError | None = None
        try:
            token = INSIDE.set((*inside, self))
            try:
                if limit is None:
                    result = fn(*args, **kwargs)
                    if type(result) is CoroutineType or inspect.isawaitable(result):
                        result = await result
                else:
                    done, result = await within(limit, fn(*args, **kwargs))
                    if not done:
                        raise (expired := CallTimeoutError(self.service, limit))
            finally:
                INSIDE.reset(token)
        except BaseException as exc:
            took = clock() - start
            if exc is expired:
                outcome, took = FAILURE, max(took, limit or 0.0)
            else:
                outcome = classify(self.config, exc, self.service)
            await self._record(permit, outcome, took, exc)
            if fallback is not None and outcome == FAILURE:
                return await _resolve(fallback(exc))
            raise
        config = self.config  # no predicate (the common call): no function call
        outcome = SUCCESS if config.result_predicate is None else classify_result(config, result, self.service)
        await self._record(permit, outcome, clock() - start)
        return result

    async def _nested(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        fallback: Callable[[BaseException], Any] | None,
        limit: float | None,
    ) -> Any:
        """A call inside a call through this breaker: run it directly (the outer call counts)."""
        try:
            if limit is None:
                return await _resolve(fn(*args, **kwargs))
            done, result = await within(limit, fn(*args, **kwargs))
            if not done:
                raise CallTimeoutError(self.service, limit)
            return result
        except BaseException as exc:
            if fallback is not None and (
                isinstance(exc, CallTimeoutError) or classify(self.config, exc, self.service) == FAILURE
            ):
                return await _resolve(fallback(exc))
            raise

    def __call__(self, fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate the coroutine function `fn` so that every call goes through the breaker."""
        return self.protect()(fn)

    def protect(
        self,
        *,
        fallback: Callable[[BaseException], Any] | None = None,
        timeout: float | timedelta | None = None,
        bulkhead: Bulkhead | None = None,
    ) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
        """A decorator like ``@breaker``, with options: ``@breaker.protect(fallback=..., timeout=2.0)``.

        Args:
            fallback: sync or async, called with the exception when the breaker rejects a call
                or a call fails (as in `call`); its result is returned instead of raising.
            timeout: cancel each call after this many seconds (as in `call`). None: no limit.
            bulkhead: a `distbreaker.asyncio.Bulkhead` each call also holds a slot of, inside
                the breaker (as in `distbreaker.Breaker.protect`): an open breaker refuses
                first; a full bulkhead raises `BulkheadFullError` (given to `fallback`, if
                any), which the breaker does not count. `timeout` includes its `max_wait`.

        The decorated function's own keyword arguments are passed through untouched (even ones
        named ``fallback`` or ``timeout``).
        """
        check_timeout(timeout)
        if bulkhead is not None and not isinstance(bulkhead, Bulkhead):
            raise TypeError(f"bulkhead must be a distbreaker.asyncio.Bulkhead, got {bulkhead!r}")

        def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(
                    f"{getattr(fn, '__qualname__', fn)!r} is not a coroutine function: decorate it "
                    "with distbreaker.Breaker, not distbreaker.asyncio.Breaker"
                )

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self._protected(functools.partial(fn, *args, **kwargs), fallback, timeout, bulkhead)

            return wrapper

        return decorate

    async def _protected(
        self,
        target: Callable[[], Coroutine[Any, Any, T]],
        fallback: Callable[[BaseException], Any] | None,
        timeout: float | timedelta | None,
        bulkhead: Bulkhead | None,
    ) -> T:
        """One call of `protect`'s wrapper (also `BreakerRegistry.protect`'s): through the breaker,
        and through `bulkhead` inside it when given."""
        if bulkhead is None:
            return await self.call(target, fallback=fallback, timeout=timeout)
        try:
            return await self.call(bulkhead.call, target, fallback=fallback, timeout=timeout)
        except BulkheadFullError as exc:  # not counted by the breaker
            if fallback is None:
                raise
            return cast(T, await _resolve(fallback(exc)))

    def allows(self) -> bool:
        """False when the local cache alone rejects a call now (open, forced open); no I/O.

        True does not promise admission: a half-open breaker, or a stale cache, asks Redis.
        """
        return self._core.allows()

    async def __aenter__(self) -> CallHandle:
        """Admit a call; the block may mark its outcome on what this returns (`CallHandle`)."""
        call = CallHandle(self.service, self.config, await self._admit(), self._core.clock())
        self._stack.push(call)
        return call

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        permit, start, outcome = self._stack.pop(exc)
        await self._record(permit, outcome, self._core.clock() - start, exc)

    # -- state and operator actions -----------------------------------------------------------
    async def _do(self, steps: Steps[T]) -> T:
        if self._listener is None and self._listen:
            self._start_listening()
        try:
            return await adrive(self.redis, steps)
        except RedisError as exc:
            raise translate(exc, self.service) from exc

    async def snapshot(self) -> Snapshot:
        """Read the shared state from Redis (one round trip)."""
        return await self._do(snapshot_steps(self._core))

    @property
    def state(self) -> State | None:
        """The cached state while fresh (no I/O in a property), else None: use `await snapshot()`."""
        return self._core.cached_state()

    async def trip(self, *, for_: float | Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force the breaker open fleet-wide, for `for_` seconds or a timedelta (None = until reset)."""
        return await self._do(control_steps(self._core, "trip", for_, reason, actor))

    async def disable(self, *, for_: float | Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force the breaker closed fleet-wide (outcomes still counted), for `for_` seconds."""
        return await self._do(control_steps(self._core, "disable", for_, reason, actor))

    async def reset(self, *, reason: str = "", actor: str | None = None) -> Snapshot:
        """Return the breaker to closed with an empty window, clearing any forced state."""
        return await self._do(control_steps(self._core, "reset", None, reason, actor))


class BreakerRegistry(_Registry[Breaker]):
    """`distbreaker.BreakerRegistry` for asyncio: hands out `distbreaker.asyncio.Breaker`s.

    Args:
        redis: a `redis.asyncio.Redis` (`distbreaker.asyncio.connect`).
        default_config: config of breakers without an override. Default `BreakerConfig()`.
        max_breakers: how many breakers to keep in memory. Default 1000.
        prefix: key prefix. Default ``"distbreaker"``.
        configs: per-service configs.
        clock: for tests only.
        listen: passed to every breaker.
        mode: passed to every breaker.
        flush_interval: passed to every breaker.
        flush_size: passed to every breaker.
        fallback: the default fallback (sync or async) of `call` and `protect`. Default None: raise.
        on_transition: passed to every breaker (see `Breaker`).
        on_call: passed to every breaker (see `Breaker`).
    """

    def __init__(
        self,
        redis: Any,
        default_config: BreakerConfig | None = None,
        *,
        max_breakers: int = 1000,
        prefix: str = DEFAULT_PREFIX,
        configs: Mapping[str, BreakerConfig] | None = None,
        clock: Callable[[], float] | None = None,
        listen: bool = True,
        mode: Literal["sync", "batched"] = "sync",
        flush_interval: float = 0.1,
        flush_size: int = 1000,
        fallback: Callable[[BaseException], Any] | None = None,
        on_transition: TransitionHook | Iterable[TransitionHook] | None = None,
        on_call: CallHook | Iterable[CallHook] | None = None,
    ) -> None:
        super().__init__(
            Breaker,
            redis,
            default_config,
            max_breakers,
            prefix,
            configs,
            clock,
            {
                "listen": listen,
                "mode": mode,
                "flush_interval": flush_interval,
                "flush_size": flush_size,
                "on_transition": on_transition,
                "on_call": on_call,
            },
        )
        Hooks(on_transition, on_call, asynchronous=True)  # refuse bad hooks now, not at the first get()
        self._closing: set[asyncio.Task[None]] = set()
        self.fallback = fallback

    @overload
    async def call(
        self,
        service: str,
        fn: Callable[..., Coroutine[Any, Any, T]],
        /,
        *args: Any,
        fallback: Callable[[BaseException], T | Awaitable[T]] | None = None,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> T: ...

    @overload
    async def call(
        self,
        service: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        fallback: Callable[[BaseException], T | Awaitable[T]] | None = None,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> T: ...

    async def call(
        self,
        service: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        fallback: Callable[[BaseException], Any] | None = None,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> Any:
        """``await get(service).call(fn, ...)`` with the registry's default `fallback` when none is given."""
        return await self.get(service).call(
            fn, *args, fallback=fallback if fallback is not None else self.fallback, timeout=timeout, **kwargs
        )

    def protect(
        self,
        service: str,
        *,
        fallback: Callable[[BaseException], Any] | None = None,
        timeout: float | timedelta | None = None,
        bulkhead: Bulkhead | None = None,
    ) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
        """A decorator for ``async def``: every call goes through `service`'s breaker (looked up
        per call), with `fallback` or else the registry's default, and `timeout`.

        Args:
            bulkhead: a `distbreaker.asyncio.Bulkhead` each call also holds a slot of, inside the
                breaker, as in `Breaker.protect`: an open breaker refuses first; a full bulkhead
                raises `BulkheadFullError` (given to the fallback, if any), which the breaker
                does not count.

        .. versionchanged:: 0.3.0 `bulkhead`.
        """
        validate_service(service)
        check_timeout(timeout)
        if bulkhead is not None and not isinstance(bulkhead, Bulkhead):
            raise TypeError(f"bulkhead must be a distbreaker.asyncio.Bulkhead, got {bulkhead!r}")

        def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} is not a coroutine function")

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return await self.get(service)._protected(
                    functools.partial(fn, *args, **kwargs),
                    fallback if fallback is not None else self.fallback,
                    timeout,
                    bulkhead,
                )

            return wrapper

        return decorate

    def get(self, service: str) -> Breaker:
        """The breaker of `service` (no I/O: a plain method)."""
        breaker, evicted = self._get(service)
        for old in evicted:  # stop listening in the background; keep a reference until done
            task = asyncio.get_running_loop().create_task(old.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return breaker

    async def close(self) -> None:
        """Close every breaker (their listener task stops)."""
        for breaker in self._take_all():
            await breaker.close()
        if self._closing:
            await asyncio.gather(*self._closing)


class Admin(_Operations):
    """`distbreaker.Admin` for asyncio: the same reads and actions (the same steps, awaited).

    `doctor` is sync-only: it runs on `distbreaker.Admin` (as the CLI does), since its checks
    (SUBSCRIBE, per-command ACL probes) are an operator's one-off, not a service's.

    Args:
        redis: a `redis.asyncio.Redis` (or asyncio `RedisCluster`) client.
        prefix: key prefix. Default ``"distbreaker"``.

    .. versionadded:: 0.2.0
    """

    async def _do(self, service: str, steps: Steps[T]) -> T:
        try:
            return await adrive(self.redis, steps)
        except RedisError as exc:
            raise translate(exc, service) from exc

    async def list(self) -> builtins.list[str]:
        """Services of every breaker under the prefix, sorted (SCAN with a large COUNT; never KEYS)."""
        try:
            return self._found([k async for k in self.redis.scan_iter(match=self._match(), count=SCAN_COUNT)])
        except RedisError as exc:
            raise translate(exc) from exc

    async def inspect_all(self, services: Iterable[str] | None = None) -> Inspection:
        """See `distbreaker.Admin.inspect_all`.

        .. versionadded:: 0.3.0
        """
        names = await self.list() if services is None else self._names(services)
        try:
            result, _ = await _bulk.arun(self.redis, self._inspect_all_steps(names), _transport.apipeline)
        except RedisError as exc:
            raise translate(exc) from exc
        return cast(Inspection, result)

    async def load_functions(self) -> str:
        """See `distbreaker.Admin.load_functions`."""
        await self._do(_functions.LIBRARY_NAME, _functions.load_steps())
        return _functions.LIBRARY_NAME

    async def status(self, service: str) -> Snapshot:
        """See `distbreaker.Admin.status`."""
        return await self._do(service, self._status_steps(service))

    async def config(self, service: str) -> FleetConfig:
        """See `distbreaker.Admin.config`."""
        return await self._do(service, self._config_steps(service))

    async def inspect(self, service: str) -> tuple[Snapshot, FleetConfig]:
        """See `distbreaker.Admin.inspect`."""
        return await self._do(service, self._inspect_steps(service))

    async def set_config(
        self, service: str, *, actor: str | None = None, replace: bool = False, reason: str = "", **overrides: Any
    ) -> FleetConfig:
        """See `distbreaker.Admin.set_config`."""
        return await self._do(service, self._set_config_steps(service, actor, replace, reason, overrides))

    async def clear_config(self, service: str, *, actor: str | None = None, reason: str = "") -> FleetConfig:
        """See `distbreaker.Admin.clear_config`."""
        return await self._do(service, self._clear_config_steps(service, actor, reason))

    async def exists(self, service: str) -> bool:
        """See `distbreaker.Admin.exists`."""
        return await self._do(service, self._exists_steps(service))

    async def delete(self, service: str) -> bool:
        """See `distbreaker.Admin.delete`."""
        return await self._do(service, self._delete_steps(service))

    async def similar(self, service: str, n: int = 3) -> builtins.list[str]:
        """See `distbreaker.Admin.similar`."""
        return close_matches(service, await self.list(), n)

    async def trip(self, service: str, *, for_: Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """See `distbreaker.Admin.trip`."""
        return await self._do(service, self._control_steps(service, "trip", for_, reason, actor))

    async def disable(self, service: str, *, for_: Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """See `distbreaker.Admin.disable`."""
        return await self._do(service, self._control_steps(service, "disable", for_, reason, actor))

    async def reset(self, service: str, *, reason: str = "", actor: str | None = None) -> Snapshot:
        """See `distbreaker.Admin.reset`."""
        return await self._do(service, self._control_steps(service, "reset", None, reason, actor))

    async def history(self, service: str, n: int = 20) -> builtins.list[Transition]:
        """See `distbreaker.Admin.history`."""
        return (await self.events(service, n)).transitions

    async def events(self, service: str, n: int = 20) -> Events:
        """See `distbreaker.Admin.events`."""
        return await self._do(service, self._events_steps(service, n))
