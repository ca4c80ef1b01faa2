"""Calls through a breaker made from inside a call through the same breaker (same prefix and
service), in the same thread or asyncio task: they run directly, neither admitted nor counted
again; the outer call counts once.

Without this, ``payments.call(charge)`` with ``@payments def charge`` counted two calls (and two
failures), and in half-open state the nested call asked for a second probe lease while the outer
call held the only one, so the probe rejected itself.

`INSIDE` holds the keys of the breakers this thread or task is inside, once per open call or
``with`` block: a block is the counted one when its key was not there before it. Threads start
outside every breaker; an asyncio task starts inside the calls its creator was inside. The call
path reads and sets it directly (a few hundred ns per call; see `Breaker.call`).
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["INSIDE", "enter", "leave"]

INSIDE: ContextVar[tuple[str, ...]] = ContextVar("distbreaker_inside", default=())


def enter(key: str) -> bool:
    """A ``with`` block through `key` begins; True when it is the outermost one (counted)."""
    keys = INSIDE.get()
    INSIDE.set((*keys, key))
    return key not in keys


def leave(key: str) -> bool:
    """The innermost ``with`` block through `key` ends; True when it was the counted one."""
    keys = INSIDE.get()
    for i in range(len(keys) - 1, -1, -1):
        if keys[i] == key:
            rest = keys[:i] + keys[i + 1:]
            INSIDE.set(rest)
            return key not in rest
    return True  # entered in another context (e.g. another task): count it, as before
