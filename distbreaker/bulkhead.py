"""A fleet-wide bulkhead: at most `max_concurrent` calls at once across every process.

Each admitted call holds a lease in Redis (``<prefix>:{<name>}:bulkhead``, a sorted set of
lease id -> expiry, one Cluster slot); a lease ends when the call ends, or at the latest
`lease_timeout` after it was granted, so a worker that dies mid-call gives its slot back by
itself. `lua/bulkhead.lua` grants, releases, renews and reads leases atomically (expired leases
are pruned by every grant). docs/bulkhead.md is the user's guide.

`Bulkhead` (sync) and `AsyncBulkhead` (``distbreaker.asyncio.Bulkhead``) are thin shells over
`_BulkheadCore`, which validates, builds the script requests, decodes replies and plans the
waits; the shells only do I/O.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, ParamSpec, TypeVar

from redis.exceptions import RedisError

from . import _functions
from ._bulk import arun, run, time_ms
from ._bulkhead_otel import BULKHEAD_INSTRUMENTS
from ._config import seconds
from ._core import _SERVICE, DEFAULT_PREFIX, Eval, client_id, key_name, text, validate_prefix, validate_service
from ._log import LIMITED
from ._scripts import OTHER_FUNCTIONS, OTHER_SCRIPTS, LuaScript, adrive, drive, eval_steps
from .errors import BulkheadFullError, ConfigError, translate

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "MAX_CONCURRENT",
    "MAX_LEASE_TIMEOUT",
    "MAX_WAIT",
    "AsyncBulkhead",
    "Bulkhead",
    "BulkheadState",
    "Lease",
    "abulkheads",
    "bulkhead_key",
    "bulkhead_name",
    "bulkhead_names",
    "bulkheads",
    "decode_state",
    "read_steps",
]

P = ParamSpec("P")
T = TypeVar("T")

MAX_CONCURRENT = 100_000  # the largest max_concurrent (lua/bulkhead.lua checks it too)
MAX_LEASE_TIMEOUT = 86_400.0  # seconds (1 day)
MAX_WAIT = 3_600.0  # seconds: the longest max_wait
DEFAULT_RETRY_AFTER = 0.1  # seconds: BulkheadFullError.retry_after when no lease expiry is known
FIRST_POLL = 0.005  # seconds: the first wait for a slot (max_wait > 0); doubles up to MAX_POLL
MAX_POLL = 0.25

_LEASE_IDS = itertools.count(1)  # per process (with client_id(), new after a fork): ids never repeat
_REASON_UNAVAILABLE = "redis unavailable"


def bulkhead_key(prefix: str, name: str) -> str:
    """The Redis key of bulkhead `name`: ``<prefix>:{<name>}:bulkhead`` (`name` is the hash tag)."""
    return f"{prefix}:{{{name}}}:bulkhead"


@dataclass(frozen=True, slots=True)
class Lease:
    """A slot held by one call (what ``with bulkhead as lease:`` gives).

    Attributes:
        bulkhead: the bulkhead's name.
        id: the lease id in Redis; ``""`` when the call was admitted without Redis
            (``on_redis_error="allow"`` during an outage): nothing to release or renew.
        expires_in: seconds from the grant until the lease expires (its `lease_timeout`).
    """

    bulkhead: str
    id: str
    expires_in: float


@dataclass(frozen=True, slots=True)
class BulkheadState:
    """A bulkhead as Redis holds it (`Bulkhead.state`, `bulkheads`, ``distbreaker bulkheads``,
    the exporter).

    Attributes:
        name: the bulkhead's name.
        in_use: live leases fleet-wide.
        max_concurrent: the limit of the last grant (None: no grant recorded).
        next_expiry: seconds until the earliest live lease expires (None: no live lease).
        lease_timeout: seconds, the `lease_timeout` of the last grant (None: not recorded, e.g.
            granted by a client older than this field).

    .. versionchanged:: 0.3.0 `lease_timeout`.
    """

    name: str
    in_use: int
    max_concurrent: int | None
    next_expiry: float | None
    lease_timeout: float | None = None


def _positive_seconds(value: Any, name: str, low: float, high: float) -> float:
    limit = seconds(value, name)
    if limit is None or not (math.isfinite(limit) and low <= limit <= high):
        raise ConfigError(name, f"must be a finite duration in [{low:g}, {high:g}] seconds, got {value!r}")
    return limit


def _int(value: Any) -> int:
    return int(text(value))


class _BulkheadCore:
    """Everything but the I/O: validation, requests, replies, waits, counts, metrics."""

    def __init__(
        self,
        name: str,
        redis: Any,
        max_concurrent: Any,
        lease_timeout: Any,
        max_wait: Any,
        prefix: Any,
        on_redis_error: Any,
    ) -> None:
        try:
            self.name = validate_service(name)
        except ConfigError:
            raise ConfigError("name", f"must be 1-128 characters of A-Z a-z 0-9 . _ : -, got {name!r}") from None
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise ConfigError("max_concurrent", f"must be an int, got {max_concurrent!r}")
        if not 1 <= max_concurrent <= MAX_CONCURRENT:
            raise ConfigError("max_concurrent", f"must be in [1, {MAX_CONCURRENT}], got {max_concurrent!r}")
        self.max_concurrent: int = max_concurrent
        self.lease_timeout = _positive_seconds(lease_timeout, "lease_timeout", 0.001, MAX_LEASE_TIMEOUT)
        self.max_wait = _positive_seconds(max_wait, "max_wait", 0.0, MAX_WAIT)
        if on_redis_error not in ("allow", "reject"):
            raise ConfigError("on_redis_error", f"must be 'allow' or 'reject', got {on_redis_error!r}")
        self.on_redis_error: Literal["allow", "reject"] = on_redis_error
        self.prefix = validate_prefix(prefix)
        self.key = bulkhead_key(self.prefix, self.name)
        self.script: LuaScript = (OTHER_FUNCTIONS if _functions.functions_enabled(redis) else OTHER_SCRIPTS)["bulkhead"]
        self._lease_ms = str(max(1, round(self.lease_timeout * 1000)))
        self._max = str(max_concurrent)
        self._lock = threading.Lock()
        self._held = 0

    # -- requests ---------------------------------------------------------------------------
    def _eval(self, *args: str) -> Eval:
        return Eval(self.script, (self.key,), list(args), None)

    def acquire_request(self) -> tuple[str, Eval]:
        """A new lease id and the request that asks for it."""
        lease_id = f"{client_id()}:{next(_LEASE_IDS)}"
        return lease_id, self._eval("acquire", "", self._max, self._lease_ms, lease_id)

    def release_request(self, lease: Lease) -> Eval | None:
        return self._eval("release", "", lease.id) if lease.id else None

    def renew_request(self, lease: Lease) -> Eval | None:
        return self._eval("renew", "", self._lease_ms, lease.id) if lease.id else None

    def read_request(self) -> Eval:
        return self._eval("read", "")

    # -- replies ----------------------------------------------------------------------------
    def granted(self, lease_id: str, reply: Sequence[Any]) -> Lease | BulkheadFullError:
        """The lease, or the error to raise (or to wait on)."""
        ok, live, earliest, now = (_int(v) for v in reply[:4])
        if ok:
            self._count(1)
            return Lease(self.name, lease_id, self.lease_timeout)
        retry = (earliest - now) / 1000 if earliest > now else DEFAULT_RETRY_AFTER
        return BulkheadFullError(self.name, self.max_concurrent, live, retry)

    def degraded(self, exc: RedisError) -> Lease:
        """Redis failed on acquire: a lease held nowhere (allow), or raise (reject)."""
        LIMITED.log(
            logging.WARNING,
            ("bulkhead", self.name, "acquire"),
            "distbreaker: bulkhead %r could not reach Redis (%s); on_redis_error=%r: the call %s",
            self.name,
            translate(exc, self.name),
            self.on_redis_error,
            "runs without a slot" if self.on_redis_error == "allow" else "is refused",
        )
        if self.on_redis_error == "reject":
            raise self.rejected(
                BulkheadFullError(self.name, self.max_concurrent, None, DEFAULT_RETRY_AFTER, _REASON_UNAVAILABLE)
            )
        self._count(1)
        return Lease(self.name, "", self.lease_timeout)

    def released(self, lease: Lease, exc: RedisError | None = None) -> None:
        self._count(-1)
        if exc is not None:
            LIMITED.log(
                logging.WARNING,
                ("bulkhead", self.name, "release"),
                "distbreaker: bulkhead %r could not release a lease (%s): its slot comes back when it "
                "expires, at most %gs after it was granted",
                self.name,
                translate(exc, self.name),
                self.lease_timeout,
            )

    def renewed(self, reply: Sequence[Any]) -> bool:
        return bool(_int(reply[0]))

    def state(self, reply: Sequence[Any]) -> BulkheadState:
        return decode_state(self.name, reply)

    def rejected(self, err: BulkheadFullError) -> BulkheadFullError:
        BULKHEAD_INSTRUMENTS.rejected(self.name, err.reason)
        return err

    def _count(self, n: int) -> None:
        with self._lock:
            self._held += n

    @property
    def held(self) -> int:
        return self._held

    # -- waiting ----------------------------------------------------------------------------
    def waits(self) -> Generator[float, BulkheadFullError, None]:
        """Yields how long to sleep before the next try, given the last refusal; returns when
        `max_wait` is spent (the caller then raises the last refusal)."""
        deadline = time.monotonic() + self.max_wait
        poll = FIRST_POLL
        err = yield 0.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # a slot frees when a call ends (any time) or a lease expires (retry_after at most)
            err = yield min(left, err.retry_after, poll * random.uniform(0.5, 1.0))
            poll = min(poll * 2, MAX_POLL)


def decode_state(name: str, reply: Sequence[Any]) -> BulkheadState:
    """A `BulkheadState` from the reply of the script's ``read`` (or what `read_steps` makes of
    plain reads): live leases, max_concurrent (0 = unknown), earliest expiry (ms, 0 = none),
    now (ms), and lease_timeout (ms, 0 = unknown; absent from scripts older than it)."""
    live, max_c, earliest, now = (_int(v) for v in reply[:4])
    lease_ms = _int(reply[4]) if len(reply) > 4 else 0
    return BulkheadState(
        name,
        live,
        max_c or None,
        (earliest - now) / 1000 if earliest > now else None,
        lease_ms / 1000 if lease_ms > 0 else None,
    )


def _check_kind(fn: Any, want_coroutine: bool) -> None:
    if inspect.iscoroutinefunction(fn) != want_coroutine:
        which = "distbreaker.asyncio.Bulkhead" if not want_coroutine else "distbreaker.Bulkhead"
        raise TypeError(
            f"{getattr(fn, '__qualname__', fn)!r} is {'a' if not want_coroutine else 'not a'} coroutine "
            f"function: decorate it with {which}"
        )


class _Shell:
    _core: _BulkheadCore

    def __init__(
        self,
        name: str,
        redis: Any,
        *,
        max_concurrent: int,
        lease_timeout: float | timedelta = 60.0,
        max_wait: float | timedelta = 0.0,
        prefix: str = DEFAULT_PREFIX,
        on_redis_error: Literal["allow", "reject"] = "allow",
    ) -> None:
        self._core = core = _BulkheadCore(name, redis, max_concurrent, lease_timeout, max_wait, prefix, on_redis_error)
        self.name, self.redis, self.prefix = core.name, redis, core.prefix
        self.max_concurrent, self.lease_timeout, self.max_wait = core.max_concurrent, core.lease_timeout, core.max_wait
        self.on_redis_error = core.on_redis_error
        self._leases: ContextVar[tuple[Lease, ...]] = ContextVar(f"distbreaker_bulkhead_{core.name}", default=())
        BULKHEAD_INSTRUMENTS.register(self)

    @property
    def held(self) -> int:
        """Slots held by this process's calls through this object now."""
        return self._core.held

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, max_concurrent={self.max_concurrent})"

    def _push(self, lease: Lease) -> Lease:
        self._leases.set((*self._leases.get(), lease))
        return lease

    def _pop(self) -> Lease:
        stack = self._leases.get()
        if not stack:
            raise RuntimeError(f"bulkhead {self.name!r}: exit without a matching enter")
        self._leases.set(stack[:-1])
        return stack[-1]


class Bulkhead(_Shell):
    """At most `max_concurrent` calls at once through this bulkhead, fleet-wide (state in Redis).

        payments = Bulkhead("payments", connect(url), max_concurrent=50, lease_timeout=30)

        @payments
        def charge(order): ...

        with payments:          # or: with payments as lease: (a `Lease`)
            ...

        payments.call(charge, order)

    A call takes a lease (one round trip) and gives it back when it ends (one more). With no
    free slot it raises `BulkheadFullError` at once, or after waiting up to `max_wait` seconds
    for one (polling with backoff).

    Args:
        name: 1-128 characters of ``[A-Za-z0-9._:-]``; processes using the same name (and
            prefix) share the slots. A breaker may have the same name.
        redis: a `redis.Redis` (or Cluster) client, e.g. `distbreaker.connect(url)`.
        max_concurrent: slots fleet-wide, 1-100000. Each process enforces its own value: give
            every process the same one.
        lease_timeout: seconds (or a timedelta) after which a lease expires if its call has not
            ended (a worker died, or the call is still running): make it longer than your longest
            call, or call `renew` during it. 0.001 s - 1 day. Default 60.
        max_wait: wait up to this many seconds for a slot (0, the default: refuse at once).
            At most 3600.
        prefix: key prefix in Redis. Default ``"distbreaker"``.
        on_redis_error: when Redis cannot be reached on acquire: ``"allow"`` (default) runs the
            call without a slot (logged, rate-limited); ``"reject"`` raises `BulkheadFullError`
            with reason ``"redis unavailable"``.
    """

    DEFAULT_RETRY_AFTER = DEFAULT_RETRY_AFTER

    def __init__(
        self,
        name: str,
        redis: Any,
        *,
        max_concurrent: int,
        lease_timeout: float | timedelta = 60.0,
        max_wait: float | timedelta = 0.0,
        prefix: str = DEFAULT_PREFIX,
        on_redis_error: Literal["allow", "reject"] = "allow",
    ) -> None:
        from ._transport import check_client

        check_client(redis, asynchronous=False)
        super().__init__(
            name,
            redis,
            max_concurrent=max_concurrent,
            lease_timeout=lease_timeout,
            max_wait=max_wait,
            prefix=prefix,
            on_redis_error=on_redis_error,
        )

    def _run(self, request: Eval) -> Any:
        return drive(self.redis, eval_steps(request))

    def acquire(self) -> Lease:
        """Take a slot (waiting up to `max_wait`); give it back with `release`.

        Raises:
            BulkheadFullError: no slot was free (within `max_wait`).
        """
        core = self._core
        waits = core.waits()
        pause = next(waits)
        while True:
            if pause:
                time.sleep(pause)
            lease_id, request = core.acquire_request()
            try:
                reply = self._run(request)
            except RedisError as exc:
                return core.degraded(exc)
            got = core.granted(lease_id, reply)
            if isinstance(got, Lease):
                return got
            try:
                pause = waits.send(got)
            except StopIteration:
                raise core.rejected(got) from None

    def release(self, lease: Lease) -> None:
        """Give `lease`'s slot back (a Redis error is logged: the lease then expires)."""
        request = self._core.release_request(lease)
        error: RedisError | None = None
        if request is not None:
            try:
                self._run(request)
            except RedisError as exc:
                error = exc
        self._core.released(lease, error)

    def renew(self, lease: Lease) -> bool:
        """Push `lease`'s expiry to `lease_timeout` from now; False when it had already expired
        (its slot may be someone else's now) or was granted without Redis."""
        request = self._core.renew_request(lease)
        if request is None:
            return False
        try:
            return self._core.renewed(self._run(request))
        except RedisError as exc:
            raise translate(exc, self.name) from exc

    def state(self) -> BulkheadState:
        """Read the bulkhead from Redis (one round trip; writes nothing)."""
        try:
            return self._core.state(self._run(self._core.read_request()))
        except RedisError as exc:
            raise translate(exc, self.name) from exc

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` holding a slot.

        Raises:
            BulkheadFullError: no slot was free (within `max_wait`); `fn` did not run.
        """
        lease = self.acquire()
        try:
            return fn(*args, **kwargs)
        finally:
            self.release(lease)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate `fn` so that every call holds a slot."""
        _check_kind(fn, want_coroutine=False)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.call(fn, *args, **kwargs)

        return wrapper

    def __enter__(self) -> Lease:
        return self._push(self.acquire())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.release(self._pop())


class AsyncBulkhead(_Shell):
    """`Bulkhead` for asyncio (``distbreaker.asyncio.Bulkhead``), over a `redis.asyncio` client:
    ``async with``, an async decorator, ``await bulkhead.call(fn, ...)``; same arguments."""

    DEFAULT_RETRY_AFTER = DEFAULT_RETRY_AFTER

    def __init__(
        self,
        name: str,
        redis: Any,
        *,
        max_concurrent: int,
        lease_timeout: float | timedelta = 60.0,
        max_wait: float | timedelta = 0.0,
        prefix: str = DEFAULT_PREFIX,
        on_redis_error: Literal["allow", "reject"] = "allow",
    ) -> None:
        from ._transport import check_client

        check_client(redis, asynchronous=True)
        super().__init__(
            name,
            redis,
            max_concurrent=max_concurrent,
            lease_timeout=lease_timeout,
            max_wait=max_wait,
            prefix=prefix,
            on_redis_error=on_redis_error,
        )

    async def _run(self, request: Eval) -> Any:
        return await adrive(self.redis, eval_steps(request))

    async def acquire(self) -> Lease:
        """Take a slot (waiting up to `max_wait`); give it back with `release`.

        Raises:
            BulkheadFullError: no slot was free (within `max_wait`).
        """
        core = self._core
        waits = core.waits()
        pause = next(waits)
        while True:
            if pause:
                await asyncio.sleep(pause)
            lease_id, request = core.acquire_request()
            try:
                reply = await self._run(request)
            except RedisError as exc:
                return core.degraded(exc)
            got = core.granted(lease_id, reply)
            if isinstance(got, Lease):
                return got
            try:
                pause = waits.send(got)
            except StopIteration:
                raise core.rejected(got) from None

    async def release(self, lease: Lease) -> None:
        """Give `lease`'s slot back (a Redis error is logged: the lease then expires)."""
        request = self._core.release_request(lease)
        error: RedisError | None = None
        if request is not None:
            try:
                await self._run(request)
            except RedisError as exc:
                error = exc
        self._core.released(lease, error)

    async def renew(self, lease: Lease) -> bool:
        """As `Bulkhead.renew`."""
        request = self._core.renew_request(lease)
        if request is None:
            return False
        try:
            return self._core.renewed(await self._run(request))
        except RedisError as exc:
            raise translate(exc, self.name) from exc

    async def state(self) -> BulkheadState:
        """Read the bulkhead from Redis (one round trip; writes nothing)."""
        try:
            return self._core.state(await self._run(self._core.read_request()))
        except RedisError as exc:
            raise translate(exc, self.name) from exc

    async def call(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` holding a slot.

        Raises:
            BulkheadFullError: no slot was free (within `max_wait`); `fn` did not run.
        """
        lease = await self.acquire()
        try:
            return await fn(*args, **kwargs)
        finally:
            # a cancelled call still gives its slot back
            await asyncio.shield(self.release(lease))

    def __call__(self, fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        """Decorate the coroutine function `fn` so that every call holds a slot."""
        _check_kind(fn, want_coroutine=True)

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.call(fn, *args, **kwargs)

        return wrapper

    async def __aenter__(self) -> Lease:
        return self._push(await self.acquire())

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        await asyncio.shield(self.release(self._pop()))


# -- the fleet's view (the CLI's `distbreaker bulkheads`, the exporter) ------------------------
def bulkhead_name(prefix: str, key: str) -> str | None:
    """The bulkhead of `key` (``<prefix>:{<name>}:bulkhead``), or None for any other key."""
    head, tail = f"{prefix}:{{", "}:bulkhead"
    if key.startswith(head) and key.endswith(tail):
        name = key[len(head) : -len(tail)]
        if _SERVICE.fullmatch(name):
            return name
    return None


def _score(value: Any) -> int:
    """A ZSCORE reply in ms (0 = absent), negated back (the 'max'/'lease' members are stored < 0)."""
    return 0 if value is None else -int(float(text(value)))


def _first_score(reply: Any) -> int:
    """The score of a ``ZRANGEBYSCORE ... WITHSCORES LIMIT 0 1`` reply (RESP2 flat, RESP3 pairs)."""
    if not reply:
        return 0
    first = reply[0]
    score = first[1] if isinstance(first, (list, tuple)) else reply[1]
    return int(float(text(score)))


def read_steps(
    prefix: str, names: Sequence[str], *, now_ms: int | None = None
) -> Generator[list[tuple[Any, ...]], list[Any], list[BulkheadState | Exception]]:
    """Read the bulkheads `names` with plain commands, no script: what the script's ``read``
    returns, at the server's time. Yields two pipelines (``TIME``; then per bulkhead a
    ``ZCOUNT`` of the leases live at that time, the ``ZSCORE`` of 'max' and of 'lease', the
    earliest live expiry), receives their replies (errors as values), returns a
    `BulkheadState` or the error of each name, in order. Run it with `_bulk.run` / `arun`.
    `now_ms` replaces TIME (tests: the script's ``read`` takes the same override).
    """
    if not names:
        return []
    if now_ms is None:
        replies = yield [("TIME",)]
        if isinstance(replies[0], Exception):
            raise replies[0]
        now = time_ms(replies[0])
    else:
        now = now_ms
    after = f"({now}"  # live: expiry > now (bulkhead.lua prunes expiry <= now)
    commands: list[tuple[Any, ...]] = []
    for name in names:
        key = bulkhead_key(prefix, name)
        commands += [
            ("ZCOUNT", key, after, "+inf"),
            ("ZSCORE", key, "max"),
            ("ZSCORE", key, "lease"),
            ("ZRANGEBYSCORE", key, after, "+inf", "WITHSCORES", "LIMIT", 0, 1),
        ]
    replies = yield commands
    out: list[BulkheadState | Exception] = []
    for i, name in enumerate(names):
        live, max_c, lease, first = replies[4 * i : 4 * i + 4]
        error = next((r for r in (live, max_c, lease, first) if isinstance(r, Exception)), None)
        if error is not None:
            out.append(error)
            continue
        try:
            reply = [int(live), _score(max_c), _first_score(first), now, _score(lease)]
        except (ValueError, TypeError, IndexError) as exc:
            out.append(ValueError(f"{bulkhead_key(prefix, name)}: not a bulkhead's sorted set ({exc})"))
            continue
        out.append(decode_state(name, reply))
    return out


def _found(prefix: str, read: list[BulkheadState | Exception]) -> list[BulkheadState]:
    for state in read:
        if isinstance(state, RedisError):
            raise translate(state, prefix) from state
        if isinstance(state, Exception):
            raise state
    return [s for s in read if isinstance(s, BulkheadState)]


def bulkheads(redis: Any, prefix: str = DEFAULT_PREFIX) -> list[BulkheadState]:
    """Every bulkhead under `prefix` with state in Redis (a grant in the last 7 days), sorted by
    name: one SCAN, then `read_steps` (two pipelines, no script).

    Raises:
        BackendError: Redis failed (`RedisUnavailableError`, `AccessDeniedError`, ...).
    """
    prefix = validate_prefix(prefix)
    try:
        names = _names(prefix, (key_name(k) for k in redis.scan_iter(match=f"{prefix}:{{*}}:bulkhead", count=1000)))
        read = run(redis, read_steps(prefix, names))[0]
    except RedisError as exc:
        raise translate(exc, prefix) from exc
    return _found(prefix, read)


async def abulkheads(redis: Any, prefix: str = DEFAULT_PREFIX) -> list[BulkheadState]:
    """`bulkheads` over a `redis.asyncio` client."""
    prefix = validate_prefix(prefix)
    try:
        names = _names(
            prefix, [key_name(k) async for k in redis.scan_iter(match=f"{prefix}:{{*}}:bulkhead", count=1000)]
        )
        read = (await arun(redis, read_steps(prefix, names)))[0]
    except RedisError as exc:
        raise translate(exc, prefix) from exc
    return _found(prefix, read)


def bulkhead_names(redis: Any, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The names of every bulkhead under `prefix`, sorted: one SCAN, nothing read (``distbreaker
    status`` counts them).

    Raises:
        BackendError: Redis failed.
    """
    prefix = validate_prefix(prefix)
    try:
        return _names(prefix, (key_name(k) for k in redis.scan_iter(match=f"{prefix}:{{*}}:bulkhead", count=1000)))
    except RedisError as exc:
        raise translate(exc, prefix) from exc


def _names(prefix: str, keys: Iterable[str]) -> list[str]:
    """The bulkhead names of `keys` (SCAN's glob also matches keys no bulkhead would have)."""
    return sorted({name for name in (bulkhead_name(prefix, key) for key in keys) if name is not None})
