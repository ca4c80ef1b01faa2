"""Lua loading and the EVALSHA/NOSCRIPT policy.

Each script is `lua/_head.lua`, then `lua/<name>.lua` with `lua/_lib.lua` (the general path)
inserted at its `--@lib` line; read once at import. The text and its SHA1 are immutable; the SHA is
never rewritten at run time.

Sending a command (held connections, packing, the sync and asyncio drivers) is `_transport`'s;
`Steps`, `drive` and `adrive` are re-exported here for the modules that import them from here.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from . import _functions, _schema
from ._core import Command, Eval
from ._transport import Steps, _aexecute, _execute, adrive, alean_pool, drive, lean_pool, pack

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "FUNCTIONS",
    "OTHER_FUNCTIONS",
    "OTHER_SCRIPTS",
    "SCRIPTS",
    "LuaScript",
    "Steps",
    "adrive",
    "drive",
    "eval_steps",
    "run",
    "scripts_for",
    "source",
]
# also re-exported for older importers (benchmarks/peers.py): _aexecute, _execute, alean_pool,
# lean_pool, pack
_REEXPORTED = (_aexecute, _execute, alean_pool, lean_pool, pack)

NAMES = ("record", "acquire", "control", "read")
OTHER_NAMES = ("bulkhead",)  # standalone scripts: read as they are (no head, no library)


def _lua_dir() -> Traversable:
    packaged = importlib.resources.files("distbreaker") / "lua"
    if packaged.is_dir():  # wheel or sdist install
        return packaged
    return Path(__file__).resolve().parent.parent / "lua"  # checkout / pip install -e


@dataclass(frozen=True, slots=True)
class LuaScript:
    """One script: its name, full text (library + body) and SHA1."""

    name: str
    text: bytes
    sha: str
    function: str = ""  # FCALL name when called as a Redis Function ("" = EVALSHA); see _functions


# The breaker hash's hot fields: what the head reads into the locals H_<field> (docs/state-machine.md
# "Hash fields"). A script reads them all in the head, in one HMGET, unless it names the ones its
# fast path uses on a `--@fast-path-reads` line: then the head reads those and the rest are read where
# the library begins (the --@lib line), so the common call reads only what it uses.
HOT_FIELDS = (
    "st", "g", "ou", "be", "tc", "tf", "ts", "c0", "f0", "s0", "cx", "fu", "oc", "fp",
    "qb", "qn", "qr", "qm", "qc", "qs", "xr",
)  # fmt: skip
HEAD_NEEDS = ("st", "g", "fp", "xr")  # what the head itself uses (the state, the refresh rule, the reply)


def hot_reads(body: bytes, name: str) -> tuple[str, str]:
    """The Lua that reads the hot fields for script `body`: the head's line (replacing
    ``--@head-read`` in _head.lua) and the library's (before the --@lib text; '' = none)."""
    declared = [line for line in body.split(b"\n") if line.startswith(b"--@fast-path-reads")]
    if len(declared) > 1:
        raise RuntimeError(f"lua/{name}.lua has more than one '--@fast-path-reads' line")
    first = list(HOT_FIELDS)
    if declared:
        given = declared[0].decode().split()[1:]
        unknown = sorted(set(given) - set(HOT_FIELDS))
        if unknown or len(set(given)) != len(given):
            raise RuntimeError(
                f"lua/{name}.lua: '--@fast-path-reads' names unknown or repeated fields: {unknown or given}"
            )
        first = [f for f in HOT_FIELDS if f in given or f in HEAD_NEEDS]
    rest = [f for f in HOT_FIELDS if f not in first]

    def hmget(fields: list[str]) -> str:
        return "unpack(redis.call('HMGET', K_STATE, " + ", ".join(f"'{f}'" for f in fields) + "))"

    locals_ = ", ".join(f"H_{f}" for f in first)
    head = f"local {locals_} = {hmget(first)}"
    if not rest:
        return head, ""
    later = ", ".join(f"H_{f}" for f in rest)
    head += f"\nlocal {later}  -- (read where the library begins: this script's fast path does not use them)"
    return (
        head,
        f"-- the hot fields the fast path did not read (generated: _scripts.hot_reads)\n{later} = {hmget(rest)}",
    )


def build(base: Any) -> dict[str, bytes]:
    """The script texts of the lua/ directory `base` (a Path or Traversable): head, body, library."""
    head = (base / "_head.lua").read_bytes()
    lib = (base / "_lib.lua").read_bytes()
    # the config's names, defaults and bounds come from the one schema (distbreaker/_schema.py)
    if lib.count(b"\n--@schema\n") != 1:
        raise RuntimeError("lua/_lib.lua must contain one '--@schema' line")
    lib = lib.replace(b"\n--@schema\n", b"\n" + _schema.lua_constants().encode() + b"\n")
    if head.count(b"\n--@schema-head\n") != 1:
        raise RuntimeError("lua/_head.lua must contain one '--@schema-head' line")
    head = head.replace(b"\n--@schema-head\n", b"\n" + _schema.lua_head_constants().encode() + b"\n")
    if head.count(b"\n--@head-read\n") != 1:
        raise RuntimeError("lua/_head.lua must contain one '--@head-read' line")
    texts = {}
    for name in NAMES:
        body = (base / f"{name}.lua").read_bytes()
        if body.count(b"\n--@lib\n") != 1:
            raise RuntimeError(f"lua/{name}.lua must contain one '--@lib' line")
        first, rest = hot_reads(body, name)
        own_head = head.replace(b"\n--@head-read\n", b"\n" + first.encode() + b"\n")
        texts[name] = own_head + b"\n" + body.replace(b"\n--@lib\n", b"\n" + rest.encode() + b"\n" + lib + b"\n")
    return texts


def _load() -> dict[str, LuaScript]:
    return {name: LuaScript(name, text, hashlib.sha1(text).hexdigest()) for name, text in build(_lua_dir()).items()}


def _load_other() -> dict[str, LuaScript]:
    base = _lua_dir()
    texts = {name: (base / f"{name}.lua").read_bytes() for name in OTHER_NAMES}
    return {name: LuaScript(name, text, hashlib.sha1(text).hexdigest()) for name, text in texts.items()}


SCRIPTS: dict[str, LuaScript] = _load()  # the breaker's scripts
OTHER_SCRIPTS: dict[str, LuaScript] = _load_other()  # the others (the bulkhead's)
# The same scripts as one Redis Functions library, called with FCALL (opt-in: _functions).
_functions.LIBRARY_NAME, _functions.LIBRARY, _ALL_FUNCTIONS = _functions.build({**SCRIPTS, **OTHER_SCRIPTS})
FUNCTIONS = {name: _ALL_FUNCTIONS[name] for name in SCRIPTS}
OTHER_FUNCTIONS = {name: _ALL_FUNCTIONS[name] for name in OTHER_SCRIPTS}


def scripts_for(client: Any) -> dict[str, LuaScript]:
    """FUNCTIONS for a client made with ``functions=True`` (or `use_functions`), else SCRIPTS."""
    return FUNCTIONS if _functions.functions_enabled(client) else SCRIPTS


def source(name: str) -> str:
    """Return the full text of script `name` (library included)."""
    return SCRIPTS[name].text.decode()


def eval_steps(request: Eval) -> Generator[Command, Any, Any]:
    """Run a script request: EVALSHA; on NOSCRIPT, EVAL; on NOCONFIG, once more with the config.

    EVAL also caches the script, so the next EVALSHA finds it; EVAL itself cannot answer
    NOSCRIPT, so no SCRIPT FLUSH storm can leak the error to the caller.
    """
    args = request.args
    script, keys = request.script, request.keys
    if script.function:
        classic = SCRIPTS.get(script.name) or OTHER_SCRIPTS[script.name]
        return (yield from _functions.fcall_steps(request, classic, eval_steps))
    for attempt in (0, 1):
        try:
            try:
                return (yield Command(("EVALSHA", script.sha, len(keys), *keys, *args)))
            except NoScriptError:
                return (yield Command(("EVAL", script.text, len(keys), *keys, *args)))
        except NoPermissionError as exc:
            if "'evalsha'" in str(exc) or "'eval'" in str(exc):  # the worker role: no EVAL, FCALL only
                raise NoPermissionError(
                    f"{exc}: a user with FCALL and no EVAL (the worker role) needs "
                    "connect(url, functions=True) (docs/operations.md)"
                ) from None
            raise
        except ResponseError as exc:
            if request.config is None or attempt or "NOCONFIG" not in str(exc):
                raise
            args = [*args, *request.config]
    raise AssertionError("unreachable")


def run(
    client: Any, script: LuaScript, keys: Sequence[str], args: Sequence[Any], config: Sequence[str] | None = None
) -> Any:
    """Run `script` once on a sync client (see `eval_steps`)."""
    return drive(client, eval_steps(Eval(script, tuple(keys), list(args), None if config is None else list(config))))
