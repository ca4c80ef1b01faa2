"""The lean send path: one command on a redis-py connection, without redis-py's per-command layers.

The breaker sends one small command at a time (EVALSHA / EVAL) and has its own budget and
backoff, so it skips redis-py's per-command retry, instrumentation and pool round trip: a
connection that completed a command cleanly is held for the next one (see "connections held
between commands"), commands are packed here (`pack`); in asyncio the tasks of a loop share one
pipelined connection per pool (`_aio_pipe`, driven by `_aexecute`). Clients this path does not
know (clusters, pipelines, subclasses, single-connection clients) go through their own
`execute_command`.

This is the module that depends on redis-py's internals. Every one it touches (and those
`_connect`, `_cluster` and `_aio_pipe` rely on) is listed in `INTERNALS` with the reason;
tests/client/test_redis_internals.py checks each on the installed redis-py, and CI runs it on the
oldest (5.0.1) and the newest redis-py the project accepts.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import select
import socket
import struct
import sys
from asyncio import get_running_loop
from collections.abc import Generator
from time import monotonic
from typing import Any, NamedTuple, TypeVar, cast

import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _resp
from ._aio_pipe import pipes_for
from ._bulk import aclient_pipeline, client_pipeline
from ._core import Command, Pipelined
from .errors import ConfigError

__all__ = [
    "INTERNALS",
    "Internal",
    "Steps",
    "adrive",
    "ainit",
    "alane_for",
    "alean_pool",
    "apipeline",
    "check_client",
    "ALane",
    "Lane",
    "drive",
    "lane_for",
    "lean_pool",
    "pack",
    "pipeline",
]

T = TypeVar("T")

Steps = Generator[Command, Any, T]


class Internal(NamedTuple):
    """One redis-py internal this package relies on.

    `attribute` is ``Class.name`` in `module`; ``a|b`` means either name (versions differ).
    `shape`: ``method`` (a plain function on the class), ``coroutine`` (an ``async def`` on the
    class), ``attribute`` (set on every instance, or a property), ``class attribute``, or
    ``parameter`` (``Class.__init__`` or ``Class.method`` accepts a keyword named after the colon:
    ``Class.__init__:name``).
    """

    module: str
    attribute: str
    shape: str
    why: str


_SYNC_POOL = "redis.connection"
_ASYNC = "redis.asyncio.connection"

INTERNALS: tuple[Internal, ...] = (
    # -- sync lean path (_execute) -------------------------------------------------------------
    Internal(
        _SYNC_POOL,
        "ConnectionPool.get_connection",
        "method",
        "checks a connection out for the lean path; takes a command name before redis-py 5.1 (_GET_CONNECTION_ARGS)",
    ),
    Internal(_SYNC_POOL, "ConnectionPool.release", "method", "gives a connection back (not held, or discarded)"),
    Internal(
        _SYNC_POOL,
        "ConnectionPool.max_connections",
        "attribute",
        "sizes the held list: a quarter of the pool, 32 at most",
    ),
    Internal(
        _SYNC_POOL,
        "ConnectionPool.__dict__",
        "attribute",
        "the held list is stored on the pool (pool.__dict__['_distbreaker_held']): it lives and dies with the pool",
    ),
    Internal(
        _SYNC_POOL,
        "Connection.can_read",
        "method",
        "the pool's own dirty check (closed by the server, or data waiting), run on a held connection before reuse",
    ),
    Internal(_SYNC_POOL, "Connection.send_packed_command", "method", "writes a command packed by `pack`"),
    Internal(_SYNC_POOL, "Connection.send_command", "method", "writes a command `pack` does not handle"),
    Internal(_SYNC_POOL, "Connection.read_response", "method", "reads the reply, redis-py's errors"),
    Internal(_SYNC_POOL, "Connection.disconnect", "method", "drops a connection that failed mid-command"),
    Internal(
        _SYNC_POOL,
        "Connection._sock",
        "attribute",
        "the connected socket (None when disconnected): the lane writes and reads it directly (Lane)",
    ),
    Internal(
        _SYNC_POOL,
        "Connection._parser",
        "attribute",
        "its parse_error() turns an error reply the lane read into redis-py's exception "
        "(NoScriptError, ReadOnlyError, ...), as read_response would",
    ),
    Internal(_SYNC_POOL, "Connection.protocol", "attribute", "the lane speaks RESP2 only"),
    Internal(
        _SYNC_POOL,
        "Connection.health_check_interval",
        "attribute",
        "when set, commands go through redis-py's send (which runs the health check), not the lane",
    ),
    Internal(
        _SYNC_POOL,
        "Connection.__dict__",
        "attribute",
        "the lane's per-socket state (poller, reader, buffer) is stored on the connection",
    ),
    Internal(
        _SYNC_POOL,
        "Connection.encoder",
        "attribute",
        "its .encoding and .encoding_errors: `pack` encodes str as the client would",
    ),
    Internal("redis.client", "Redis.connection_pool", "attribute", "the pool of a plain redis.Redis"),
    # -- asyncio lean path (_aexecute, _aio_pipe) ----------------------------------------------
    Internal(
        _ASYNC,
        "ConnectionPool.get_connection",
        "coroutine",
        "sets up the pipelined connection (redis-py's TLS, AUTH, SELECT); command name before 5.1",
    ),
    Internal(_ASYNC, "ConnectionPool.release", "coroutine", "gives a dropped pipe's connection back"),
    Internal(
        _ASYNC,
        "ConnectionPool.connection_kwargs",
        "attribute",
        "socket_timeout (the budget a pipe waits for a reply), encoding, encoding_errors, decode_responses",
    ),
    Internal(_ASYNC, "ConnectionPool.__dict__", "attribute", "the pipes are stored on the pool, per event loop"),
    Internal(
        _ASYNC,
        "Connection._writer",
        "attribute",
        "asyncio.StreamWriter of a connection set up by the pool: its transport is taken over by "
        "the pipe (transport.set_protocol)",
    ),
    Internal(_ASYNC, "Connection.disconnect", "coroutine", "closes a dropped pipe's connection before release"),
    Internal(
        "redis.connection",
        "DefaultParser.parse_error",
        "method",
        "turns an error reply into redis-py's exception (NoScriptError, ResponseError, ...)",
    ),
    Internal("redis.asyncio.client", "Redis.connection_pool", "attribute", "the pool of a plain redis.asyncio.Redis"),
    Internal(
        "redis.asyncio.client",
        "Redis.single_connection_client",
        "attribute",
        "a single-connection client keeps its own connection: it goes through execute_command",
    ),
    # -- asyncio cluster (ainit) ---------------------------------------------------------------
    Internal(
        "redis.asyncio.cluster",
        "RedisCluster._initialize",
        "attribute",
        "True until initialize() ran: a user-built client is initialised once before its first "
        "command (concurrent first commands raise AttributeError on redis-py 8.1)",
    ),
    Internal(
        "redis.asyncio.cluster", "RedisCluster.initialize", "coroutine", "initialises once under redis-py's own lock"
    ),
    Internal("redis.asyncio.cluster", "RedisCluster.nodes_manager", "attribute", "tells a cluster client apart"),
    # -- _cluster, _connect --------------------------------------------------------------------
    Internal(
        "redis.cluster",
        "RedisCluster.RedisClusterRequestTTL",
        "class attribute",
        "set per client to REDIRECTS: MOVED/ASK followed at most twice within a budget",
    ),
    Internal(
        "redis.asyncio.cluster",
        "RedisCluster.RedisClusterRequestTTL",
        "class attribute",
        "the same for the asyncio cluster client",
    ),
    Internal(
        "redis.connection",
        "AbstractConnection.__init__:driver_info|lib_name",
        "parameter",
        "no CLIENT SETINFO on connect (driver_info=None since redis-py 7, lib_name=None before)",
    ),
    Internal(
        "redis.connection",
        "AbstractConnection.__init__:protocol",
        "parameter",
        "protocol=2: no HELLO on connect (redis-py 8 defaults to RESP3, one more round trip)",
    ),
)


def _get_connection_args(pool_class: Any) -> tuple[str, ...]:
    """redis-py < 5.1 requires a command name in get_connection(); newer ones deprecate it."""
    param = inspect.signature(pool_class.get_connection).parameters.get("command_name")
    return ("EVALSHA",) if param is not None and param.default is inspect.Parameter.empty else ()


_GET_CONNECTION_ARGS = _get_connection_args(redis.ConnectionPool)


def check_client(client: Any, asynchronous: bool) -> None:
    """Refuse a client of the other world (sync for asyncio or the reverse) at construction.

    Raises:
        ConfigError: `client` is a redis-py client whose commands are (or are not) coroutines.
    """
    execute = getattr(type(client), "execute_command", None)
    if execute is None:
        return  # not a redis-py client: the first call says what is missing
    if asynchronous and not inspect.iscoroutinefunction(execute):
        raise ConfigError(
            "redis",
            f"{type(client).__name__} is a sync client: distbreaker.asyncio needs a "
            "redis.asyncio client (distbreaker.asyncio.connect(url), "
            "redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster)",
        )
    if not asynchronous and inspect.iscoroutinefunction(execute):
        raise ConfigError(
            "redis",
            f"{type(client).__name__} is an asyncio client: use distbreaker.asyncio "
            "(or a sync client: distbreaker.connect(url), redis.Redis or "
            "redis.cluster.RedisCluster)",
        )


def lean_pool(client: Any) -> Any:
    """The pool to use for the lean path, or None to go through `client.execute_command`."""
    if type(client) is not redis.Redis:  # pipelines, clusters, subclasses: their own routing
        return None
    return client.connection_pool


def alean_pool(client: Any) -> Any:
    """`lean_pool` for asyncio: the pool of a plain `redis.asyncio.Redis`, else None."""
    if type(client) is not redis.asyncio.Redis or client.single_connection_client:
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


def _packed(conn: Any, command: tuple[Any, ...]) -> bytes | None:
    """`pack` in the encoding of `conn`'s client."""
    encoder = conn.encoder
    return pack(command, encoder.encoding, encoder.encoding_errors)


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
        _leave(candidate)  # held by a Lane: its socket as redis-py set it
        try:
            if not candidate.can_read():
                return candidate
        except (OSError, RedisError):
            pass
        _discard(pool, candidate)
    return pool.get_connection(*_GET_CONNECTION_ARGS)


def _redis_error(exc: BaseException, doing: str) -> BaseException:
    """What the send path raises for `exc`, met while `doing` on a held connection: redis-py's
    timeout, protocol and connection errors (as its own I/O raises them); anything else as is."""
    if isinstance(exc, (TimeoutError, BlockingIOError)):
        return RedisTimeoutError("Timeout reading from socket")
    if isinstance(exc, _resp.ProtocolError):
        return InvalidResponse(f"Protocol error: {exc}")
    if isinstance(exc, OSError):
        return RedisConnectionError(f"Error while {doing}: {exc}")
    return exc


def _cause(exc: BaseException) -> BaseException | None:
    """The cause `_redis_error(exc)` is raised from: the OSError of a connection error, else none
    (a timeout or a protocol error says all; an error raised as is keeps its own)."""
    if isinstance(exc, (TimeoutError, BlockingIOError, _resp.ProtocolError)):
        return None
    if isinstance(exc, OSError):
        return exc
    return exc.__cause__


def _discard(pool: Any, conn: Any) -> None:
    try:
        conn.disconnect()
    finally:
        pool.release(conn)


def _keep(pool: Any, held: _Held, conn: Any) -> None:
    if len(held) < held.cap:
        held.append(conn)
    else:
        _leave(conn)
        pool.release(conn)


# -- the lane: record and acquire straight on the held connection's socket -------------------------
# The breaker's own call-path scripts (record, acquire) go through a `Lane` when the client is a
# plain redis.Redis over TCP or a Unix socket with RESP2 (what `connect()` makes): the EVALSHA is
# packed once per distinct request (the core hands back the same request object while the
# generation and the outcome stay the same), written with one `sendall` on the held connection's
# socket, and its reply read with `recv_into` a buffer kept per connection (one `recv` when it
# fits) and parsed by hiredis (`_resp`; a parser of ours where hiredis is missing). redis-py
# still makes, authenticates and closes the connection; a held connection is checked before
# reuse as above (a `poll` kept per socket: closed by the server, or data waiting); any failure
# drops it. Anything else (SSL, RESP3, a health-check interval, clusters, FCALL) goes through
# `drive`.
#
# Timeouts: redis-py bounds a socket operation with the socket's timeout, for which Python polls
# before every send and recv (two more system calls per command). On Linux, while the lane holds
# a connection, its socket is blocking with a bound set in the kernel (SO_SNDTIMEO /
# SO_RCVTIMEO, a little under the timeout; the rest waited out with `poll` when it passes:
# `_Wire`): the write and each read still end after exactly `socket_timeout`, with one system
# call each when Redis answers. The socket is set back (`_leave`) before the connection goes
# anywhere else (the pool, or a command of `_execute`). Elsewhere the lane keeps Python's way.

_LANE = "_distbreaker_lane"  # the connection attribute holding its `_Wire`
_LEAN_CONNECTIONS = (redis.connection.Connection, redis.connection.UnixDomainSocketConnection)
_HAS_POLL = hasattr(select, "poll")
_DIRTY = (select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP) if _HAS_POLL else 0
_RECV_SIZE = 16384
_PIPELINE_RECV_SIZE = 262144  # `pipeline`: the replies of a few hundred breakers in a few reads
_PACKED_MAX = 64  # packed requests kept per lane
_TIMEVAL = "ll"  # struct timeval on Linux
_KERNEL_TIMEOUTS = sys.platform.startswith("linux") and struct.calcsize(_TIMEVAL) == 16
_NO_TIMEOUT = struct.pack(_TIMEVAL, 0, 0) if _KERNEL_TIMEOUTS else b""


def _jiffy_us(sock: Any) -> int:
    """The kernel's timeout granularity in µs (a 1 µs SO_RCVTIMEO reads back as one tick)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack(_TIMEVAL, 0, 1))
    sec, usec = struct.unpack(_TIMEVAL, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _NO_TIMEOUT)
    return max(1, int(sec) * 1_000_000 + int(usec))


_JIFFY_US = 0  # measured on the first socket


class _Wire:
    """What the lane keeps for one socket of a connection.

    Kernel timeouts tick in jiffies (1-10 ms) and a long one may fire up to 1/8 late (the timer
    wheel), so the kernel's bound is set under the socket timeout (7/8 of it, whole ticks); when
    it passes, the rest of the timeout is waited out with `poll`: a write and each read end after
    exactly the socket timeout, as in redis-py, never sooner or later. A timeout under two ticks
    keeps Python's way.
    """

    __slots__ = ("buf", "kernel", "kernel_tv", "poller", "reader", "sock", "timeout")

    def __init__(self, conn: Any, sock: Any) -> None:
        global _JIFFY_US
        self.sock = sock
        self.poller = select.poll()
        self.poller.register(sock, _DIRTY)
        encoder = conn.encoder
        self.reader = _resp.reader(encoder.encoding if encoder.decode_responses else None, encoder.encoding_errors)
        self.buf = bytearray(_RECV_SIZE)
        self.kernel = False  # the socket is blocking now, its bound set in the kernel (see above)
        self.timeout: float | None = sock.gettimeout()  # Python's timeout of the socket
        self.kernel_tv = b""  # the kernel's bound; b"": Python's timeouts only
        if _KERNEL_TIMEOUTS and self.timeout is not None:
            if not _JIFFY_US:
                _JIFFY_US = _jiffy_us(sock)
            ticks = int(self.timeout * 1e6 * 7 / 8) // _JIFFY_US
            if ticks >= 2:
                usec = ticks * _JIFFY_US
                self.kernel_tv = struct.pack(_TIMEVAL, usec // 1_000_000, usec % 1_000_000)

    def enter(self) -> bool:
        """Put the socket in kernel-timeout mode; False when this socket keeps Python's."""
        if not self.kernel_tv:
            return False
        sock = self.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self.kernel_tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.kernel_tv)
        sock.settimeout(None)
        self.kernel = True
        return True

    def leave(self) -> None:
        """Give the socket back its Python timeout."""
        if self.kernel:
            self.kernel = False
            sock = self.sock
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _NO_TIMEOUT)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _NO_TIMEOUT)
            sock.settimeout(self.timeout)

    def send_rest(self, data: bytes, sent: int, deadline: float) -> None:
        """Kernel mode, a write the kernel's bound cut short: the rest, until `deadline`."""
        view = memoryview(data)
        while sent < len(data):
            left = deadline - monotonic()
            if left <= 0 or not select.select((), (self.sock,), (), left)[1]:
                raise TimeoutError
            try:
                sent += self.sock.send(view[sent:])
            except BlockingIOError:
                pass

    def recv_rest(self, deadline: float) -> int:
        """Kernel mode, a read the kernel's bound ended: wait out the rest, until `deadline`."""
        left = deadline - monotonic()
        if left > 0 and self.poller.poll(left * 1000):
            return int(self.sock.recv_into(self.buf))  # readable: returns at once
        raise TimeoutError


def _leave(conn: Any) -> None:
    """`conn` leaves the lane (to the pool, or to `_execute`): its socket as redis-py set it."""
    wire = conn.__dict__.get(_LANE)
    if wire is not None and wire.kernel and wire.sock is conn._sock:
        try:
            wire.leave()
        except OSError:  # a broken socket: redis-py finds out on its own
            pass


_NOT_LEAN: Any = object()


def _wire_of(conn: Any) -> Any:
    """The connection's `_Wire` for its current socket; None when it is not connected;
    `_NOT_LEAN` when the lane cannot speak for it."""
    sock = conn._sock
    wire = conn.__dict__.get(_LANE)
    if wire is not None and wire.sock is sock:
        return wire
    if sock is None:
        return None
    if (
        type(conn) not in _LEAN_CONNECTIONS
        or conn.protocol not in (2, "2")
        or conn.health_check_interval
        or sock.gettimeout() == 0
    ):
        return _NOT_LEAN
    wire = conn.__dict__[_LANE] = _Wire(conn, sock)
    return wire


class Lane:
    """The lean path of one sync breaker for its call-path scripts (see above).

    `run(request)` returns the reply of an EVALSHA `Eval`, or raises redis-py's exception:
    ``ResponseError`` and its subclasses for an error reply (NOSCRIPT included: the caller goes on
    with `drive(..., answered=exc)`), ``TimeoutError``/``ConnectionError`` when the socket fails.
    `on` turns False for good when the pool's connections turn out not to be lean ones (the
    request found that out is run by `_execute`).
    """

    __slots__ = ("client", "on", "packed", "pool")

    def __init__(self, client: Any, pool: Any) -> None:
        self.client, self.pool, self.on = client, pool, True
        self.packed: dict[int, tuple[Any, bytes]] = {}  # id(request) -> (request, its RESP bytes)

    def bytes_of(self, request: Any, encoder: Any) -> bytes:
        """`request` packed (once: the entry keeps `request` alive, so no other object can have
        its id meanwhile)."""
        entry = self.packed.get(id(request))
        if entry is not None:
            return entry[1]
        packed = pack(_command(request), encoder.encoding, encoder.encoding_errors)
        if packed is None:  # pragma: no cover - the core's arguments are str and int
            raise TypeError("a script argument is neither str, bytes nor int")
        if len(self.packed) >= _PACKED_MAX:
            self.packed.clear()
        self.packed[id(request)] = (request, packed)
        return packed

    def run(self, request: Any) -> Any:
        pool = self.pool
        held = pool.__dict__.get(_HELD)
        if held is None or held.fork != _forks:
            held = _held(pool)
        while True:  # a held connection that passes the check, else one from the pool
            try:
                conn = held.pop()
            except IndexError:
                conn = pool.get_connection(*_GET_CONNECTION_ARGS)
                wire = _wire_of(conn)
                break
            wire = conn.__dict__.get(_LANE)
            if wire is None or wire.sock is not conn._sock:
                wire = _wire_of(conn)
            if wire is _NOT_LEAN or (wire is not None and not wire.poller.poll(0)):
                break
            _discard(pool, conn)  # closed by the server, data waiting, or disconnected
        if wire is None or wire is _NOT_LEAN:
            if wire is _NOT_LEAN:
                self.on = False
            _keep(pool, held, conn)
            return _execute(self.client, pool, _command(request))
        entry = self.packed.get(id(request))
        packed = entry[1] if entry is not None else self.bytes_of(request, conn.encoder)
        sock, reader, buf = wire.sock, wire.reader, wire.buf
        try:
            if wire.kernel or wire.enter():
                deadline = monotonic() + wire.timeout
                try:
                    sent = sock.send(packed)
                except BlockingIOError:
                    sent = 0
                if sent < len(packed):
                    wire.send_rest(packed, sent, deadline)
            else:
                sock.sendall(packed)
                deadline = 0.0
        except BaseException as exc:
            _discard(pool, conn)
            if isinstance(exc, (TimeoutError, BlockingIOError)):
                raise RedisTimeoutError("Timeout writing to socket") from None
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
            raise
        try:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:  # the kernel's bound, a little under the timeout
                n = wire.recv_rest(deadline)
            reader.feed(buf, 0, n)
            reply = reader.gets()
            while reply is False:
                if not n:
                    raise RedisConnectionError("Connection closed by server.")
                if wire.kernel:
                    deadline = monotonic() + wire.timeout
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    n = wire.recv_rest(deadline)
                reader.feed(buf, 0, n)
                reply = reader.gets()
        except BaseException as exc:
            _discard(pool, conn)  # timeout, reset, interrupt mid-reply: never reuse it
            raise _redis_error(exc, "reading from socket") from _cause(exc)
        if reader.has_data():  # more than one reply to one command: out of step
            _discard(pool, conn)
            raise InvalidResponse("Protocol error: more than one reply to one command")
        if len(held) < held.cap:
            held.append(conn)
        else:
            _keep(pool, held, conn)
        if type(reply) is _resp.ReplyError:
            raise conn._parser.parse_error(reply.args[0])
        return reply


def _command(request: Any) -> tuple[Any, ...]:
    """The EVALSHA of an `Eval` (the first command of `_scripts.eval_steps`)."""
    keys = request.keys
    return ("EVALSHA", request.script.sha, len(keys), *keys, *request.args)


def lane_for(client: Any) -> Lane | None:
    """A `Lane` for a plain sync redis.Redis (where `select.poll` exists), else None: its
    commands go through `drive`."""
    pool = lean_pool(client)
    return None if pool is None or not _HAS_POLL else Lane(client, pool)


# -- pipelines of many commands (the bulk reads of many breakers) ------------------------------


def pipeline(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """`commands` as one pipeline without a transaction: the replies in order, an error reply
    (`ResponseError`) in the place of its reply.

    On a plain redis.Redis the commands are packed here (`pack`), written at once on a
    connection of the pool and read back with its `read_response`, without redis-py's
    per-command layers: a few microseconds of the client a command (the bulk reads of many
    breakers). The replies are then as the server sends them (HGETALL: a flat list in RESP2,
    TIME: two bytes). Other clients (clusters: each key to its node) run their own pipeline,
    whose replies went through redis-py's response callbacks (HGETALL: a dict): callers take both.
    """
    pool = lean_pool(client)
    if pool is not None:
        held = _held(pool)
        conn = _checkout(pool, held)
        encoder = conn.encoder
        encoding, errors = encoder.encoding, encoder.encoding_errors
        packed = [pack(command, encoding, errors) for command in commands]
        if None not in packed:
            return _pipelined(pool, held, conn, commands, packed)
        _keep(pool, held, conn)  # an argument `pack` does not handle: redis-py's pipeline
    return client_pipeline(client, commands)


def _pipelined(pool: Any, held: _Held, conn: Any, commands: list[tuple[Any, ...]], packed: list[Any]) -> list[Any]:
    """The packed `commands` written at once on `conn`, their replies read (see `pipeline`):
    straight from its socket and parsed by hiredis (`_resp`) where the lane can speak for the
    connection (TCP or a Unix socket, RESP2, no health-check interval), else with redis-py's
    `read_response`. Each write and read is bounded by the socket's timeout, as in redis-py."""
    data = b"".join(packed)
    wire = _wire_of(conn)
    replies: list[Any] = []
    try:
        if wire is None or wire is _NOT_LEAN:
            conn.send_packed_command([data])
            read = conn.read_response
            for _ in commands:
                try:
                    replies.append(read())
                except ResponseError as exc:  # an error reply: the others are read on
                    replies.append(exc)
        else:
            _exchange(conn, wire, data, len(commands), replies)
    except BaseException as exc:
        _discard(pool, conn)  # timeout, reset, interrupt mid-reply: never reuse it
        raise _redis_error(exc, "talking to the socket") from _cause(exc)
    _keep(pool, held, conn)
    return replies


def _exchange(conn: Any, wire: _Wire, data: bytes, count: int, replies: list[Any]) -> None:
    """Write `data` on the socket of `wire`, then read `count` replies into `replies` (error
    replies as redis-py's exceptions, in their place)."""
    sock = wire.sock
    sock.sendall(data)
    encoder = conn.encoder
    reader = _resp.reader(encoder.encoding if encoder.decode_responses else None, encoder.encoding_errors)
    parse_error = conn._parser.parse_error
    buf = bytearray(_PIPELINE_RECV_SIZE)
    while len(replies) < count:
        n = sock.recv_into(buf)
        if not n:
            raise RedisConnectionError("Connection closed by server.")
        reader.feed(buf, 0, n)
        reply = reader.gets()
        while reply is not False:
            replies.append(parse_error(reply.args[0]) if type(reply) is _resp.ReplyError else reply)
            reply = reader.gets()
    if len(replies) > count or reader.has_data():  # more replies than commands: out of step
        raise _resp.ProtocolError("more replies than commands")


async def apipeline(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """`pipeline` for asyncio: on a plain redis.asyncio.Redis, the commands go on the pool's
    pipelined connection for the running loop (`_aio_pipe`: written together, their replies
    complete futures in order), as the server sends them; other clients run their own pipeline.
    A connection error or timeout is raised (not put in place of a reply)."""
    pool = alean_pool(client)
    if pool is not None:
        pipes = pipes_for(pool)
        packed = [pipes.pack(command) for command in commands]
        if None not in packed:
            requests = [pipes.request(cast(bytes, p)) for p in packed]
            replies = await asyncio.gather(*requests, return_exceptions=True)
            for reply in replies:
                if isinstance(reply, BaseException) and not isinstance(reply, ResponseError):
                    raise reply
            return replies
    return await aclient_pipeline(client, commands)


def drive(client: Any, steps: Steps[T], answered: RedisError | None = None) -> T:
    """Run `steps` on a sync client: each yielded command is executed, its reply (or redis
    error) sent back in; a `Pipelined` request runs as one pipeline (`pipeline`), the list of
    its replies sent back. Redis errors the steps do not handle propagate untranslated.

    `answered`: the steps' first command was already sent (by a `Lane`) and answered with this
    error; the steps go on from there (NOSCRIPT: EVAL; NOCONFIG: again with the config).
    """
    pool = lean_pool(client)
    reply: Any = None
    error: BaseException | None = answered
    if answered is not None:
        steps.send(None)  # the first command: already run
    while True:
        try:
            command = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            if command.__class__ is Pipelined:  # (an operator's read of one breaker: `Pipelined`)
                reply, error = pipeline(client, list(command.args)), None
            else:
                reply, error = _execute(client, pool, command.args), None
        except RedisError as exc:
            reply, error = None, exc


# -- asyncio: the tasks of a loop share one pipelined connection per pool (_aio_pipe) ------------


async def _aexecute(client: Any, pool: Any, command: tuple[Any, ...]) -> Any:
    """`_execute` for asyncio: the command is written on the pool's pipelined connection for the
    running loop (`_aio_pipe`) and its reply awaited; no retry, no instrumentation, no task or
    timer of its own. Clients without a lean pool, and arguments `pack` does not handle, go
    through `client.execute_command`."""
    if pool is not None:
        pipes = pipes_for(pool)
        packed = pipes.pack(command)  # `pack`, with the pieces of repeated arguments kept
        if packed is not None:
            return await pipes.request(packed)
    return await client.execute_command(*command)


class ALane:
    """The asyncio breaker's call-path scripts (record, acquire) straight onto its loop's pipe.

    `request(eval)` returns the future of the request's EVALSHA on the pool's pipelined
    connection for the running loop (`_aio_pipe.Pipe.request`: the same write, FIFO, budget and
    drop rules as `_aexecute`), or None when an argument is not str, bytes or int (the caller
    then goes through `adrive`). Its packed bytes are kept per request (as `Lane.bytes_of`): the
    core hands the same object for the common call, so it is packed once; no coroutine, steps
    generator or command tuple is made per call. An error reply (NOSCRIPT, NOCONFIG, ...) is the
    future's exception: the caller goes on with `adrive(..., answered=exc)`.
    """

    __slots__ = ("fork", "packed", "pipes", "pool")

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        # the pool's `Pipes` for the loop last used, in the process (fork count) that asked
        self.pipes: Any = None
        self.fork = _forks
        self.packed: dict[int, tuple[Any, bytes]] = {}  # id(request) -> (request, its RESP bytes)

    def request(self, request: Any) -> Any:
        pipes = self.pipes
        if pipes is None or pipes.loop is not get_running_loop() or self.fork != _forks:
            self.fork = _forks  # a forked child: `pipes_for` gives it its own
            pipes = self.pipes = pipes_for(self.pool)
        entry = self.packed.get(id(request))
        if entry is not None:
            return pipes.request(entry[1])
        packed = pipes.pack(_command(request))
        if packed is None:  # pragma: no cover - the core's arguments are str and int
            return None
        if len(self.packed) >= _PACKED_MAX:
            self.packed.clear()
        self.packed[id(request)] = (request, packed)
        return pipes.request(packed)


def alane_for(client: Any) -> ALane | None:
    """An `ALane` for a plain `redis.asyncio.Redis` (not a single-connection client), else None."""
    pool = alean_pool(client)
    return None if pool is None else ALane(pool)


async def ainit(client: Any) -> None:
    """Initialise a `redis.asyncio.cluster.RedisCluster` once (its pub/sub and concurrent
    first commands fail on a client that was not initialised); no-op for other clients.
    redis-py's `initialize()` runs once under its own lock; later callers return at once."""
    if getattr(client, "_initialize", False) is True and hasattr(client, "nodes_manager"):
        await client.initialize()


async def adrive(client: Any, steps: Steps[T], answered: RedisError | None = None) -> T:
    """`drive` for a `redis.asyncio` client (`answered`: as in `drive`, the first command was
    already sent, by an `ALane`, and answered with this error)."""
    pool = alean_pool(client)
    if pool is None and getattr(client, "_initialize", False) is True:
        await ainit(client)  # a user-built asyncio RedisCluster, not initialised yet
    reply: Any = None
    error: BaseException | None = answered
    if answered is not None:
        steps.send(None)  # the first command: already run
    while True:
        try:
            command = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        try:
            if command.__class__ is Pipelined:
                reply, error = await apipeline(client, list(command.args)), None
            else:
                reply, error = await _aexecute(client, pool, command.args), None
        except RedisError as exc:
            reply, error = None, exc
