"""Call timeouts: validate the limit; await with cancellation (asyncio), or wait for a worker
thread that is left running (sync: Python cannot interrupt a running function from outside)."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._config import seconds
from .errors import ConfigError

__all__ = ["check_timeout", "run_within", "within"]

T = TypeVar("T")


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


def run_within(limit: float, fn: Callable[[], T], name: str) -> tuple[bool, T | None]:
    """Run ``fn()`` in a new daemon thread and wait at most `limit` seconds for it:
    ``(True, result)``, or ``(False, None)`` when the limit passed. An exception of `fn` is
    raised here, in the caller's thread.

    Python cannot stop a thread: after the limit, `fn` keeps running in its thread until it
    returns by itself (its result or exception is then dropped). The thread runs in a copy of
    the caller's context (contextvars), and as a daemon it does not hold up interpreter exit.
    """
    context = contextvars.copy_context()
    box: list[tuple[bool, Any]] = []
    done = threading.Event()

    def target() -> None:
        try:
            box.append((True, context.run(fn)))
        except BaseException as exc:  # handed to the caller (or dropped after the limit)
            box.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=target, name=f"distbreaker-call-{name}", daemon=True).start()
    if not done.wait(limit):
        return False, None
    ok, value = box[0]
    if not ok:
        raise value
    return True, value
