"""connect(): a redis.Redis tuned for breaker budgets."""

from __future__ import annotations

import inspect
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from ._config import seconds
from .errors import ConfigError, redact

__all__ = ["connect"]

# redis-py >= 7 spells "no CLIENT SETINFO on connect" driver_info=None; older ones lib_name=None.
_NO_SETINFO: dict[str, Any] = (
    {"driver_info": None} if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def connect(url: str, *, timeout: float = 0.05, **kwargs: Any) -> redis.Redis:
    """Return a `redis.Redis` for `url` whose every command is bounded by `timeout` seconds.

    No retries (the breaker has its own backoff) and no extra handshake commands, so a hung
    or dead Redis costs a protected call about `timeout`, never a multiple of it.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` or ``unix://``.
        timeout: connect and read timeout in seconds. Default 0.05 (the default
            `BreakerConfig.redis_timeout`); the CLI uses a longer one.
        **kwargs: passed to `redis.Redis.from_url`.

    Raises:
        ConfigError: the URL is not a Redis URL (the message never shows the password).
    """
    value = seconds(timeout, "timeout")
    if value is None or not value > 0:
        raise ConfigError("timeout", f"must be a positive number of seconds, got {timeout!r}")
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("url", f"must look like redis://host:port/db, got {redact(str(url))!r}")
    options: dict[str, Any] = {
        "socket_timeout": value,
        "socket_connect_timeout": value,
        "retry": Retry(NoBackoff(), 0),
        **_NO_SETINFO,
    }
    options.update(kwargs)
    try:
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError("url", redact(str(exc))) from None
