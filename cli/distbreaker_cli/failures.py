"""The one mapping of exceptions to a one-line message and an exit code (`exits.ExitStatus`)."""

from __future__ import annotations

from redis.exceptions import RedisClusterException, RedisError

from distbreaker import errors
from distbreaker.errors import (
    AccessDeniedError,
    ConfigError,
    DistbreakerError,
    RedisUnavailableError,
    UnknownServiceError,
    translate,
)

from .context import CliError
from .exits import ExitStatus

__all__ = ["exit_for", "is_corrupt"]


def is_corrupt(exc: BaseException) -> bool:
    """A breaker's data cannot be read: a script answered CORRUPT (`CorruptStateError`), or
    Admin could not decode what it read."""
    return isinstance(exc, errors.CorruptStateError)


_NO_PASSWORD = ("NOAUTH", "Authentication required", "HELLO must be called with the client already authenticated")
_BAD_PASSWORD = ("WRONGPASS", "invalid username-password pair")
_PASSWORD_HINT = "env DISTBREAKER_PASSWORD or REDISCLI_AUTH, or --password-file PATH"


def auth_message(message: str) -> str | None:
    """Our one line for a failed login (not the server's AUTH/HELLO text), or None."""
    if any(word in message for word in _NO_PASSWORD):
        return f"Redis requires a password and none was given ({_PASSWORD_HINT})"
    if any(word in message for word in _BAD_PASSWORD):
        return f"Redis refused the password or user name (check {_PASSWORD_HINT}, and the user in --url)"
    if "without any password configured" in message:
        return (
            f"a password was given but this Redis has none configured for the user (check {_PASSWORD_HINT} and --url)"
        )
    return None


def exit_for(exc: BaseException) -> CliError:
    """The one mapping of exceptions to a message and an exit code."""
    if isinstance(exc, RedisError):
        exc = translate(exc)
    login = auth_message(str(exc)) if isinstance(exc, (AccessDeniedError, RedisClusterException)) else None
    if login:
        return CliError(login, ExitStatus.NO_PERMISSION)
    if isinstance(exc, RedisClusterException):
        return CliError(f"Redis Cluster unavailable: {exc} (check --url)", ExitStatus.UNAVAILABLE)
    if isinstance(exc, UnknownServiceError):
        return CliError(f"{exc} (distbreaker status lists the breakers)", ExitStatus.UNKNOWN_SERVICE)
    if isinstance(exc, RedisUnavailableError):
        return CliError(f"{exc} (check --url / DISTBREAKER_URL)", ExitStatus.UNAVAILABLE)
    if isinstance(exc, AccessDeniedError):
        return CliError(f"{exc} (check the password and ACL of the user in --url)", ExitStatus.NO_PERMISSION)
    if isinstance(exc, ConfigError):
        return CliError(str(exc), ExitStatus.USAGE)
    if "DB index is out of range" in str(exc):
        return CliError(
            "the database in --url does not exist on this server (see its 'databases' setting)", ExitStatus.USAGE
        )
    if is_corrupt(exc):
        message = str(exc)
        if "reset" not in message:
            service = getattr(exc, "service", None) or "SERVICE"
            message += f" ('distbreaker reset {service}' rewrites the breaker)"
        return CliError(message, ExitStatus.CORRUPT)
    if isinstance(exc, DistbreakerError):
        hint = " (is --url a Redis server?)" if "Protocol error" in str(exc) else ""
        return CliError(f"{exc}{hint}", ExitStatus.ERROR)
    return CliError(f"unexpected {type(exc).__name__}: {exc} (run with --traceback for details)", ExitStatus.ERROR)
