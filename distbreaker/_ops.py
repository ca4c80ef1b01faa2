"""Helpers shared by Breaker and Admin for operator actions (no state of their own)."""

from __future__ import annotations

import getpass
from typing import Any

from redis.exceptions import RedisError

from . import _schema
from ._config import BreakerConfig, seconds
from ._log import LIMITED
from .errors import ConfigError, translate

MAX_REASON = 500


def actor_or_default(actor: str | None) -> str:
    """`actor`, or the OS user when None."""
    if actor is None:
        try:
            actor = getpass.getuser()
        except Exception:  # no user database entry (containers)
            actor = "unknown"
    if not isinstance(actor, str) or len(actor) > 128:
        raise ConfigError("actor", f"must be a string of at most 128 characters, got {actor!r}")
    return actor


def check_reason(reason: str) -> str:
    """Validate an operator's reason."""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ConfigError("reason", f"must be a string of at most {MAX_REASON} characters")
    return reason


def duration(for_: Any) -> float | None:
    """Normalise `for_` of trip/disable (seconds or timedelta, None = no expiry): > 0 and at
    most `_schema.FOR_MAX` (366 days), else `ConfigError` before Redis is touched."""
    return _schema.check_seconds("for_", for_, high=_schema.FOR_MAX, off=True)


def server_ms(client: Any) -> int:
    """The Redis server's clock in milliseconds."""
    try:
        sec, usec = client.time()
    except RedisError as exc:
        raise translate(exc) from exc
    return int(sec) * 1000 + int(usec) // 1000


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
            timeout, config.redis_timeout, burst=3)


def check_mode(mode: object, flush_interval: object, flush_size: object) -> tuple[str, float]:
    """Validate the batched-mode arguments of a Breaker."""
    if mode not in ("sync", "batched"):
        raise ConfigError("mode", f"must be 'sync' or 'batched', got {mode!r}")
    interval = seconds(flush_interval, "flush_interval")  # type: ignore[arg-type]
    if interval is None or not 0 < interval <= 60:
        raise ConfigError("flush_interval", f"must be > 0 and <= 60 seconds, got {flush_interval!r}")
    if not isinstance(flush_size, int) or isinstance(flush_size, bool) or flush_size < 1:
        raise ConfigError("flush_size", f"must be an int >= 1, got {flush_size!r}")
    return mode, interval
