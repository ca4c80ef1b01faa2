"""Exceptions. Everything distbreaker raises derives from `DistbreakerError`."""

from __future__ import annotations

import re

__all__ = [
    "AccessDeniedError",
    "BackendError",
    "BulkheadFullError",
    "CallTimeoutError",
    "CircuitOpenError",
    "ConfigError",
    "CorruptStateError",
    "DistbreakerError",
    "FailoverError",
    "RedisUnavailableError",
    "ScriptError",
    "UnknownServiceError",
    "redact",
]

# userinfo ends at the LAST "@" before the host (a password may hold "@" unencoded): the password
# runs up to an "@" followed by a host part without "@", "/" or whitespace.
_HOST_AHEAD = r"@(?=[^@/\s]*(?:[/\s?#]|$))"
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):[^\s]*" + _HOST_AHEAD)
# The same without a scheme (``bob:secret@localhost:6379/0``, a URL typed without redis://): a
# word of user characters, ":", then a password up to the last "@" before a host.
_BARE_PASSWORD = re.compile(r"(?<![\w.+-])(?P<user>[\w.~%+-]*):(?!//)[^/\s'\"]+" + _HOST_AHEAD)
_KV_PASSWORD = re.compile(r"(?i)(password['\"]?\s*[=:]\s*['\"]?)[^'\",\s)]+")


def redact(text: str) -> str:
    """Return `text` with passwords in URLs (with or without a scheme) and ``password=...``
    pairs replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
    text = _BARE_PASSWORD.sub(r"\g<user>:***@", text)
    return _KV_PASSWORD.sub(r"\1***", text)


class DistbreakerError(Exception):
    """Root of every exception distbreaker raises."""


class CircuitOpenError(DistbreakerError):
    """The breaker rejected the call without running it.

    Attributes:
        service: the breaker's service name.
        state: ``"open"``, ``"forced_open"``, ``"half_open"`` (all probe slots taken), or
            ``"unavailable"`` (Redis unreachable and ``on_redis_error="reject"``).
        retry_after: seconds until the breaker may admit calls again, or None when unknown
            (a forced state without expiry).
        reason: why (the cause of the transition, or the operator's reason).
    """

    # Raised on the hot reject path: store fields, format only in __str__. Slots: no instance
    # dict to make per rejection (half the cost of building one; an exception's own attributes,
    # such as __notes__, still work).
    __slots__ = ("service", "state", "retry_after", "reason")

    def __init__(self, service: str, state: str, retry_after: float | None, reason: str = "") -> None:
        self.service = service
        self.state = state
        self.retry_after = retry_after
        self.reason = reason

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, str, float | None, str]]:
        return (CircuitOpenError, (self.service, self.state, self.retry_after, self.reason))

    def __str__(self) -> str:
        msg = f"circuit {self.service!r} is {self.state}"
        if self.retry_after is not None:
            msg += f"; retry after {self.retry_after:.3f}s"
        if self.reason:
            msg += f" ({self.reason})"
        return msg


class BulkheadFullError(DistbreakerError):
    """A `Bulkhead` had no free slot (within its `max_wait`): the call did not run.

    Attributes:
        bulkhead: the bulkhead's name.
        max_concurrent: its limit (this process's).
        in_use: leases live fleet-wide when it was refused (None: Redis unavailable).
        retry_after: seconds until the earliest live lease expires (an upper bound: a slot frees
            sooner when a call ends), or `Bulkhead.DEFAULT_RETRY_AFTER` when not known.
        reason: ``"full"``, or why else (``"redis unavailable"`` with ``on_redis_error="reject"``).
    """

    # Raised on the reject path: store fields, format only in __str__.
    def __init__(
        self, bulkhead: str, max_concurrent: int, in_use: int | None, retry_after: float, reason: str = "full"
    ) -> None:
        self.bulkhead = bulkhead
        self.max_concurrent = max_concurrent
        self.in_use = in_use
        self.retry_after = retry_after
        self.reason = reason

    def __reduce__(self) -> tuple[type[BulkheadFullError], tuple[str, int, int | None, float, str]]:
        return (BulkheadFullError, (self.bulkhead, self.max_concurrent, self.in_use, self.retry_after, self.reason))

    def __str__(self) -> str:
        used = "?" if self.in_use is None else str(self.in_use)
        return (
            f"bulkhead {self.bulkhead!r} is {self.reason} ({used}/{self.max_concurrent} in use); "
            f"retry after {self.retry_after:.3f}s"
        )


class CallTimeoutError(DistbreakerError, TimeoutError):
    """A protected call ran past its `timeout` and was cancelled; it counted as a failure.

    Also a `TimeoutError` (on Python 3.11+ that is `asyncio.TimeoutError` too).

    Attributes:
        service: the breaker's service name.
        timeout: the limit, seconds.
    """

    def __init__(self, service: str, timeout: float) -> None:
        super().__init__(f"call through {service!r} timed out after {timeout:g}s")
        self.service = service
        self.timeout = timeout

    def __reduce__(self) -> tuple[type[CallTimeoutError], tuple[str, float]]:
        return (CallTimeoutError, (self.service, self.timeout))

    def __str__(self) -> str:
        return f"call through {self.service!r} timed out after {self.timeout:g}s"


class FailoverError(DistbreakerError):
    """Every provider of a failover chain failed or was rejected by its breaker.

    Attributes:
        errors: provider name -> the exception it ended with (a `CircuitOpenError` for a
            provider skipped because its breaker is open), in the order they were tried.
    """

    def __init__(self, errors: dict[str, BaseException]) -> None:
        super().__init__(errors)
        self.errors = dict(errors)

    def __reduce__(self) -> tuple[type[FailoverError], tuple[dict[str, BaseException]]]:
        return (FailoverError, (self.errors,))

    def __str__(self) -> str:
        parts = "; ".join(f"{name}: {_describe(exc)}" for name, exc in self.errors.items())
        return f"all {len(self.errors)} providers failed: {parts}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DistbreakerError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class ConfigError(DistbreakerError, ValueError):
    """An invalid configuration value or argument; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownServiceError(DistbreakerError, LookupError):
    """No breaker exists in Redis under this service name."""

    def __init__(self, service: str) -> None:
        super().__init__(f"no breaker named {service!r}")
        self.service = service


class BackendError(DistbreakerError):
    """Redis answered with an error the breaker cannot work around (wrong key type, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class RedisUnavailableError(BackendError):
    """Redis is unreachable, timed out, busy, loading, read-only or out of memory."""


class AccessDeniedError(BackendError):
    """Authentication failed or an ACL denies a command or key the breaker needs."""


class CorruptStateError(BackendError):
    """A breaker's hash in Redis holds what no distbreaker script wrote (an unknown state, a
    counter that is not a number, an unreadable config): the scripts refuse it and write nothing.

    Operators get it from `trip`, `status`, `history`... ; ``Admin.reset`` (``distbreaker reset
    <service>``) rewrites the breaker as a fresh closed one and records it in the history.
    On a worker's call path it is not raised: the call follows ``on_redis_error`` (``"allow"``
    runs the function) and one error line naming the key is logged (rate-limited).

    Attributes:
        key: the breaker's key.
        service: the breaker's service ("" when only the key is known).
    """

    def __init__(self, message: str, key: str = "", service: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.service = service


class ScriptError(BackendError):
    """A breaker script refused its arguments (a reply starting with ``distbreaker:``)."""


# An ACL refusal inside a script arrives as a script error whose text says so (Redis 7.0,
# Valkey 8.1): a command, a key or a channel the user may not use.
_DENIED_IN_SCRIPT = (
    "The user executing the script can't",
    "can't run this command",
    "No permissions to access a",
    "NOPERM",
)


def translate(exc: BaseException, what: str = "") -> DistbreakerError:
    """Map a redis-py exception to a distbreaker one (the one place this happens).

    `what` names the object involved (a service, a key) for the message. Messages are
    redacted: a password never appears.
    """
    from redis import exceptions as rx

    msg = redact(str(exc)) or type(exc).__name__
    where = f" ({what})" if what else ""
    if (
        isinstance(
            exc,
            (
                rx.AuthenticationError,
                rx.AuthorizationError,
                rx.NoPermissionError,
                rx.AuthenticationWrongNumberOfArgsError,
            ),
        )
        or msg.startswith(("NOAUTH", "NOPERM", "WRONGPASS"))
        or ("distbreaker:" not in msg and any(text in msg for text in _DENIED_IN_SCRIPT))
    ):
        return AccessDeniedError(f"Redis denied access{where}: {msg}")
    if isinstance(
        exc,
        (
            rx.ConnectionError,
            rx.TimeoutError,
            rx.ReadOnlyError,
            rx.OutOfMemoryError,
            rx.ClusterDownError,
            rx.TryAgainError,
            rx.MovedError,
            rx.AskError,
            rx.MasterDownError,
            rx.ClusterError,
            OSError,
        ),
    ):
        return RedisUnavailableError(f"Redis unavailable{where}: {msg}")
    if msg.startswith(("BUSY", "LOADING", "OOM", "READONLY", "MOVED", "ASK ", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN")):
        return RedisUnavailableError(f"Redis unavailable{where}: {msg}")
    if "distbreaker:" in msg:
        detail = msg.split("distbreaker:", 1)[1].split(" script:", 1)[0].strip()
        if detail.startswith("WRONGTYPE"):
            return BackendError(f"{detail}{where}")
        if detail.startswith("CORRUPT "):
            key = detail[len("CORRUPT ") :].split(": ", 1)[0]
            return CorruptStateError(f"corrupt breaker state: {detail[len('CORRUPT ') :]}", key)
        return ScriptError(f"breaker script refused its arguments{where}: {detail}")
    if msg.startswith("WRONGTYPE"):
        return BackendError(
            f"a key of {what or 'this breaker'} holds a value that is not a breaker (WRONGTYPE); "
            "choose another prefix or delete the key"
        )
    return BackendError(f"Redis error{where}: {msg}")
