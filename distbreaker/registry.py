"""BreakerRegistry: per-key breakers made on demand, a bounded number kept in memory."""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Literal, ParamSpec, TypeVar

from ._breaker import Breaker
from ._config import BreakerConfig
from ._core import DEFAULT_PREFIX, validate_prefix, validate_service
from ._hooks import CallHook, Hooks, TransitionHook
from .bulkhead import Bulkhead
from .errors import ConfigError

__all__ = ["BreakerRegistry"]

B = TypeVar("B")
P = ParamSpec("P")
T = TypeVar("T")


class _Registry(Generic[B]):
    """The LRU bookkeeping shared by the sync and asyncio registries (no I/O)."""

    def __init__(
        self,
        factory: Callable[..., B],
        redis: Any,
        default_config: BreakerConfig | None,
        max_breakers: int,
        prefix: str,
        configs: Mapping[str, BreakerConfig] | None,
        clock: Callable[[], float] | None,
        options: dict[str, Any],
    ) -> None:
        if not isinstance(max_breakers, int) or isinstance(max_breakers, bool) or max_breakers < 1:
            raise ConfigError("max_breakers", f"must be an int >= 1, got {max_breakers!r}")
        self.redis = redis
        self.default_config = default_config if default_config is not None else BreakerConfig()
        self.max_breakers = max_breakers
        self.prefix = validate_prefix(prefix)
        self._configs = {validate_service(k): v for k, v in (configs or {}).items()}
        self._factory = factory
        self._clock = clock
        self._options = options
        self._breakers: OrderedDict[str, B] = OrderedDict()
        self._lock = threading.Lock()

    def _get(self, service: str) -> tuple[B, list[B]]:
        """The breaker of `service` (made if needed) and the breakers evicted to make room."""
        with self._lock:
            breaker = self._breakers.get(service)
            if breaker is not None:
                self._breakers.move_to_end(service)
                return breaker, []
            config = self._configs.get(validate_service(service), self.default_config)
            breaker = self._factory(service, self.redis, config, prefix=self.prefix, clock=self._clock, **self._options)
            self._breakers[service] = breaker
            evicted = []
            while len(self._breakers) > self.max_breakers:
                evicted.append(self._breakers.popitem(last=False)[1])
            return breaker, evicted

    def _take_all(self) -> list[B]:
        with self._lock:
            breakers = list(self._breakers.values())
            self._breakers.clear()
            return breakers

    def configure(self, service: str, config: BreakerConfig) -> None:
        """Use `config` for `service` from now on (a breaker already made keeps its config)."""
        with self._lock:
            self._configs[validate_service(service)] = config

    def __contains__(self, service: object) -> bool:
        return service in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def services(self) -> list[str]:
        """Services of the breakers in memory, least recently used first."""
        with self._lock:
            return list(self._breakers)


class BreakerRegistry(_Registry[Breaker]):
    """Hands out one `Breaker` per key, made on first use; keeps at most `max_breakers` in
    memory, evicting the least recently used (their state stays in Redis). All breakers of a
    registry share its client, hence one pub/sub listener.

    Args:
        redis: the client every breaker uses (`distbreaker.connect`).
        default_config: config of breakers without an override. Default `BreakerConfig()`.
        max_breakers: how many breakers to keep in memory. Default 1000.
        prefix: key prefix. Default ``"distbreaker"``.
        configs: per-service configs, e.g. ``{"payments": BreakerConfig(minimum_calls=50)}``.
        clock: for tests only (see `Breaker`).
        listen: passed to every breaker (see `Breaker`).
        mode: passed to every breaker (see `Breaker`).
        flush_interval: passed to every breaker (see `Breaker`).
        flush_size: passed to every breaker (see `Breaker`).
        fallback: the default fallback of `call` and `protect` (called with the exception when
            a breaker rejects a call or a call fails). Default None: raise.
        on_transition: passed to every breaker (see `Breaker`): each breaker reports its own
            service's transitions, once each.
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
        Hooks(on_transition, on_call, asynchronous=False)  # refuse bad hooks now, not at the first get()
        self.fallback = fallback

    def call(
        self,
        service: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        fallback: Callable[[BaseException], T] | None = None,
        **kwargs: Any,
    ) -> T:
        """``get(service).call(fn, *args, **kwargs)`` with the registry's default `fallback`
        when none is given."""
        result: T = self.get(service).call(
            fn, *args, fallback=fallback if fallback is not None else self.fallback, **kwargs
        )
        return result

    def protect(
        self,
        service: str,
        *,
        fallback: Callable[[BaseException], Any] | None = None,
        bulkhead: Bulkhead | None = None,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """A decorator: every call goes through `service`'s breaker (looked up per call), with
        `fallback` or else the registry's default.

        Args:
            bulkhead: a `Bulkhead` each call also holds a slot of, inside the breaker, as in
                `Breaker.protect`: an open breaker refuses first (the bulkhead is not asked); a
                full bulkhead raises `BulkheadFullError` (given to the fallback, if any), which
                the breaker does not count.

        .. versionchanged:: 0.3.0 `bulkhead`.
        """
        validate_service(service)
        if bulkhead is not None and not isinstance(bulkhead, Bulkhead):
            raise TypeError(f"bulkhead must be a distbreaker.Bulkhead, got {bulkhead!r}")

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if inspect.iscoroutinefunction(fn):
                raise TypeError(f"{fn.__qualname__} is a coroutine function: use distbreaker.asyncio.BreakerRegistry")

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return self.get(service)._protected(
                    functools.partial(fn, *args, **kwargs),
                    fallback if fallback is not None else self.fallback,
                    None,
                    bulkhead,
                )

            return wrapper

        return decorate

    def get(self, service: str) -> Breaker:
        """The breaker of `service`."""
        breaker, evicted = self._get(service)
        for old in evicted:
            old.close()
        return breaker

    def close(self) -> None:
        """Close every breaker (their listener stops)."""
        for breaker in self._take_all():
            breaker.close()
