"""Failover: an ordered chain of providers, each protected by its own distributed breaker.

A call tries the providers one after the other, in the order the strategy gives, until one
succeeds. A provider whose breaker is open is skipped by the breaker's local admission, with no
Redis round trip; a provider that fails (an exception its breaker counts as a failure) hands the
call to the next one. When every provider failed or was skipped, `FailoverError` lists each
provider's reason:

    from distbreaker import Breaker
    from distbreaker.toolkit.failover import Failover, Provider

    geocode = Failover([
        Provider(Breaker("geo-primary", r), primary.lookup),
        Provider(Breaker("geo-backup", r), backup.lookup),
    ], strategy="priority")
    place = geocode.call("10 Downing St")

`AsyncFailover` is the same over `distbreaker.asyncio.Breaker` (providers sync or async).

Every switch from one provider to the next (the first was rejected or failed) calls the
``on_failover`` hook with a `FailoverEvent` and adds one to the OpenTelemetry counter
``distbreaker.failovers`` {from, to} (made on first use, like the breakers' instruments).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar, cast

from .._core import FAILURE, classify, classify_result
from .._log import LIMITED
from .._timeout import check_timeout
from ..errors import CircuitOpenError, ConfigError, DistbreakerError, FailoverError

__all__ = [
    "FAILOVERS",
    "STRATEGIES",
    "AsyncFailover",
    "Failover",
    "FailedResult",
    "FailoverEvent",
    "FailoverHook",
    "Provider",
    "Strategy",
]

T = TypeVar("T")

Strategy = Literal["priority", "round_robin", "random", "fastest", "weighted"]
STRATEGIES: tuple[str, ...] = ("priority", "round_robin", "random", "fastest", "weighted")

FAILOVERS = "distbreaker.failovers"  # OTel counter {from, to}: switches from one provider to the next


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """One switch of a failover call from a provider to the next.

    Attributes:
        from_provider: the provider that was rejected or failed.
        to_provider: the provider tried next.
        error: why: its `CircuitOpenError`, `CallTimeoutError`, or the exception it raised.

    .. versionadded:: 0.2.0
    """

    from_provider: str
    to_provider: str
    error: BaseException


FailoverHook = Callable[[FailoverEvent], object]


class FailedResult(DistbreakerError):
    """A provider returned a value that its breaker's `result_predicate` counts as a failure
    (e.g. a 503 response): the call moved on to the next provider. In `FailoverError.errors`
    and `FailoverEvent.error`.

    Attributes:
        provider: the provider's name.
        value: what it returned.

    .. versionadded:: 0.2.0
    """

    def __init__(self, provider: str, value: object) -> None:
        super().__init__(provider, value)
        self.provider, self.value = provider, value

    def __str__(self) -> str:
        return f"provider {self.provider!r} returned a failure: {self.value!r}"[:300]


def _failed_result(provider: Provider, value: object) -> FailedResult | None:
    """A `FailedResult` when the provider's `result_predicate` counts `value` as a failure."""
    config = provider.breaker.config
    if config.result_predicate is None or classify_result(config, value, provider.breaker.service) is not FAILURE:
        return None
    return FailedResult(provider.name, value)


class _Counter:
    """The ``distbreaker.failovers`` counter, made on first use from the breakers' meter provider."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: tuple[Any, Any] | None = None  # (provider it was made from, counter)

    def add(self, frm: str, to: str) -> None:
        from opentelemetry import metrics

        from .. import _otel

        if not _otel.INSTRUMENTS.on:
            return
        wanted = _otel.INSTRUMENTS._provider
        made = self._made
        if made is None or made[0] is not wanted:
            with self._lock:
                provider = wanted if wanted is not None else metrics.get_meter_provider()
                meter = provider.get_meter(_otel.METER_NAME, _otel._version())
                made = self._made = (
                    wanted,
                    meter.create_counter(
                        FAILOVERS, "{failover}", "Switches of a failover call from one provider to the next"
                    ),
                )
        made[1].add(1, {_otel.FROM: frm, _otel.TO: to})


_COUNTER = _Counter()


def _switched(hook: FailoverHook | None, frm: Provider, to: Provider, error: BaseException) -> object:
    """Count a switch and call the hook (its exception is logged, never raised); its result."""
    _COUNTER.add(frm.name, to.name)
    if hook is None:
        return None
    try:
        return hook(FailoverEvent(frm.name, to.name, error))
    except Exception:
        LIMITED.log(
            logging.WARNING, ("on_failover", id(hook)), "distbreaker: on_failover hook %r raised", hook, exc_info=True
        )
        return None


_ALPHA = 0.3  # weight of the newest sample in the latency average of "fastest"


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider of a failover chain.

    Args:
        breaker: its breaker (`distbreaker.Breaker` for `Failover`, `distbreaker.asyncio.Breaker`
            for `AsyncFailover`); one breaker per provider.
        fn: called with the arguments of `Failover.call`; sync, or for `AsyncFailover` also async.
        name: the provider's name in errors and results. Default: the breaker's service.
        probe: an optional health probe (no arguments) for `distbreaker.toolkit.health`.
        weight: its share of first tries under the ``"weighted"`` strategy (>= 0; 0 = tried
            only after every provider with a weight). Default 1.
    """

    breaker: Any
    fn: Callable[..., Any]
    name: str = ""
    probe: Callable[[], Any] | None = field(default=None, compare=False)
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"Provider fn must be callable, got {self.fn!r}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < float("inf"):
            raise ConfigError("weight", f"must be a finite number >= 0, got {w!r}")
        if not self.name:
            object.__setattr__(self, "name", self.breaker.service)


class _Chain:
    """The order of the providers for one call, and their observed latency (no I/O)."""

    def __init__(
        self, providers: Sequence[Provider | tuple[Any, Callable[..., Any]]], strategy: str, rng: random.Random | None
    ) -> None:
        items = [p if isinstance(p, Provider) else Provider(*p) for p in providers]
        if not items:
            raise ConfigError("providers", "needs at least one provider")
        names = [p.name for p in items]
        if len(set(names)) != len(names):
            raise ConfigError("providers", f"names must be unique, got {names}")
        if strategy not in STRATEGIES:
            raise ConfigError("strategy", f"must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        self.providers: tuple[Provider, ...] = tuple(items)
        self.strategy = strategy
        self._rng = rng if rng is not None else random.Random()
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._latency: dict[str, float] = {}

    def order(self) -> list[Provider]:
        providers, n = self.providers, len(self.providers)
        if self.strategy == "round_robin":
            start = next(self._turn) % n
            return [*providers[start:], *providers[:start]]
        if self.strategy == "random":
            with self._lock:  # random.Random is not documented as thread-safe
                return self._rng.sample(providers, n)
        if self.strategy == "weighted":  # weighted sampling without replacement (Efraimidis-Spirakis)
            with self._lock:
                keys = [self._rng.random() ** (1.0 / p.weight) if p.weight > 0 else -1.0 for p in providers]
            return [providers[i] for i in sorted(range(n), key=lambda i: -keys[i])]
        if self.strategy == "fastest":  # unmeasured first (so each gets measured), ties in priority order
            latency = self._latency
            return sorted(providers, key=lambda p: latency.get(p.name, -1.0))
        return list(providers)

    def observe(self, provider: Provider, seconds: float) -> None:
        with self._lock:
            old = self._latency.get(provider.name)
            self._latency[provider.name] = seconds if old is None else old + _ALPHA * (seconds - old)

    def latencies(self) -> dict[str, float | None]:
        return {p.name: self._latency.get(p.name) for p in self.providers}


def _moves_on(provider: Provider, exc: Exception) -> bool:
    """Whether `exc` from `provider` hands the call to the next provider."""
    return isinstance(exc, CircuitOpenError) or classify(provider.breaker.config, exc) == FAILURE


class _Base(Generic[T]):
    def __init__(
        self,
        providers: Sequence[Provider | tuple[Any, Callable[..., Any]]],
        strategy: str,
        fallback: Callable[[FailoverError], Any] | None,
        rng: random.Random | None,
        on_failover: Callable[[FailoverEvent], Any] | None,
        timeout: float | timedelta | None,
    ) -> None:
        self._chain = _Chain(providers, strategy, rng)
        self.fallback = fallback
        if on_failover is not None and not callable(on_failover):
            raise TypeError(f"on_failover must be callable, got {on_failover!r}")
        self.on_failover = on_failover
        self.timeout = check_timeout(timeout)

    @property
    def providers(self) -> tuple[Provider, ...]:
        """The providers, in priority order."""
        return self._chain.providers

    @property
    def strategy(self) -> str:
        """``"priority"``, ``"round_robin"``, ``"random"``, ``"fastest"`` or ``"weighted"``."""
        return self._chain.strategy

    def available(self) -> list[str]:
        """Names of the providers whose breaker does not reject from its local cache (no I/O)."""
        return [p.name for p in self._chain.providers if p.breaker.allows()]

    def latencies(self) -> dict[str, float | None]:
        """Average latency (seconds) of each provider's successful calls in this process (None:
        not measured yet); the ``"fastest"`` strategy orders by it."""
        return self._chain.latencies()


class Failover(_Base[T]):
    """Try providers in turn until one succeeds; each has its own `distbreaker.Breaker`.

    Strategies: ``"priority"`` (the given order), ``"round_robin"`` (the first provider rotates
    with every call; the others follow in order), ``"random"`` (a random order per call),
    ``"fastest"`` (ascending average latency of each provider's successful calls in this
    process; a provider not measured yet comes first, ties keep the given order), and
    ``"weighted"`` (a random order per call in which each provider comes first with a
    probability proportional to its `Provider.weight`, e.g. 3:1 for a 75/25 split; the rest
    follow, drawn by weight too).

    A provider is skipped when its breaker rejects the call (from the local cache: no Redis
    round trip), and left for the next one when it raises an exception its breaker counts as a
    failure, or returns a value its breaker's `result_predicate` counts as one (`FailedResult`
    in the errors; the predicate runs twice for such a value: in the breaker, and here). Any
    other exception (ignored, or not a failure by `failure_exceptions`) is the
    caller's and propagates at once.

    Args:
        providers: `Provider`s, or ``(breaker, fn)`` pairs, in priority order. Names (default:
            the breakers' services) must be unique.
        strategy: ``"priority"`` (default), ``"round_robin"``, ``"random"``, ``"fastest"`` or
            ``"weighted"``.
        fallback: called with the `FailoverError` when every provider failed; its result is
            returned instead of raising. Default None: raise.
        rng: the `random.Random` of the ``"random"`` and ``"weighted"`` strategies (for
            tests). Default: a new one.
        on_failover: called with a `FailoverEvent` at every switch to the next provider, in
            the calling thread, before that provider is tried; an exception is logged, never
            raised. Each switch is also counted by the OTel counter ``distbreaker.failovers``.
        timeout: each attempt's limit in seconds (`distbreaker.Breaker.call`'s `timeout`: the
            provider runs in a worker thread that is left running past it) and counts as a
            failure of its provider. Default None: no limit, the provider runs in the caller's
            thread.

    Raises:
        ConfigError: no providers, duplicate names, or an unknown strategy.
    """

    def __init__(
        self,
        providers: Sequence[Provider | tuple[Any, Callable[..., Any]]],
        *,
        strategy: Strategy = "priority",
        fallback: Callable[[FailoverError], T] | None = None,
        rng: random.Random | None = None,
        on_failover: FailoverHook | None = None,
        timeout: float | timedelta | None = None,
    ) -> None:
        super().__init__(providers, strategy, fallback, rng, on_failover, timeout)

    def call(self, *args: Any, **kwargs: Any) -> T:
        """Call the providers' ``fn(*args, **kwargs)`` in turn; return the first success.

        Raises:
            FailoverError: every provider failed or was rejected (and no fallback was given);
                `errors` maps each provider to its exception.
        """
        chain = self._chain
        errors: dict[str, BaseException] = {}
        last: tuple[Provider, BaseException] | None = None
        for provider in chain.order():
            if last is not None:
                _switched(self.on_failover, last[0], provider, last[1])
            start = time.perf_counter()
            try:
                result = provider.breaker.call(functools.partial(provider.fn, *args, **kwargs), timeout=self.timeout)
            except Exception as exc:
                if not _moves_on(provider, exc):
                    raise
                errors[provider.name] = exc
                last = (provider, exc)
                continue
            failed = _failed_result(provider, result)
            if failed is not None:
                errors[provider.name] = failed
                last = (provider, failed)
                continue
            chain.observe(provider, time.perf_counter() - start)
            return cast("T", result)
        error = FailoverError(errors)
        if self.fallback is None:
            raise error
        return cast("T", self.fallback(error))

    __call__ = call


class AsyncFailover(_Base[T]):
    """`Failover` for asyncio: providers use `distbreaker.asyncio.Breaker`; ``await call(...)``.

    Args:
        providers: `Provider`s, or ``(breaker, fn)`` pairs, in priority order; `fn` sync or async.
        strategy: as in `Failover`. Default ``"priority"``.
        fallback: sync or async, called with the `FailoverError` when every provider failed.
        timeout: each attempt is cancelled after this many seconds and counts as a failure of
            its provider (`distbreaker.asyncio.Breaker.call`'s `timeout`). None: no limit.
        rng: the `random.Random` of the ``"random"`` and ``"weighted"`` strategies.
        on_failover: as in `Failover`; sync or async (a coroutine is awaited before the next
            provider is tried).
    """

    def __init__(
        self,
        providers: Sequence[Provider | tuple[Any, Callable[..., Any]]],
        *,
        strategy: Strategy = "priority",
        fallback: Callable[[FailoverError], T | Awaitable[T]] | None = None,
        timeout: float | timedelta | None = None,
        rng: random.Random | None = None,
        on_failover: Callable[[FailoverEvent], object | Awaitable[object]] | None = None,
    ) -> None:
        super().__init__(providers, strategy, fallback, rng, on_failover, timeout)

    async def call(self, *args: Any, **kwargs: Any) -> T:
        """Call the providers' ``fn(*args, **kwargs)`` (awaited if needed) in turn; return the
        first success.

        Raises:
            FailoverError: every provider failed or was rejected (and no fallback was given).
        """
        chain = self._chain
        errors: dict[str, BaseException] = {}
        last: tuple[Provider, BaseException] | None = None
        for provider in chain.order():
            if last is not None:
                told = _switched(self.on_failover, last[0], provider, last[1])
                if inspect.isawaitable(told):
                    try:
                        await told
                    except Exception:
                        LIMITED.log(
                            logging.WARNING,
                            ("on_failover", id(self.on_failover)),
                            "distbreaker: on_failover hook %r raised",
                            self.on_failover,
                            exc_info=True,
                        )
            start = time.perf_counter()
            try:
                result = await provider.breaker.call(
                    functools.partial(provider.fn, *args, **kwargs), timeout=self.timeout
                )
            except Exception as exc:
                if not _moves_on(provider, exc):
                    raise
                errors[provider.name] = exc
                last = (provider, exc)
                continue
            failed = _failed_result(provider, result)
            if failed is not None:
                errors[provider.name] = failed
                last = (provider, failed)
                continue
            chain.observe(provider, time.perf_counter() - start)
            return cast("T", result)
        error = FailoverError(errors)
        if self.fallback is None:
            raise error
        value = self.fallback(error)
        if inspect.isawaitable(value):
            value = await value
        return cast("T", value)

    __call__ = call
