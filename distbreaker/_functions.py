"""Redis Functions: the breaker's scripts as one library, called with FCALL (opt-in).

A worker user that may FCALL but not EVAL/EVALSHA/SCRIPT/FUNCTION runs our scripts and no
other Lua (docs/operations.md, "ACL: least privilege"). The library is generated from the same
script texts `_scripts` builds (each wrapped in a function whose parameters are named KEYS and
ARGV, so the text runs unchanged); its name carries a digest of those texts, so two versions of
distbreaker coexist on one server and a FUNCTION LOAD REPLACE only ever replaces an identical
library.

`control` (trip, disable, reset, config) takes a third key, ``<prefix>:{<service>}:op``, that
only the operator user may touch: FCALL checks declared keys against the caller's ACL before
the function runs, and the function's first command reads that key (so a call that names another
third key fails before any write too).

Who loads the library: the first FCALL that answers "Function not found" (a new server, a
restart without persistence, FUNCTION FLUSH) sends FUNCTION LOAD REPLACE and retries. A user
not allowed to load it (the worker) falls back to EVALSHA when that is allowed, else gets
`AccessDeniedError` naming ``distbreaker load-functions`` (run it with the operator's URL).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar

from redis.exceptions import NoPermissionError, ResponseError

from ._core import Command, Eval

C = TypeVar("C")  # a client, returned as given

__all__ = [
    "LIBRARY",
    "LIBRARY_NAME",
    "build",
    "fcall_steps",
    "functions_enabled",
    "library_name",
    "library_text",
    "load_steps",
    "use_functions",
]

_ATTR = "_distbreaker_functions"  # set on a client by use_functions()


def library_name(texts: Mapping[str, bytes]) -> str:
    """``distbreaker_<12 hex>``: the digest of the script texts (a new text, a new library)."""
    digest = hashlib.sha1(b"\0".join(texts[name] for name in sorted(texts))).hexdigest()[:12]
    return f"distbreaker_{digest}"


def library_text(texts: Mapping[str, bytes]) -> bytes:
    """The FUNCTION LOAD payload: one function ``<library>_<script>`` per script."""
    name = library_name(texts)
    parts = [f"#!lua name={name}\n".encode()]
    for script, text in texts.items():
        guard = b""
        if script == "control":
            # The operator-only key first: FCALL already refused a worker that names it; a caller
            # that names another third key is refused here, before the script reads or writes.
            guard = (
                b"if #KEYS ~= 3 or KEYS[3] ~= KEYS[1] .. ':op' then\n"
                b"  error('distbreaker: control needs KEYS[3] = KEYS[1] .. \\':op\\'')\nend\n"
                b"redis.call('EXISTS', KEYS[3])\n"
            )
        parts.append(
            b"redis.register_function('"
            + f"{name}_{script}".encode()
            + b"', function(KEYS, ARGV)\n"
            + guard
            + text
            + b"\nend)\n"
        )
    return b"".join(parts)


def build(scripts: Mapping[str, Any]) -> tuple[str, bytes, dict[str, Any]]:
    """(library name, library text, {name: LuaScript with `function` set}) from `scripts`."""
    import dataclasses

    texts = {name: s.text for name, s in scripts.items()}
    name = library_name(texts)
    return (
        name,
        library_text(texts),
        {key: dataclasses.replace(s, function=f"{name}_{key}") for key, s in scripts.items()},
    )


def use_functions(client: C, enabled: bool = True) -> C:
    """Make the Breakers and Admin built on `client` call the scripts with FCALL; returns it."""
    setattr(client, _ATTR, bool(enabled))
    return client


def functions_enabled(client: Any) -> bool:
    """True when `client` was made by ``connect(..., functions=True)`` or `use_functions`."""
    return bool(getattr(client, _ATTR, False))


LIBRARY_NAME = ""  # set by _scripts (the library of this version's scripts)
LIBRARY = b""


NO_FUNCTIONS = (
    "this server has no Redis Functions (FUNCTION and FCALL need Redis >= 7.0 or Valkey >= 7.2); "
    "connect without functions=True: the scripts then run with EVALSHA"
)


def _unknown(exc: ResponseError) -> bool:
    return str(exc).lower().startswith("unknown command")


def load_steps() -> Generator[Command, Any, Any]:
    """FUNCTION LOAD REPLACE of this version's library (a Cluster client sends it to every master)."""
    try:
        return (yield Command(("FUNCTION", "LOAD", "REPLACE", LIBRARY)))
    except ResponseError as exc:
        if _unknown(exc):  # the message would quote the library's text
            raise ResponseError(NO_FUNCTIONS) from None
        raise


class FunctionsNotLoaded(NoPermissionError):
    """The library is missing and this user may neither load it nor run EVALSHA."""


def fcall_steps(
    request: Eval, classic: Any, fallback: Callable[[Eval], Generator[Command, Any, Any]]
) -> Generator[Command, Any, Any]:
    """FCALL `request`; NOCONFIG → again with the config; "Function not found" → load and retry.

    `classic` is the EVALSHA twin of the request's script, run by `fallback` when this user may
    not load the library.
    """
    script, keys, args = request.script, request.keys, request.args
    if script.name == "control":
        keys = (keys[0], keys[1], keys[0] + ":op")
    config_added = loaded = False
    while True:
        try:
            return (yield Command(("FCALL", script.function, len(keys), *keys, *args)))
        except ResponseError as exc:
            message = str(exc)
            if "NOCONFIG" in message and request.config is not None and not config_added:
                config_added, args = True, [*args, *request.config]
                continue
            if _unknown(exc):
                raise ResponseError(NO_FUNCTIONS) from None
            if loaded or "function not found" not in message.lower():
                raise
        loaded = True
        try:
            yield from load_steps()
        except NoPermissionError:
            try:
                return (yield from fallback(request._replace(script=classic)))
            except NoPermissionError:
                raise FunctionsNotLoaded(
                    f"NOPERM the Redis Functions library {LIBRARY_NAME} is not loaded and this user may "
                    "neither load it nor run EVALSHA: run `distbreaker load-functions` with the operator's "
                    "URL (after every FUNCTION FLUSH, or a restart without persistence)"
                ) from None
