"""Argument checks, before any I/O (no state of their own): an operator's reason, actor and
`for_` (the action steps, `Admin` and the CLI), and a Breaker's `mode` and Redis client budget."""

from __future__ import annotations

import getpass
import re
from typing import Any

from . import _schema
from ._config import BreakerConfig, seconds
from ._log import LIMITED
from .errors import ConfigError

MAX_REASON = 500
MAX_ACTOR = 128
# Refused in reasons and actors: C0/C1 controls and DEL (ESC starts terminal sequences; \n and \r
# forge lines), lone surrogates (not encodable), line/paragraph separators and bidi overrides.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def check_text(field: str, value: object, limit: int) -> str:
    """`value` if it is a str of at most `limit` characters that prints as one plain line."""
    if not isinstance(value, str) or len(value) > limit:
        raise ConfigError(field, f"must be a string of at most {limit} characters, got {value!r:.80}")
    bad = _UNSAFE.search(value)
    if bad:
        raise ConfigError(
            field,
            f"must not contain control characters, got {bad.group()!r} at "
            f"position {bad.start()} (one printable line of text)",
        )
    return value


def actor_or_default(actor: str | None) -> str:
    """`actor`, or the OS user when None; one printable line of at most 128 characters."""
    if actor is None:
        try:
            actor = getpass.getuser()
        except Exception:  # no user database entry (containers)
            actor = "unknown"
    return check_text("actor", actor, MAX_ACTOR)


def check_reason(reason: str) -> str:
    """Validate an operator's reason: one printable line of at most 500 characters."""
    return check_text("reason", reason, MAX_REASON)


def duration(for_: Any) -> float | None:
    """Normalise `for_` of trip/disable (seconds or timedelta, None = no expiry): > 0 and at
    most `_schema.FOR_MAX` (366 days), else `ConfigError` before Redis is touched."""
    return _schema.check_seconds("for_", for_, high=_schema.FOR_MAX, off=True)


def check_client_budget(client: Any, config: BreakerConfig) -> None:
    """Log once when the client's socket timeout cannot hold `redis_timeout`."""
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:
        return
    timeout = kwargs.get("socket_timeout")
    if timeout is None or timeout > 4 * config.redis_timeout:
        LIMITED.warning(  # a registry builds many breakers on one client: 3 lines, then one a minute
            "client-budget",
            "the Redis client has socket_timeout=%r; a hung Redis can delay protected calls "
            "that long (redis_timeout=%s). Build the client with distbreaker.connect().",
            timeout,
            config.redis_timeout,
            burst=3,
        )


def check_mode(mode: object, flush_interval: object, flush_size: object) -> tuple[str, float]:
    """Validate the batched-mode arguments of a Breaker."""
    if mode not in ("sync", "batched"):
        raise ConfigError("mode", f"must be 'sync' or 'batched', got {mode!r}")
    interval = seconds(flush_interval, "flush_interval")
    if interval is None or not 0 < interval <= 60:
        raise ConfigError("flush_interval", f"must be > 0 and <= 60 seconds, got {flush_interval!r}")
    if not isinstance(flush_size, int) or isinstance(flush_size, bool) or flush_size < 1:
        raise ConfigError("flush_size", f"must be an int >= 1, got {flush_size!r}")
    return mode, interval
