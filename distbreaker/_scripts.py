"""Lua loading and the EVALSHA/NOSCRIPT policy.

Each script is `lua/_lib.lua` (shared functions) followed by `lua/<name>.lua`, read once at
import. The text and its SHA1 are immutable; the SHA is never rewritten at run time.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["LuaScript", "SCRIPTS", "run", "source"]

NAMES = ("record", "acquire", "control", "read")


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


def _load() -> dict[str, LuaScript]:
    base = _lua_dir()
    lib = (base / "_lib.lua").read_bytes()
    scripts = {}
    for name in NAMES:
        text = lib + b"\n" + (base / f"{name}.lua").read_bytes()
        scripts[name] = LuaScript(name, text, hashlib.sha1(text).hexdigest())
    return scripts


SCRIPTS: dict[str, LuaScript] = _load()


def source(name: str) -> str:
    """Return the full text of script `name` (library included)."""
    return SCRIPTS[name].text.decode()


def run(client: Any, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """EVALSHA `script`; on NOSCRIPT (restart, failover, SCRIPT FLUSH) run EVAL with its text.

    EVAL also caches the script, so the next EVALSHA finds it; EVAL itself cannot answer
    NOSCRIPT, so no flush storm can leak the error to the caller.
    """
    try:
        return client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return client.execute_command("EVAL", script.text, len(keys), *keys, *args)
