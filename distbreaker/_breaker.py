"""The sync Breaker: a thin shell over the sans-IO core (`_core.BreakerCore`); it only does I/O."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from time import perf_counter
from typing import Any, Literal, ParamSpec, TypeVar, cast

from redis.exceptions import RedisError, ResponseError

from . import _arg_checks, _schema
from ._action_steps import control_steps, snapshot_steps
from ._batch import sync_flusher
from ._config import BreakerConfig
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
)
from ._hooks import CallHook, Hooks, TransitionHook
from ._listener import sync_listener
from ._model import Outcome, Snapshot, State
from ._nesting import INSIDE
from ._reporters import standard_reporters
from ._scripts import Steps, drive, eval_steps, scripts_for
from ._timeout import check_timeout, run_within
from ._transport import check_client, lane_for
from .bulkhead import Bulkhead
from .errors import BulkheadFullError, CallTimeoutError, CircuitOpenError, translate

__all__ = ["Breaker"]

P = ParamSpec("P")
T = TypeVar("T")


class Breaker:
    """A circuit breaker whose state is shared, through Redis, by every process that uses it.

    Use it as a decorator, a context manager, or with `call`:

        payments = Breaker("payments", connect("redis://localhost:6379/0"))

        @payments
        def charge(order): ...

        with payments as call:   # `call` (a CallHandle) may mark the outcome: call.failure()
            ...

        payments.call(charge, order, fallback=lambda exc: queued(order))

    Args:
        service: the breaker's name, 1-128 characters of ``[A-Za-z0-9._:-]``.
        redis: a `redis.Redis` client; `distbreaker.connect` makes one with timeouts that
            fit the budget (`redis_timeout`).
        config: thresholds and timings (`BreakerConfig()` by default).
        prefix: key prefix in Redis. Default ``"distbreaker"``.
        clock: for tests only: a callable returning seconds; it replaces both the local
            monotonic clock and the Redis server clock.
        listen: apply transitions published by other processes as they happen (one pub/sub
            thread per process and client, shared by its breakers). Default True; without it
            a worker learns of them within `max_staleness`.
        mode: ``"sync"`` (default): one round trip records each admitted call, counts exact.
            ``"batched"``: outcomes are summed locally and sent by one background thread per
            process every `flush_interval` seconds (or at `flush_size` outcomes): a few µs per
            call; a trip is detected within about one interval. Probes stay synchronous.
            Call `close()` (or let the interpreter exit normally) to flush the rest.
        flush_interval: seconds between flushes in batched mode. Default 0.1.
        flush_size: flush at once when this many outcomes wait. Default 1000.
        on_transition: a function (or several) called with a `Transition` once per transition
            this process learns of: made by its own calls, or by other processes and operators
            (through pub/sub, with `listen`). Runs on the thread that learnt it; keep it fast.
            An exception is logged, never raised. A coroutine function raises `TypeError`
            (use `distbreaker.asyncio.Breaker`).
        on_call: a function (or several) called with a `CallDetails` after every call
            (admitted or rejected), on the calling thread. Same rules as `on_transition`.
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
        hooks = Hooks(on_transition, on_call, asynchronous=False)
        self._core = core = BreakerCore(service, config, prefix, clock, scripts_for(redis), hooks, standard_reporters())
        self.service, self.prefix, self.config, self.redis = core.service, core.prefix, core.config, redis
        self._stack = PermitStack()
        check_client(redis, asynchronous=False)  # an asyncio client here is refused, saying what to pass
        # the lane speaks EVALSHA; scripts run as Redis Functions (FCALL) go through drive()
        self._lane = None if any(s.function for s in core.scripts.values()) else lane_for(redis)
        _arg_checks.check_client_budget(redis, core.config)
        self._listener = sync_listener(redis) if listen else None
        if self._listener is not None:
            self._listener.add(core)
        self.mode, self.flush_interval = _arg_checks.check_mode(mode, flush_interval, flush_size)
        self._flusher = None
        if mode == "batched":
            self._flush_lock = threading.Lock()
            self._flusher = sync_flusher()
            core.batched(flush_size)
            self._flusher.add(self)

    def flush(self) -> None:
        """Send the outcomes summed locally (batched mode); those that fail stay for the next flush."""
        core = self._core
        if core.batch is None:
            return
        with self._flush_lock:
            for batch_id, gen, request in core.flush_requests():
                try:
                    reply = self._run(request)
                except RedisError as exc:
                    core.flush_failed(batch_id, exc)
                    return  # in order: a later batch must not overtake a pending one
                core.flushed(batch_id, gen, reply)

    def close(self) -> None:
        """Flush what batched mode summed and stop listening (the listener thread ends with its
        client's last breaker, the flusher with the process's last batched breaker)."""
        if self._flusher is not None:
            self._flusher.remove(self)
            self.flush()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.remove(self._core)
            if not listener.routes.channels():
                listener.stop()
        self._core.close()

    def __repr__(self) -> str:
        return f"Breaker({self.service!r}, state={self._core.view.state or 'unknown'})"

    # -- the call path (I/O only; the core decides) ------------------------------------------
    def _run(self, request: Eval) -> Any:
        start = perf_counter()
        lane = self._lane
        if lane is not None and lane.on:
            try:
                reply = lane.run(request)  # the common call: one sendall, one recv (_transport.Lane)
            except ResponseError as exc:  # NOSCRIPT, NOCONFIG, ...: the steps take it from there
                reply = drive(self.redis, eval_steps(request), exc)
        else:
            reply = drive(self.redis, eval_steps(request))
        self._core.ran(request, start)
        return reply

    def _admit(self) -> Permit:
        permit = self._core.admit()
        if type(permit) is not Eval:
            return permit  # type: ignore[return-value]
        return self._ask(permit)

    def _ask(self, request: Eval) -> Permit:
        """Run the acquire `request` (the cache did not admit the call)."""
        core = self._core
        try:
            reply = self._run(request)
        except RedisError as exc:
            core.failed(exc)
            return core.degraded(core.clock())
        return core.acquired(reply)

    def _record(self, permit: Permit, outcome: Outcome, duration: float, exc: BaseException | None = None) -> None:
        core = self._core
        request = core.record(permit, outcome, duration)
        if request is FLUSH:
            self.flush()
        elif request is not None:
            try:
                reply = self._run(request)  # type: ignore[arg-type]
            except RedisError as err:
                core.failed(err)
            else:
                core.recorded(reply, permit[0])  # type: ignore[index]  # (a request: a permit of (generation, lease))
        core.finished(outcome, duration, exc)

    def call(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        fallback: Callable[[BaseException], T] | None = None,
        timeout: float | timedelta | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker.

        Args:
            fn: the protected function.
            fallback: called with the exception when the breaker rejects the call
                (`CircuitOpenError`) or the call fails (an exception that counts as a
                failure); its result is returned instead of raising. A value that
                `result_predicate` counts as a failure is returned as it is (no exception).
            timeout: seconds (or a timedelta) to wait for `fn`, which then runs in a new
                daemon thread (0.2-0.3 ms more per call). Past it, `CallTimeoutError` is
                raised (or given to `fallback`) and counts as a failure with a duration of at
                least `timeout`. Python cannot stop a running function: **the thread keeps
                running** until `fn` returns by itself, and its result is dropped; give `fn` its
                own timeouts (socket, HTTP client) to bound it. None (default): `fn` runs in
                the calling thread, with no limit.

        A call made from inside a call through this breaker (its `call` or a decorated
        function), in the same thread, runs directly: neither admitted nor counted again (the
        outer call counts once), and its `fallback` and `timeout` still apply. A ``with``
        block always takes its own permit.

        Raises:
            CircuitOpenError: the breaker is open and no fallback was given.
            CallTimeoutError: the call ran past `timeout` and no fallback was given.
        """
        limit = check_timeout(timeout) if timeout is not None else None
        inside = INSIDE.get()
        if self in inside:
            return self._nested(fn, args, kwargs, fallback, limit)
        core = self._core
        if fallback is None:  # a rejection goes straight up (caught and raised again, it costs more)
            admitted = core.admission()  # _admit() inline; the cache's rejection is raised from here
            if type(admitted) is CircuitOpenError:  # (type(): no global lookup and builtin call)
                raise admitted
            permit: Permit = self._ask(admitted) if type(admitted) is Eval else admitted  # type: ignore[assignment]
        else:
            try:
                permit = self._admit()
            except CircuitOpenError as exc:
                return fallback(exc)
        clock = core.clock
        start = clock()
        expired: CallTimeoutError | None = None
        result: Any
        try:
            token = INSIDE.set((*inside, self))
            try:
                if limit is None:
                    result = fn(*args, **kwargs)
                else:
                    done, result = run_within(limit, functools.partial(fn, *args, **kwargs), self.service)
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
            self._record(permit, outcome, took, exc)
            if fallback is not None and outcome == FAILURE:
                return fallback(exc)
            raise
        config = self.config  # no predicate (the common call): no function call
        outcome = SUCCESS if config.result_predicate is None else classify_result(config, result, self.service)
        self._record(permit, outcome, clock() - start)
        return result  # type: ignore[no-any-return]

    def _nested(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        fallback: Callable[[BaseException], T] | None,
        limit: float | None,
    ) -> T:
        """A call inside a call through this breaker: run it directly (the outer call counts)."""
        try:
            if limit is None:
                return fn(*args, **kwargs)
            done, result = run_within(limit, functools.partial(fn, *args, **kwargs), self.service)
            if not done:
                raise CallTimeoutError(self.service, limit)
            return cast(T, result)
        except BaseException as exc:
            if fallback is not None and (
                isinstance(exc, CallTimeoutError) or classify(self.config, exc, self.service) == FAILURE
            ):
                return fallback(exc)
            raise

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate `fn` so that every call goes through the breaker."""
        return self.protect()(fn)

    def protect(
        self,
        *,
        fallback: Callable[[BaseException], Any] | None = None,
        timeout: float | timedelta | None = None,
        bulkhead: Bulkhead | None = None,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """A decorator like ``@breaker``, with options: ``@breaker.protect(fallback=..., timeout=2.0)``.

        Args:
            fallback: called with the exception when the breaker rejects a call or a call
                fails (as in `call`); its result is returned instead of raising.
            timeout: stop waiting for each call after this many seconds (as in `call`: the
                function runs in a worker thread that is left running). None: no limit.
            bulkhead: a `Bulkhead` each call also holds a slot of, inside the breaker: an open
                breaker refuses first (the bulkhead is not asked); a full bulkhead raises
                `BulkheadFullError` (given to `fallback`, if any), which the breaker does not
                count. `timeout` includes the bulkhead's `max_wait`. docs/bulkhead.md.

        The decorated function's own keyword arguments are passed through untouched (even ones
        named ``fallback`` or ``timeout``).
        """
        check_timeout(timeout)
        if bulkhead is not None and not isinstance(bulkhead, Bulkhead):
            raise TypeError(f"bulkhead must be a distbreaker.Bulkhead, got {bulkhead!r}")

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if inspect.iscoroutinefunction(fn):
                raise TypeError(
                    f"{fn.__qualname__} is a coroutine function: decorate it with "
                    "distbreaker.asyncio.Breaker, not distbreaker.Breaker"
                )

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return self._protected(functools.partial(fn, *args, **kwargs), fallback, timeout, bulkhead)

            return wrapper

        return decorate

    def _protected(
        self,
        target: Callable[[], T],
        fallback: Callable[[BaseException], Any] | None,
        timeout: float | timedelta | None,
        bulkhead: Bulkhead | None,
    ) -> T:
        """One call of `protect`'s wrapper (also `BreakerRegistry.protect`'s): through the breaker,
        and through `bulkhead` inside it when given."""
        if bulkhead is None:
            result: T = self.call(target, fallback=fallback, timeout=timeout)
            return result
        try:
            held: T = self.call(bulkhead.call, target, fallback=fallback, timeout=timeout)
            return held
        except BulkheadFullError as exc:  # not counted by the breaker
            if fallback is None:
                raise
            return cast(T, fallback(exc))

    def allows(self) -> bool:
        """False when the local cache alone rejects a call now (open, forced open); no I/O.

        True does not promise admission: a half-open breaker, or a stale cache, asks Redis.
        """
        return self._core.allows()

    def __enter__(self) -> CallHandle:
        """Admit a call; the block may mark its outcome on what this returns (`CallHandle`)."""
        call = CallHandle(self.service, self.config, self._admit(), self._core.clock())
        self._stack.push(call)
        return call

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        permit, start, outcome = self._stack.pop(exc)
        self._record(permit, outcome, self._core.clock() - start, exc)

    # -- state and operator actions -----------------------------------------------------------
    def _do(self, steps: Steps[T]) -> T:
        try:
            return drive(self.redis, steps)
        except RedisError as exc:
            raise translate(exc, self.service) from exc

    def snapshot(self) -> Snapshot:
        """Read the shared state from Redis (one round trip)."""
        return self._do(snapshot_steps(self._core))

    @property
    def state(self) -> State:
        """The current state: from the local cache while fresh, else read from Redis."""
        return self._core.cached_state() or self.snapshot().state

    def trip(self, *, for_: float | Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force the breaker open fleet-wide, for `for_` seconds or a timedelta (None = until reset)."""
        return self._do(control_steps(self._core, "trip", for_, reason, actor))

    def disable(self, *, for_: float | Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force the breaker closed fleet-wide (outcomes still counted), for `for_` seconds."""
        return self._do(control_steps(self._core, "disable", for_, reason, actor))

    def reset(self, *, reason: str = "", actor: str | None = None) -> Snapshot:
        """Return the breaker to closed with an empty window, clearing any forced state."""
        return self._do(control_steps(self._core, "reset", None, reason, actor))


def swap_lane(breaker: Any, lane: Any) -> Any:
    """The documented internal hook of the benchmarks (docs/benchmarks.md, "At the floor"): give a
    Breaker, sync or asyncio, another send lane, and return the one it had. ``None`` sends its
    call-path scripts through redis-py's connection I/O (as before the lanes); an object with the
    lane's interface (sync: ``on`` and ``run(request)``; asyncio: ``request(request)``, a
    future) answers from memory, so the call's own Python work can be profiled without I/O.
    Not public API: no compatibility promise beyond the benchmarks of this checkout."""
    old = breaker._lane
    breaker._lane = lane
    return old
