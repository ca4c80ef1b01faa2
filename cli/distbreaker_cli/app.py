"""The click application: global options and the one error boundary.

Exit codes: 0 ok · 1 unexpected · 2 usage · 3 unknown service · 69 Redis unreachable or
timed out · 77 authentication/ACL denied · 130 interrupted.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from typing import Any

import click

import distbreaker
from distbreaker import Admin, connect
from distbreaker.errors import (
    AccessDeniedError,
    ConfigError,
    DistbreakerError,
    RedisUnavailableError,
    UnknownServiceError,
    redact,
)

from .exits import ExitStatus
from .output import dumps, snapshot_dict, table

CLI_TIMEOUT = 5.0


@dataclass
class Context:
    url: str
    prefix: str
    json: bool
    traceback: bool
    timeout: float

    def admin(self) -> Admin:
        return Admin(connect(self.url, timeout=self.timeout), prefix=self.prefix)


class CliError(click.ClickException):
    """A one-line error with an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(redact(message))
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _exit_for(exc: BaseException) -> CliError:
    if isinstance(exc, UnknownServiceError):
        return CliError(f"{exc} (distbreaker status lists the breakers)", ExitStatus.UNKNOWN_SERVICE)
    if isinstance(exc, RedisUnavailableError):
        return CliError(f"{exc} (check --url / DISTBREAKER_URL)", ExitStatus.UNAVAILABLE)
    if isinstance(exc, AccessDeniedError):
        return CliError(f"{exc} (check the password and ACL of the user in --url)", ExitStatus.NO_PERMISSION)
    if isinstance(exc, ConfigError):
        return CliError(str(exc), ExitStatus.USAGE)
    if isinstance(exc, DistbreakerError):
        return CliError(str(exc), ExitStatus.ERROR)
    return CliError(f"unexpected {type(exc).__name__}: {exc} (run with --traceback for details)",
                    ExitStatus.ERROR)


class Group(click.Group):
    """Maps every exception to one line on stderr and an exit code (tracebacks only with --traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted", err=True)
            ctx.exit(ExitStatus.INTERRUPTED)
        except Exception as exc:
            obj = ctx.obj
            if isinstance(obj, Context) and obj.traceback:
                traceback.print_exc()
            raise _exit_for(exc) from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 unknown service, "
                    "69 Redis unreachable or timed out, 77 authentication/ACL denied, 130 interrupted.")
@click.version_option(package_name="distbreaker", prog_name="distbreaker")
@click.option("--url", envvar="DISTBREAKER_URL", default="redis://localhost:6379/0", show_default=True,
              help="Redis URL (env DISTBREAKER_URL).")
@click.option("--prefix", envvar="DISTBREAKER_PREFIX", default="distbreaker", show_default=True,
              help="Key prefix of the breakers (env DISTBREAKER_PREFIX).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--timeout", type=float, default=CLI_TIMEOUT, show_default=True, help="Redis timeout, seconds.")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show a traceback on errors.")
@click.pass_context
def cli(ctx: click.Context, url: str, prefix: str, as_json: bool, timeout: float, show_traceback: bool) -> None:
    """Inspect and operate the circuit breakers a fleet shares through Redis."""
    ctx.obj = Context(url, prefix, as_json, show_traceback, timeout)


@cli.command()
@click.argument("services", nargs=-1)
@click.pass_obj
def status(obj: Context, services: tuple[str, ...]) -> None:
    """Show the state of SERVICES (every breaker when none is named)."""
    admin = obj.admin()
    names = list(services) or admin.list()
    snapshots = [admin.status(s) for s in names]
    if obj.json:
        click.echo(dumps([snapshot_dict(s) for s in snapshots]))
    elif not snapshots:
        click.echo(f"no breakers under prefix {obj.prefix!r}", err=True)
    else:
        click.echo(table(snapshots))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="distbreaker")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["cli", "main", "distbreaker"]
