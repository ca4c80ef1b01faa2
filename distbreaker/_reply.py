"""The layout of a script reply: one name per position (docs/state-machine.md, "Reply").

Every script (record, acquire, control, read) returns the 18 `COMMON` fields; read.lua appends
the `READ` fields. The docs number positions from 1; Python indexes from 0 through the constants
below (``reply[CALLS]``), never through a bare number. `_reference.Reply` has the `COMMON` names
as its fields, in this order (checked when it is imported); tests/lua/test_reply.py runs the
scripts on a real server and proves the Lua reply builder puts each field where this says.
"""

from __future__ import annotations

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
