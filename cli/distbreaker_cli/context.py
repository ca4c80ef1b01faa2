"""What every command shares: the global options, the Redis client, output helpers, CliError."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
from redis.exceptions import NoPermissionError, RedisClusterException, RedisError, ResponseError

from distbreaker import Admin, connect
from distbreaker.errors import AccessDeniedError, ConfigError, RedisUnavailableError, redact, translate

__all__ = ["OUTPUTS", "CliError", "Context", "check_url", "global_options", "json_option", "password_from_env"]

OUTPUTS = ("table", "wide", "plain", "json")
PASSWORD_ENV = ("DISTBREAKER_PASSWORD", "REDISCLI_AUTH")


def password_from_env() -> str | None:
    """The password in $DISTBREAKER_PASSWORD, else $REDISCLI_AUTH (redis-cli's), else None."""
    for name in PASSWORD_ENV:
        value = os.environ.get(name)
        if value:
            return value
    return None


def check_url(url: str) -> str:
    """`url` if its database (``/N`` or ``?db=N``) is a number; redis-py reads ``/abc`` as db 0."""
    if "://" not in url:
        raise ConfigError("url", f"must look like redis://host:port/db, got {redact(url)!r}")
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        path = parts.path.lstrip("/")
        dbs = [path] if path else []
        dbs += parse_qs(parts.query).get("db", [])
        for db in dbs:
            if not db.isascii() or not db.isdigit():
                raise ConfigError("url", f"the database must be a number (redis://host:port/0), got {db!r}")
    return url


@dataclass
class Context:
    """The global options, and the Redis client made from them on first use."""

    url: str
    prefix: str
    traceback: bool
    timeout: float
    color: bool | None = None  # None: colour when stdout is a terminal
    cluster: bool = False
    password: str | None = field(default=None, repr=False)  # --password-file or the environment
    output: str = "table"  # -o: table, wide, plain or json (--json)
    no_headers: bool = False
    _client: Any = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        """-o json (or --json)."""
        return self.output == "json"

    @json.setter
    def json(self, value: bool) -> None:
        if value:
            self.output = "json"
        elif self.output == "json":
            self.output = "table"

    def client(self) -> Any:
        """The Redis client: `redis.Redis`, or `RedisCluster` with --cluster or when the server
        at --url says it is a Cluster node (``INFO cluster``: ``cluster_enabled:1``)."""
        if self._client is None:
            url = check_url(self.url)
            extra: dict[str, Any] = {"password": self.password} if self.password else {}
            if self.cluster:
                self._client = _cluster_client(url, self.timeout, extra)
            else:
                client = connect(url, timeout=self.timeout, **extra)
                if _cluster_enabled(client):
                    client.close()
                    self.cluster = True
                    client = _cluster_client(url, self.timeout, extra)
                self._client = client
        return self._client

    def admin(self) -> Admin:
        """An `Admin` over `client()` and --prefix."""
        return Admin(self.client(), prefix=self.prefix)

    def close(self) -> None:
        """Close the client, if one was made."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def tty(self) -> bool:
        """stdout is a terminal."""
        return sys.stdout.isatty()

    def width(self) -> int | None:
        """Width to fit tables to: the terminal's ($COLUMNS wins); None (nothing cut) when stdout
        is not a terminal (a pipe: grep finds every word), or with -o wide / plain."""
        if self.output != "table" or not self.tty:
            return None
        return shutil.get_terminal_size((120, 24)).columns

    def out(self, text: str = "") -> None:
        """A line on stdout (styles kept only on a terminal, never with --no-color)."""
        click.echo(text, color=self.color)

    def note(self, text: str) -> None:
        """A message for people on stderr."""
        click.echo(text, err=True, color=self.color)

    def warn(self, text: str) -> None:
        """``warning: ...`` on stderr."""
        click.echo(click.style("warning: ", fg="yellow", bold=True) + text, err=True, color=self.color)


def _cluster_enabled(client: Any) -> bool:
    """Whether the server is a Cluster node (one INFO; a server that refuses INFO by ACL is
    taken as standalone)."""
    try:
        info = client.info("cluster")
    except (AccessDeniedError, NoPermissionError):
        return False
    except ResponseError as exc:
        if str(exc).startswith("NOPERM"):
            return False
        raise
    return bool(int(info.get("cluster_enabled", 0) or 0))


def _cluster_client(url: str, timeout: float, extra: dict[str, Any]) -> Any:
    from redis.cluster import RedisCluster

    if "://" not in url:
        raise ConfigError("url", f"must look like redis://host:port, got {redact(url)!r}")
    try:
        return RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, **extra)
    except RedisClusterException as exc:
        message = redact(str(exc))
        if any(
            word in message
            for word in (
                "HELLO must be called",
                "NOAUTH",
                "Authentication required",
                "WRONGPASS",
                "invalid username-password",
            )
        ):
            raise AccessDeniedError(f"Redis denied access: {message}") from exc
        raise RedisUnavailableError(f"Redis Cluster unavailable: {message}") from exc
    except RedisError as exc:
        raise translate(exc) from exc


class CliError(click.ClickException):
    """A one-line error with an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        text = redact(message)  # and one printable line, whatever data the message quotes
        if not text.isprintable():
            text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
        super().__init__(text)
        self.exit_code = exit_code  # type: ignore[misc]  # click's is per class; ours per error

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    obj = ctx.find_object(Context)
    if value and obj is not None:
        obj.json = True


def _set_no_headers(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    obj = ctx.find_object(Context)
    if value and obj is not None:
        obj.no_headers = True


OUTPUT_HELP = (
    "Output: table (fits the terminal), wide (nothing cut), plain (tab-separated, nothing cut) or json (one document)."
)


def json_option(fn: Any) -> Any:
    """``-o/--output``, ``--json`` and ``--no-headers`` after the command name too (the same as
    the global ones)."""
    fn = click.option(
        "--no-headers",
        is_flag=True,
        expose_value=False,
        callback=_set_no_headers,
        help="Tables without their header line.",
    )(fn)
    fn = click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUTS),
        default=None,
        expose_value=False,
        callback=_setter("output"),
        help=OUTPUT_HELP,
    )(fn)
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print one JSON document on stdout (-o json).",
    )(fn)


def _setter(name: str) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        obj = ctx.find_object(Context)
        if value is not None and obj is not None:
            setattr(obj, name, value)

    return callback


def global_options(fn: Any) -> Any:
    """``--url``, ``--prefix`` and ``--json`` after the command name too (they win over the
    ones before it): ``distbreaker status payments --url redis://...``."""
    fn = click.option(
        "--prefix",
        default=None,
        expose_value=False,
        callback=_setter("prefix"),
        help="Key prefix (as before the command).",
    )(fn)
    fn = click.option(
        "--url", default=None, expose_value=False, callback=_setter("url"), help="Redis URL (as before the command)."
    )(fn)
    return json_option(fn)
