"""Retry predicates for tenacity and stamina: retry outside the breaker, never a `CircuitOpenError`.

Put the retry loop *outside* the breaker, so that every attempt is one call the breaker
counts, and stop at once when the breaker rejects: retrying a `CircuitOpenError` only
spins until ``retry_after`` while the dependency is known to be down:

    import stamina
    from distbreaker.toolkit.retry import is_retryable

    @stamina.retry(on=is_retryable, attempts=3)
    def charge(order):
        return payments.call(api.charge, order)

    import tenacity
    from distbreaker.toolkit.retry import retry_if_not_open

    @tenacity.retry(retry=retry_if_not_open, stop=tenacity.stop_after_attempt(3), reraise=True)
    def charge(order):
        return payments.call(api.charge, order)

Neither library is imported by ``import distbreaker``; `retry_if_not_open` imports tenacity on
first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import CircuitOpenError

__all__ = ["is_retryable", "retry_if_not_open", "retryable"]


def is_retryable(exc: BaseException) -> bool:
    """True for any `Exception` except a `CircuitOpenError` (a stamina ``on=`` predicate).

    Args:
        exc: what the attempt raised.
    """
    return isinstance(exc, Exception) and not isinstance(exc, CircuitOpenError)


def retryable(*types: type[BaseException]) -> Callable[[BaseException], bool]:
    """A predicate that retries `types` but never a `CircuitOpenError`, even when `types` covers
    it (``retryable(Exception)``); for stamina's ``on=`` or tenacity's ``retry_if_exception``.

    Args:
        types: the exception classes to retry. At least one.
    """
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise TypeError(f"retryable() takes exception classes, got {types!r}")

    def predicate(exc: BaseException) -> bool:
        return isinstance(exc, types) and not isinstance(exc, CircuitOpenError)

    return predicate


def __getattr__(name: str) -> Any:
    # `retry_if_not_open` is a tenacity strategy object (so `&` and `|` combine it with others);
    # it is built on first use, so that importing this module needs no tenacity.
    if name == "retry_if_not_open":
        try:
            import tenacity
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "distbreaker.toolkit.retry.retry_if_not_open needs tenacity: pip install tenacity (the retry extra)"
            ) from exc
        value = tenacity.retry_if_exception(is_retryable)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
