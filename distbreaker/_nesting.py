"""Calls through a breaker made from inside a call through the same breaker (same prefix and
service), in the same thread or asyncio task: they run directly, neither admitted nor counted
again; the outer call counts once.

Without this, ``payments.call(charge)`` with ``@payments def charge`` counted two calls (and two
failures), and in half-open state the nested call asked for a second probe lease while the outer
call held the only one, so the probe rejected itself.

A ContextVar holds the breakers this thread or task is inside, with, for each ``with`` block,
whether it was counted (the outermost) or passed through (a nested one). Threads start outside
every breaker; an asyncio task starts inside the calls its creator was inside.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["enter", "inside", "leave"]

_INSIDE: ContextVar[tuple[tuple[str, bool], ...]] = ContextVar("distbreaker_inside", default=())


def inside(key: str) -> bool:
    """This thread or task is inside a call through the breaker `key`."""
    return any(k == key for k, _ in _INSIDE.get())


def enter(key: str) -> bool:
    """Mark the start of a call or block through `key`; True when it is the outermost (counted)."""
    entries = _INSIDE.get()
    counted = not any(k == key for k, _ in entries)
    _INSIDE.set((*entries, (key, counted)))
    return counted


def leave(key: str) -> bool:
    """Mark the end of the innermost call or block through `key`; whether it was counted."""
    entries = _INSIDE.get()
    for i in range(len(entries) - 1, -1, -1):
        if entries[i][0] == key:
            _INSIDE.set(entries[:i] + entries[i + 1:])
            return entries[i][1]
    return True  # not entered in this context (e.g. __exit__ in another task): count it as before
