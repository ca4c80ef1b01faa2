"""Lua loading and the EVALSHA/NOSCRIPT policy.

Each script is `lua/_head.lua`, then `lua/<name>.lua` with `lua/_lib.lua` (the general path)
inserted at its `--@lib` line; read once at import. The text and its SHA1 are immutable; the SHA is never rewritten at run time.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _schema
from ._core import Command, Eval

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["SCRIPTS", "LuaScript", "adrive", "drive", "eval_steps", "run", "source"]

T = TypeVar("T")

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
    # the config's names, defaults and bounds come from the one schema (distbreaker/_schema.py)
    if lib.count(b"\n--@schema\n") != 1:
        raise RuntimeError("lua/_lib.lua must contain one '--@schema' line")
    lib = lib.replace(b"\n--@schema\n", b"\n" + _schema.lua_constants().encode() + b"\n")
    scripts = {}
    for name in NAMES:
        body = (base / f"{name}.lua").read_bytes()
        if body.count(b"\n--@lib\n") != 1:
            raise RuntimeError(f"lua/{name}.lua must contain one '--@lib' line")
        text = head + b"\n" + body.replace(b"\n--@lib\n", b"\n" + lib + b"\n")
        scripts[name] = LuaScript(name, text, hashlib.sha1(text).hexdigest())
    return scripts


SCRIPTS: dict[str, LuaScript] = _load()

def _get_connection_args(pool_class: Any) -> tuple[str, ...]:
    """redis-py < 5.1 requires a command name in get_connection(); newer ones deprecate it."""
    param = inspect.signature(pool_class.get_connection).parameters.get("command_name")
    return ("EVALSHA",) if param is not None and param.default is inspect.Parameter.empty else ()


_GET_CONNECTION_ARGS = _get_connection_args(redis.ConnectionPool)
_AGET_CONNECTION_ARGS = _get_connection_args(redis.asyncio.ConnectionPool)
# The asyncio connection's "is it dirty" check: can_read() in redis-py >= 7 (its pool's own
# check), can_read_destructive() before.
_ACAN_READ = ("can_read" if hasattr(redis.asyncio.connection.AbstractConnection, "can_read")
              else "can_read_destructive")


def source(name: str) -> str:
    """Return the full text of script `name` (library included)."""
    return SCRIPTS[name].text.decode()


def lean_pool(client: Any) -> Any:
    """The pool to use for the lean path, or None to go through `client.execute_command`."""
    if type(client) is not redis.Redis:  # pipelines, clusters, subclasses: their own routing
        return None
    return client.connection_pool


def pack(command: tuple[Any, ...], encoding: str, errors: str) -> bytes | None:
    """`command` in RESP, as redis-py would send it: str in the client's encoding, bytes as
    they are, int in decimal. None when an argument is of any other type (the caller then
    lets redis-py pack it, with its own errors)."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        kind = type(arg)
        if kind is str:
            arg = arg.encode(encoding, errors)
        elif kind is int:
            arg = b"%d" % arg
        elif kind is not bytes:
            return None
        parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


# -- connections held between commands ------------------------------------------------------------
# A connection that completed a command cleanly is kept for the breaker's next command instead of
# going back through the pool: redis-py's checkout and release (locks, observability, a health
# check) cost ~10 µs of CPU per command in asyncio and ~20 µs in sync here. A held connection
# stays checked out of its pool, so nothing else takes it; before reuse it is checked as the pool
# would (`can_read`: the server closed it, or data is waiting), and one that fails the check goes
# back to the pool, disconnected. At most `cap` are held per pool (a quarter of the pool's size,
# 32 at most), so other users of a shared client keep most of its connections.

_HELD = "_distbreaker_held"  # the pool attribute holding its _Held list
_forks = 0  # bumped in a forked child: the parent's connections are not the child's


def _after_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class _Held(list):  # type: ignore[type-arg]
    __slots__ = ("cap", "fork")

    def __init__(self, pool: Any) -> None:
        super().__init__()
        size = getattr(pool, "max_connections", None) or 2**31
        self.cap = max(1, min(32, size // 4))
        self.fork = _forks


def _held(pool: Any) -> _Held:
    held: _Held | None = pool.__dict__.get(_HELD)
    if held is None or held.fork != _forks:
        held = pool.__dict__[_HELD] = _Held(pool)
    return held


def _packed(conn: Any, command: tuple[Any, ...]) -> bytes | None:
    """`pack` in the encoding of `conn`'s client."""
    encoder = conn.encoder
    return pack(command, encoder.encoding, encoder.encoding_errors)


def _execute(client: Any, pool: Any, command: tuple[Any, ...]) -> Any:
    """Send one command on a connection of the pool and read its reply.

    The same wire exchange as `client.execute_command`, without redis-py's per-command retry
    and instrumentation layers: the breaker has its own budget and backoff, and a retry here
    would multiply the delay a hung Redis adds to a protected call. The connection is held for
    the next command (see above).
    """
    if pool is None:
        return client.execute_command(*command)
    held = _held(pool)
    conn = _checkout(pool, held)
    try:
        packed = _packed(conn, command)
        if packed is None:
            conn.send_command(*command)
        else:
            conn.send_packed_command([packed])
        reply = conn.read_response()
    except ResponseError:
        _keep(pool, held, conn)  # an error reply: the connection is fine
        raise
    except BaseException:
        _discard(pool, conn)  # timeout, reset, interrupt mid-reply: never reuse it
        raise
    _keep(pool, held, conn)
    return reply


def _checkout(pool: Any, held: _Held) -> Any:
    """A held connection that passes the pool's own check, else one from the pool."""
    while held:
        try:
            candidate = held.pop()
        except IndexError:  # another thread took the last one
            break
        try:
            if not candidate.can_read():
                return candidate
        except (OSError, RedisError):
            pass
        _discard(pool, candidate)
    return pool.get_connection(*_GET_CONNECTION_ARGS)


def _discard(pool: Any, conn: Any) -> None:
    try:
        conn.disconnect()
    finally:
        pool.release(conn)


def _keep(pool: Any, held: _Held, conn: Any) -> None:
    if len(held) < held.cap:
        held.append(conn)
    else:
        pool.release(conn)


def eval_steps(request: Eval) -> Generator[Command, Any, Any]:
    """Run a script request: EVALSHA; on NOSCRIPT, EVAL; on NOCONFIG, once more with the config.

    EVAL also caches the script, so the next EVALSHA finds it; EVAL itself cannot answer
    NOSCRIPT, so no SCRIPT FLUSH storm can leak the error to the caller.
    """
    args = request.args
    script, keys = request.script, request.keys
    for attempt in (0, 1):
        try:
            try:
                return (yield Command(("EVALSHA", script.sha, len(keys), *keys, *args)))
            except NoScriptError:
                return (yield Command(("EVAL", script.text, len(keys), *keys, *args)))
        except ResponseError as exc:
            if request.config is None or attempt or "NOCONFIG" not in str(exc):
                raise
            args = [*args, *request.config]
    raise AssertionError("unreachable")


Steps = Generator[Command, Any, T]


def drive(client: Any, steps: Steps[T]) -> T:
    """Run `steps` on a sync client: each yielded command is executed, its reply (or redis
    error) sent back in. Redis errors the steps do not handle propagate untranslated."""
    pool = lean_pool(client)
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            command = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            reply, error = _execute(client, pool, command.args), None
        except RedisError as exc:
            reply, error = None, exc


def alean_pool(client: Any) -> Any:
    """`lean_pool` for asyncio: the pool of a plain `redis.asyncio.Redis`, else None."""
    if type(client) is not redis.asyncio.Redis or client.single_connection_client:
        return None
    return client.connection_pool


async def _asend(conn: Any, command: tuple[Any, ...]) -> None:
    """Write `command` on an asyncio connection.

    redis-py's `send_command` packs in pure Python (~6 µs for a record) and bounds the write
    with `asyncio.wait_for`, which on Python 3.11 runs the write as a task of its own: an extra
    event-loop cycle per command, ~30 µs of CPU per call here. A small command goes straight
    into the transport's buffer instead; only a write the socket does not take at once waits
    for it (within the socket timeout), as redis-py does. Errors are redis-py's.
    """
    writer: Any = getattr(conn, "_writer", None)
    packed = None if writer is None or conn.health_check_interval else _packed(conn, command)
    if packed is None:
        await conn.send_command(*command)  # redis-py's way (and its health check, if set)
        return
    try:
        writer.write(packed)
        if writer.transport.get_write_buffer_size():
            await asyncio.wait_for(writer.drain(), conn.socket_timeout)
        else:
            await writer.drain()  # raises a lost connection's error; does not wait
    except asyncio.TimeoutError:
        writer.transport.abort()  # drop what the hung server did not take; close the socket now
        raise RedisTimeoutError("Timeout writing to socket") from None
    except OSError as exc:
        raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc


async def _aexecute(client: Any, pool: Any, command: tuple[Any, ...]) -> Any:
    """`_execute` for asyncio (the same wire exchange as `execute_command`, without its retry
    and instrumentation layers; the connection is held for the next command)."""
    if pool is None:
        return await client.execute_command(*command)
    held = _held(pool)
    conn = await _acheckout(pool, held)
    try:
        await _asend(conn, command)
        reply = await conn.read_response()
    except ResponseError:
        await _akeep(pool, held, conn)  # an error reply: the connection is fine
        raise
    except BaseException:
        await _adiscard(pool, conn)  # timeout, reset, cancellation mid-reply: never reuse it
        raise
    await _akeep(pool, held, conn)
    return reply


async def _acheckout(pool: Any, held: _Held) -> Any:
    """`_checkout` for asyncio."""
    while held:
        candidate = held.pop()
        try:
            if candidate.is_connected and not await getattr(candidate, _ACAN_READ)():
                return candidate
        except (OSError, RedisError):
            pass
        await _adiscard(pool, candidate)
    return await pool.get_connection(*_AGET_CONNECTION_ARGS)


async def _adiscard(pool: Any, conn: Any) -> None:
    try:
        await conn.disconnect()
    finally:
        await pool.release(conn)


async def _akeep(pool: Any, held: _Held, conn: Any) -> None:
    if len(held) < held.cap:
        held.append(conn)
    else:
        await pool.release(conn)


async def adrive(client: Any, steps: Steps[T]) -> T:
    """`drive` for a `redis.asyncio` client."""
    pool = alean_pool(client)
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            command = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            reply, error = await _aexecute(client, pool, command.args), None
        except RedisError as exc:
            reply, error = None, exc


def run(client: Any, script: LuaScript, keys: Sequence[str], args: Sequence[Any],
        config: Sequence[str] | None = None) -> Any:
    """Run `script` once on a sync client (see `eval_steps`)."""
    return drive(client, eval_steps(Eval(script, tuple(keys), list(args), None if config is None else list(config))))
