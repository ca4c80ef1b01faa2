"""Shell completion of service names, read from Redis.

click completes commands and options itself (``eval "$(_DISTBREAKER_COMPLETE=bash_source
distbreaker)"``); SERVICE arguments complete to the breakers `Admin.list` finds at the URL
and prefix of the command line, else of the environment (DISTBREAKER_URL / REDIS_URL,
DISTBREAKER_PREFIX, DISTBREAKER_PASSWORD / REDISCLI_AUTH). Completion never fails loudly: a
Redis that does not answer within a second completes nothing.
"""

from __future__ import annotations

import os
from typing import Any

import click
from click.shell_completion import CompletionItem

__all__ = ["COMPLETION_TIMEOUT", "complete_services"]

COMPLETION_TIMEOUT = 1.0
DEFAULT_URL = "redis://localhost:6379/0"


def _root_param(ctx: click.Context, name: str) -> Any:
    """A global option as the command line (or its envvar) gave it, during completion."""
    node: click.Context | None = ctx
    while node is not None:
        value = node.params.get(name)
        if value:
            return value
        node = node.parent
    return None


def complete_services(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The breakers whose names start with `incomplete` (at most 200)."""
    from distbreaker import Admin

    from .context import Context, password_from_env

    url = _root_param(ctx, "url") or os.environ.get("DISTBREAKER_URL") or os.environ.get("REDIS_URL") or DEFAULT_URL
    prefix = _root_param(ctx, "prefix") or os.environ.get("DISTBREAKER_PREFIX") or "distbreaker"
    obj = Context(
        str(url),
        str(prefix),
        False,
        COMPLETION_TIMEOUT,
        password=password_from_env(),
        cluster=bool(_root_param(ctx, "cluster")),
    )
    try:
        names = Admin(obj.client(), prefix=obj.prefix).list()
    except Exception:  # completion must never print a traceback into the user's shell
        return []
    finally:
        obj.close()
    already = set(ctx.params.get(param.name or "", None) or ()) if param.nargs == -1 else set()
    return [CompletionItem(n) for n in names if n.startswith(incomplete) and n not in already][:200]
