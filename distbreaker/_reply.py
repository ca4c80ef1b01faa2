"""The layout of a script reply: one name per position (docs/state-machine.md, "Reply").

Every script (record, acquire, control, read) returns the 18 `COMMON` fields; read.lua appends
the `READ` fields. record.lua and acquire.lua answer the common call (no transition made, the
breaker closed) with the 3 `LEAN` fields instead: the first three of `COMMON` (state,
generation, now), so the positions below read both; `is_lean(reply)` tells them apart (a lean
reply implies open_until 0, forced_until 0, reason "", no transition). record.lua answers a call
that leaves the breaker closed at the generation the call sent, with no transition made (its
fast path: nearly every call), with the bare reply instead: `now` alone, an integer (the state
is closed, the generation the caller's; `BreakerCore.recorded`). The docs number positions from
1; Python indexes from 0 through the constants below (``reply[CALLS]``), never through a bare
number. `_reference.Reply` has the `COMMON` names as its fields, in this order (checked when it
is imported); tests/lua/test_reply.py runs the scripts on a real server and proves the Lua reply
builder puts each field where this says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ACTOR",
    "CALLS",
    "CAUSE",
    "CLIENT_CONFIG",
    "COMMON",
    "CONFIG",
    "CONSECUTIVE",
    "EXISTS",
    "FAILING_CLIENTS",
    "FAILURES",
    "FIELDS",
    "FINGERPRINT",
    "FINGERPRINT_CHANGED_AT",
    "FORCED_UNTIL",
    "GENERATION",
    "HALF_OPEN_SUCCESSES",
    "LAST_ACTOR",
    "LEAN",
    "LAST_CAUSE",
    "LAST_FROM",
    "LAST_TIME",
    "LEASE",
    "LEASES",
    "NOW",
    "OPEN_COUNT",
    "OPEN_UNTIL",
    "OVERRIDES",
    "PREVIOUS_FINGERPRINT",
    "READ",
    "REASON",
    "RETRY_AT",
    "SLOW",
    "STATE",
    "TRANSITIONS",
    "is_lean",
]

COMMON: tuple[str, ...] = (
    "state",  # a State value
    "generation",  # bumped by every transition
    "now",  # server time of the call, ms
    "open_until",  # ms; 0 unless open
    "calls",  # in the window
    "failures",  # in the window
    "slow",  # slow calls in the window
    "consecutive",  # consecutive failures
    "forced_until",  # ms; 0 = none
    "reason",  # operator's reason (forced states) or cause of the last transition (open, half_open)
    "actor",  # operator of the forced state
    "open_count",  # opens since the last close (the backoff exponent)
    "transitions",  # made by this call: "from>to;from>to" or ""
    "cause",  # of the last transition made by this call, or ""
    "lease",  # half-open lease granted by acquire, or ""
    "retry_at",  # ms, set by acquire when it denies; 0 otherwise
    "leases",  # live half-open leases (half_open only)
    "half_open_successes",  # half_open only
)
LEAN: tuple[str, ...] = ("state", "generation", "now")  # record/acquire's common call (see above)
READ: tuple[str, ...] = (
    "exists",  # 1 / 0
    "config",  # the config values in force (`cfg`), comma-separated, or ""
    "fingerprint",  # `fp`, or ""
    "last_time",  # of the last transition, ms; 0 = none
    "last_from",  # its from-state, or ""
    "last_cause",  # its cause
    "last_actor",  # its actor
    "overrides",  # `ov`: "name=value;..." or ""
    "client_config",  # `cc`: the config values the workers passed
    "previous_fingerprint",  # `pf`, or ""
    "fingerprint_changed_at",  # `pt`, ms; 0 = never
    "failing_clients",  # distinct clients with a failed or slow outcome in the window (`wc`)
)
FIELDS: tuple[str, ...] = COMMON + READ

# Positions (0-based) of COMMON
(
    STATE,
    GENERATION,
    NOW,
    OPEN_UNTIL,
    CALLS,
    FAILURES,
    SLOW,
    CONSECUTIVE,
    FORCED_UNTIL,
    REASON,
    ACTOR,
    OPEN_COUNT,
    TRANSITIONS,
    CAUSE,
    LEASE,
    RETRY_AT,
    LEASES,
    HALF_OPEN_SUCCESSES,
) = range(len(COMMON))
# Positions of read.lua's extras
(
    EXISTS,
    CONFIG,
    FINGERPRINT,
    LAST_TIME,
    LAST_FROM,
    LAST_CAUSE,
    LAST_ACTOR,
    OVERRIDES,
    CLIENT_CONFIG,
    PREVIOUS_FINGERPRINT,
    FINGERPRINT_CHANGED_AT,
    FAILING_CLIENTS,
) = range(len(COMMON), len(FIELDS))

if COMMON[: len(LEAN)] != LEAN:  # the lean reply is a prefix of the full one
    raise AssertionError(f"_reply.LEAN {LEAN} is not the start of COMMON {COMMON[: len(LEAN)]}")
_LEAN_LENGTH = len(LEAN)


def is_lean(reply: Sequence[Any]) -> bool:
    """True for the lean reply (state, generation, now) of record/acquire's common call."""
    return len(reply) == _LEAN_LENGTH
