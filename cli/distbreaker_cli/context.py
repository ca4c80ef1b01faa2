"""What every command shares: the global options, the Redis client, output helpers, CliError."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

import click
from redis.exceptions import RedisClusterException, RedisError

from distbreaker import Admin, connect
from distbreaker.errors import ConfigError, RedisUnavailableError, redact, translate

__all__ = ["CliError", "Context", "global_options", "json_option"]


@dataclass
class Context:
    """The global options, and the Redis client made from them on first use."""

    url: str
    prefix: str
    json: bool
    traceback: bool
    timeout: float
    color: bool | None = None  # None: colour when stdout is a terminal
    cluster: bool = False
    _client: Any = field(default=None, repr=False)

    def client(self) -> Any:
        """The Redis client (`redis.Redis`, or `RedisCluster` with --cluster)."""
        if self._client is None:
            if self.cluster:
                self._client = _cluster_client(self.url, self.timeout)
            else:
                self._client = connect(self.url, timeout=self.timeout)
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
        """Terminal width to fit tables to, or None when stdout is not a terminal."""
        return shutil.get_terminal_size((120, 24)).columns if self.tty else None

    def out(self, text: str = "") -> None:
        """A line on stdout (styles kept only on a terminal, never with --no-color)."""
        click.echo(text, color=self.color)

    def note(self, text: str) -> None:
        """A message for people on stderr."""
        click.echo(text, err=True, color=self.color)

    def warn(self, text: str) -> None:
        """``warning: ...`` on stderr."""
        click.echo(click.style("warning: ", fg="yellow", bold=True) + text, err=True, color=self.color)


def _cluster_client(url: str, timeout: float) -> Any:
    from redis.cluster import RedisCluster

    if "://" not in url:
        raise ConfigError("url", f"must look like redis://host:port, got {redact(url)!r}")
    try:
        return RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except RedisClusterException as exc:
        raise RedisUnavailableError(f"Redis Cluster unavailable: {redact(str(exc))}") from exc
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


def json_option(fn: Any) -> Any:
    """``--json`` after the command name too (the same as the global one)."""
    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=_set_json,
                        help="Print one JSON document on stdout.")(fn)


def _setter(name: str) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        obj = ctx.find_object(Context)
        if value is not None and obj is not None:
            setattr(obj, name, value)

    return callback


def global_options(fn: Any) -> Any:
    """``--url``, ``--prefix`` and ``--json`` after the command name too (they win over the
    ones before it): ``distbreaker status payments --url redis://...``."""
    fn = click.option("--prefix", default=None, expose_value=False, callback=_setter("prefix"),
                      help="Key prefix (as before the command).")(fn)
    fn = click.option("--url", default=None, expose_value=False, callback=_setter("url"),
                      help="Redis URL (as before the command).")(fn)
    return json_option(fn)


