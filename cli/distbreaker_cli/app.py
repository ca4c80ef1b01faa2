"""The click application: global options and the one error boundary.

Every error ends as one line on stderr and an exit code (`exits.ExitStatus`): 0 ok ·
1 error (a Redis error, or some breakers of a listing could not be read) · 2 usage ·
3 unknown service · 65 a breaker's data is corrupt (``distbreaker reset SERVICE`` rewrites it) ·
69 Redis unreachable or timed out · 77 authentication/ACL denied · 130 interrupted.
Tracebacks only with --traceback.
"""

from __future__ import annotations

import errno
import gc
import importlib
import os
import sys
import traceback
from typing import Any

import click

from distbreaker.errors import redact

from . import _restore_interrupt, commands
from .context import OUTPUT_HELP, OUTPUTS, CliError, Context, password_from_env
from .exits import ExitStatus
from .failures import exit_for
from .params import Finite

__all__ = ["CliError", "Context", "cli", "main"]

CLI_TIMEOUT = 5.0
TIMEOUT_MAX = 3600.0
EXIT_CODES = (
    "Exit codes: 0 ok, 1 error (also: some breakers of a listing could not be read; a forced "
    "state another operator set, without --force), 2 usage, "
    "3 unknown service (--create acts on a breaker no worker has used), "
    "65 a breaker's data in Redis is corrupt (distbreaker reset SERVICE "
    "rewrites it), 69 Redis unreachable or timed out, 77 authentication/ACL denied, "
    "130 interrupted (Ctrl-C ends status --watch and demo with 0). Global options (--url, "
    "--prefix, -o/--json, --no-headers) go before or after the command. Shell completion: "
    'eval "$(_DISTBREAKER_COMPLETE=bash_source distbreaker)" (zsh_source, fish_source).'
)


# Commands whose modules are imported when the command is used (or listed: --help, completion),
# so that the start of every other command (`distbreaker status`) does not pay for them (the
# demo's multiprocessing, the dashboard's server): name -> (module of this package, attribute)
LAZY_COMMANDS = {
    "bulkheads": ("bulkheads", "bulkheads"),
    "dashboard": ("dashboard", "dashboard"),
    "demo": ("demo", "demo"),
    "exporter": ("exporter", "exporter"),
}


class Group(click.Group):
    """Maps every exception to one line on stderr and an exit code (tracebacks only with
    --traceback); imports the `LAZY_COMMANDS` when they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module, attribute = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f".{module}", __package__), attribute)
            self.add_command(command, cmd_name)
        return command

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
            raise exit_for(exc) from None
        finally:
            if isinstance(ctx.obj, Context):
                ctx.obj.close()

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's main, except that a usage error is one line (``Error: ... (see '... -h')``)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {redact(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Interrupted", err=True)
            sys.exit(ExitStatus.INTERRUPTED)
        except OSError as exc:
            if exc.errno != errno.EPIPE:  # stdout closed early (| head): not an error
                raise
            sys.stdout = click.utils._PacifyFlushWrapper(sys.stdout)
            sys.exit(ExitStatus.OK)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else ExitStatus.OK)


@click.group(
    cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}, epilog=EXIT_CODES
)
@click.version_option(package_name="distbreaker", prog_name="distbreaker")
@click.option(
    "--url",
    envvar=["DISTBREAKER_URL", "REDIS_URL"],
    default="redis://localhost:6379/0",
    show_default=True,
    help="Redis URL (env DISTBREAKER_URL, else REDIS_URL); "
    "redis://[user@]host:port/db (a password: see --password-file).",
)
@click.option(
    "--password-file",
    type=click.File("r"),
    default=None,
    metavar="PATH",
    help="Read the Redis password from this file (- for stdin); else env DISTBREAKER_PASSWORD "
    "or REDISCLI_AUTH. Keeps it out of ps and shell history. A password in --url wins.",
)
@click.option(
    "--prefix",
    envvar="DISTBREAKER_PREFIX",
    default="distbreaker",
    show_default=True,
    help="Key prefix of the breakers (env DISTBREAKER_PREFIX).",
)
@click.option(
    "--cluster",
    is_flag=True,
    envvar="DISTBREAKER_CLUSTER",
    help="--url names a node of a Redis Cluster (env DISTBREAKER_CLUSTER).",
)
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table", show_default=True, help=OUTPUT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout (-o json).")
@click.option("--no-headers", is_flag=True, help="Tables without their header line.")
@click.option(
    "--timeout",
    type=Finite(0, TIMEOUT_MAX, low_open=True),
    default=CLI_TIMEOUT,
    show_default=True,
    help="Redis timeout, seconds (at most 3600).",
)
@click.option("--no-color", is_flag=True, help="No colours (also with env NO_COLOR, or when not a terminal).")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show a traceback on errors.")
@click.pass_context
def cli(
    ctx: click.Context,
    url: str,
    password_file: Any,
    prefix: str,
    cluster: bool,
    output: str,
    as_json: bool,
    no_headers: bool,
    timeout: float,
    no_color: bool,
    show_traceback: bool,
) -> None:
    """Inspect and operate the circuit breakers a fleet shares through Redis.

    \b
    distbreaker status                          every breaker, a table (--json, --watch)
    distbreaker trip payments --for 10m --reason INC-42
    distbreaker reset payments --reason fixed
    distbreaker delete paymnets --yes           a breaker created by mistake
    distbreaker demo                            a live demo on an embedded server
    """
    color = False if no_color or os.environ.get("NO_COLOR") else None
    password = password_from_env()
    if password_file is not None:
        password = password_file.readline().rstrip("\r\n")
        password_file.close()
        if not password:
            raise CliError(f"--password-file {password_file.name}: the first line is empty", ExitStatus.USAGE)
    ctx.obj = Context(
        url,
        prefix,
        show_traceback,
        timeout,
        color,
        cluster,
        password=password,
        output="json" if as_json else output,
        no_headers=no_headers,
    )
    ctx.color = color


for _command in commands.COMMANDS:
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    _restore_interrupt()  # a Ctrl-C during the imports exited quietly with 130 (see __init__)
    # What the imports made lives as long as the command: out of the collector's reach, so that
    # its passes over what a command makes (10,000 breakers read) do not walk it again and again
    gc.freeze()
    cli(prog_name="distbreaker")


if __name__ == "__main__":  # pragma: no cover
    main()
