"""connect(): a redis.Redis tuned for breaker budgets."""

from __future__ import annotations

import inspect
from typing import Any

import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from ._config import seconds
from ._functions import use_functions
from .errors import ConfigError, redact

__all__ = ["connect"]

# redis-py >= 7 spells "no CLIENT SETINFO on connect" driver_info=None; older ones lib_name=None.
_NO_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(AbstractConnection.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


def client_options(url: object, timeout: object, *, asyncio: bool = False) -> dict[str, Any]:
    """Validated redis-py options for a breaker client (sync, or asyncio: its own `Retry` class,
    which redis-py >= 8.2 expects and warns about otherwise)."""
    value = seconds(timeout, "timeout")
    if value is None or not value > 0:
        raise ConfigError("timeout", f"must be a positive number of seconds, got {timeout!r}")
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("url", f"must look like redis://host:port/db, got {redact(str(url))!r}")
    return {
        "socket_timeout": value,
        "socket_connect_timeout": value,
        "retry": (AsyncRetry if asyncio else Retry)(NoBackoff(), 0),
        # A burst of concurrent calls waits (up to the budget) for a pooled connection instead of
        # failing at once with "Too many connections", which would look like an outage.
        "max_connections": 100,
        "timeout": value,
        # RESP2: redis-py >= 8 defaults to RESP3, which sends HELLO 3 on every new connection (one
        # more round trip: set-up measured 0.35-0.41 ms -> 0.21-0.24 ms sync, 0.9-1.0 -> 0.46-0.51
        # ms asyncio, loopback). The breaker's replies are the same in both.
        "protocol": 2,
        **_NO_SETINFO,
    }


def connect(url: str, *, timeout: float = 0.05, functions: bool = False, **kwargs: Any) -> redis.Redis:
    """Return a `redis.Redis` for `url` whose every command is bounded by `timeout` seconds.

    No retries (the breaker has its own backoff) and no handshake commands (RESP2, so no
    ``HELLO``; no ``CLIENT SETINFO``; only ``AUTH``/``SELECT`` when the URL asks for them), so a
    hung or dead Redis costs a protected call about `timeout`, never a multiple of it.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` or ``unix://``.
        timeout: connect and read timeout in seconds, and the longest a call waits for a free
            pooled connection (100 at most). Default 0.05 (the default
            `BreakerConfig.redis_timeout`); the CLI uses a longer one.
        functions: call the scripts as Redis Functions (FCALL; Redis >= 7.0, Valkey >= 7.2), so a
            worker user needs no EVAL (docs/operations.md, "ACL: least privilege").
        **kwargs: passed to `redis.Redis.from_url`.

    Raises:
        ConfigError: the URL is not a Redis URL (the message never shows the password).
    """
    options = client_options(url, timeout)
    options.update(kwargs)
    try:
        client = redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(url, **options))
    except ValueError as exc:
        raise ConfigError("url", redact(str(exc))) from None
    return use_functions(client, functions)
