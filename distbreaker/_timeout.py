"""Call timeouts for the asyncio shell: validate the limit, await with cancellation (no I/O here)."""

from __future__ import annotations

import asyncio
import inspect
import sys
from typing import Any

from ._config import seconds
from .errors import ConfigError

__all__ = ["check_timeout", "within"]


def check_timeout(timeout: Any) -> float | None:
    """Normalise a call timeout (seconds or timedelta; None = no limit); it must be positive."""
    limit = seconds(timeout, "timeout")
    if limit is not None and not limit > 0:
        raise ConfigError("timeout", f"must be a positive duration, got {timeout!r}")
    return limit


async def within(limit: float, value: Any) -> tuple[bool, Any]:
    """Await `value` for at most `limit` seconds: ``(True, result)``, or ``(False, None)`` when
    the limit passed (the awaitable was cancelled). A plain value is returned as it is.

    A `TimeoutError` that the awaitable raises itself is not ours: it propagates.
    """
    if not inspect.isawaitable(value):
        return True, value
    if sys.version_info >= (3, 11):
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                return True, await value
        except TimeoutError:
            if scope.expired():
                return False, None
            raise
    loop = asyncio.get_running_loop()  # pragma: no cover - Python 3.10
    start = loop.time()
    try:
        return True, await asyncio.wait_for(value, limit)
    except asyncio.TimeoutError:
        if loop.time() - start >= limit:
            return False, None
        raise
