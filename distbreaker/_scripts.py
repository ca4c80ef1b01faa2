"""Lua loading and the EVALSHA/NOSCRIPT policy.

Each script is `lua/_head.lua`, then `lua/<name>.lua` with `lua/_lib.lua` (the general path)
inserted at its `--@lib` line; read once at import. The text and its SHA1 are immutable; the SHA is never rewritten at run time.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import inspect
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import NoScriptError, ResponseError

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
    head = (base / "_head.lua").read_bytes()
    lib = (base / "_lib.lua").read_bytes()
    scripts = {}
    for name in NAMES:
        body = (base / f"{name}.lua").read_bytes()
        if body.count(b"\n--@lib\n") != 1:
            raise RuntimeError(f"lua/{name}.lua must contain one '--@lib' line")
        text = head + b"\n" + body.replace(b"\n--@lib\n", b"\n" + lib + b"\n")
        scripts[name] = LuaScript(name, text, hashlib.sha1(text).hexdigest())
    return scripts


SCRIPTS: dict[str, LuaScript] = _load()

# redis-py < 5.1 requires a command name in get_connection(); newer ones deprecate passing it.
_param = inspect.signature(redis.ConnectionPool.get_connection).parameters.get("command_name")
_GET_CONNECTION_ARGS: tuple[str, ...] = (
    ("EVALSHA",) if _param is not None and _param.default is inspect.Parameter.empty else ())


def source(name: str) -> str:
    """Return the full text of script `name` (library included)."""
    return SCRIPTS[name].text.decode()


def _connection_path(client: Any) -> Any:
    """The pool to use for the lean path, or None to go through `client.execute_command`."""
    if type(client) is not redis.Redis:  # pipelines, clusters, subclasses: their own routing
        return None
    return client.connection_pool


def _execute(client: Any, *command: Any) -> Any:
    """Send one command on a pooled connection and read its reply.

    The same wire exchange as `client.execute_command`, without redis-py's per-command retry
    and instrumentation layers: the breaker has its own budget and backoff, and a retry here
    would multiply the delay a hung Redis adds to a protected call.
    """
    pool = _connection_path(client)
    if pool is None:
        return client.execute_command(*command)
    conn = pool.get_connection(*_GET_CONNECTION_ARGS)
    try:
        conn.send_command(*command)
        return conn.read_response()
    except ResponseError:
        raise  # an error reply: the connection is fine
    except BaseException:
        conn.disconnect()  # timeout, reset, interrupt mid-reply: never reuse it
        raise
    finally:
        pool.release(conn)


def run(client: Any, script: LuaScript, keys: Sequence[str], args: Sequence[Any],
        config: Sequence[str] | None = None) -> Any:
    """EVALSHA `script`; on NOSCRIPT (restart, failover, SCRIPT FLUSH) run EVAL with its text.

    EVAL also caches the script, so the next EVALSHA finds it; EVAL itself cannot answer
    NOSCRIPT, so no flush storm can leak the error to the caller. When the script answers
    NOCONFIG (its stored config fingerprint differs) and `config` is given, the call is
    repeated once with the config values appended.
    """
    try:
        try:
            return _execute(client, "EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return _execute(client, "EVAL", script.text, len(keys), *keys, *args)
    except ResponseError as exc:
        if config is None or "NOCONFIG" not in str(exc):
            raise
    return run(client, script, keys, [*args, *config])
