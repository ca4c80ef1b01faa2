"""Moved to `distbreaker.toolkit.retry`; this older import path re-exports its public names."""

from typing import Any

from .toolkit import retry as _retry
from .toolkit.retry import __all__ as __all__
from .toolkit.retry import is_retryable as is_retryable
from .toolkit.retry import retryable as retryable


def __getattr__(name: str) -> Any:
    # `retry_if_not_open` is made on first use (it imports tenacity): ask the toolkit module then.
    return getattr(_retry, name)
