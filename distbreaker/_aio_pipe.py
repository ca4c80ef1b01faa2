"""asyncio auto-pipelining: the tasks of an event loop share one connection per client pool.

A breaker's command is a small EVALSHA; with one connection per concurrent task, a burst of 1000
tasks means 1000 connection set-ups and 1000 reads, each a loop turn of its own. Here, as in
ioredis and Lettuce, commands are written as they come on one connection (`Pipe`, an
`asyncio.Protocol`), each with a future in a FIFO; `data_received` parses the replies and
completes the futures in order. There is no task, timer or read call per command: a caller
awaits its future, that is all.

- **Writes**: a command sent while the connection has nothing outstanding is written at once
  (the lowest latency for one task); commands sent while replies are outstanding are gathered
  and written together once per loop turn (one ``send`` for a burst).
- **Budget** (the client's ``socket_timeout``): a connection on which replies are outstanding
  and none has arrived for one budget is stalled (Redis hangs or is stopped). It is dropped and
  every command on it fails at once with a Redis `TimeoutError`, so a burst on a hung Redis
  returns after about one budget on one connection. While replies arrive the wait is not
  bounded by the budget: a burst queues behind the server's progress, not behind a timer. The
  check runs after the loop polled the socket once more, so a loop busy past the deadline (not
  Redis) does not turn a reply already received into a timeout.
- **Alignment**: a caller that gives up (cancelled, e.g. by its own timeout) leaves its place in
  the FIFO; its reply is read and dropped when it comes, never given to the next caller. A
  connection that fails is dropped with everything outstanding on it.
- **Set-up** is redis-py's (`ConnectionPool.get_connection`: TLS, AUTH, SELECT, RESP3 HELLO as
  configured); the pipe then takes over the connection's transport (`set_protocol`) and keeps
  the redis-py connection checked out until it is dropped. Commands sent while it is being set
  up wait in the pipe and are written together when it is ready: a cold burst sets up one
  connection. The set-up starts one loop turn later, so its connect timeout does not run while
  the rest of a burst's tasks are still being started.
- **Fork and loops**: pipes are per pool and per event loop; a forked child never uses its
  parent's.
- **Replies** are parsed by `make_reader`: hiredis when importable, else `RespReader` (a small
  RESP2/RESP3 parser with the same interface). Error replies become redis-py's exceptions
  (`NoScriptError`, `ResponseError`, ...) raised to their caller; the connection stays.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections import deque
from collections.abc import AsyncGenerator, Callable
from time import monotonic
from typing import Any, Protocol

import redis.asyncio
import redis.connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # pragma: no cover - depends on the install
    import hiredis
except ImportError:  # pragma: no cover
    hiredis = None  # type: ignore[assignment]

__all__ = ["MORE", "Pipe", "Pipes", "Reader", "RespReader", "make_reader", "pipes_for"]

MORE: Any = object()  # a reader's "no complete reply yet"
_PIPES = "_distbreaker_pipes"  # the redis-py pool attribute holding {loop: Pipes}
PACK_CACHE = 4096  # str arguments whose RESP piece a `Pipes` keeps

# "ERR ..." -> redis-py's exception (NoScriptError, ResponseError, ...)
_parse_error: Callable[[str], RedisError] = redis.connection.DefaultParser.parse_error


# -- replies ---------------------------------------------------------------------------------------
class Reader(Protocol):
    """What a pipe needs of a parser (the interface of `hiredis.Reader`)."""

    def feed(self, data: bytes, /) -> None: ...

    def gets(self) -> Any: ...


class Push(list):  # type: ignore[type-arg]
    """A RESP3 push message (out of band: not the reply of any command)."""


_PUSH_TYPES: tuple[type, ...] = (Push,) + ((hiredis.PushNotification,) if hasattr(hiredis, "PushNotification") else ())


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()


class RespReader:
    """A RESP2/RESP3 reply parser with `hiredis.Reader`'s interface (`feed`, `gets` -> `MORE`).

    Bulk and simple strings are bytes (str when `encoding` is given), errors are redis-py's
    exception instances (returned, not raised), maps are dicts, sets lists, push messages `Push`.
    """

    __slots__ = ("buf", "encoding", "errors", "pos")

    def __init__(self, encoding: str | None = None, errors: str = "strict") -> None:
        self.buf = bytearray()
        self.pos = 0
        self.encoding, self.errors = encoding, errors

    def feed(self, data: bytes, /) -> None:
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data

    def gets(self) -> Any:
        if self.pos >= len(self.buf):
            return MORE
        try:
            reply, self.pos = self.parse(self.pos)
        except _Incomplete:
            return MORE
        return reply

    def text(self, raw: bytes) -> Any:
        return raw if self.encoding is None else raw.decode(self.encoding, self.errors)

    def parse(self, pos: int) -> tuple[Any, int]:
        buf = self.buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise _INCOMPLETE
        kind, line, pos = buf[pos], bytes(buf[pos + 1 : end]), end + 2
        if kind == 0x3A:  # ':' integer
            return int(line), pos
        if kind in (0x24, 0x3D, 0x21):  # '$' bulk, '=' verbatim, '!' bulk error
            size = int(line)
            if size < 0:
                return None, pos
            if len(buf) < pos + size + 2:
                raise _INCOMPLETE
            raw = bytes(buf[pos : pos + size])
            pos += size + 2
            if kind == 0x21:
                return _parse_error(raw.decode("utf-8", "replace")), pos
            return self.text(raw[4:] if kind == 0x3D else raw), pos
        if kind in (0x2A, 0x7E, 0x3E, 0x25, 0x7C):  # '*' array, '~' set, '>' push, '%' map, '|' attribute
            count = int(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count * 2 if kind in (0x25, 0x7C) else count):
                item, pos = self.parse(pos)
                items.append(item)
            if kind == 0x25:
                return dict(zip(items[::2], items[1::2], strict=True)), pos
            if kind == 0x7C:  # an attribute annotates the reply that follows: skip it
                return self.parse(pos)
            return (Push(items) if kind == 0x3E else items), pos
        if kind == 0x2B:  # '+' simple string
            return self.text(line), pos
        if kind == 0x2D:  # '-' error
            return _parse_error(line.decode("utf-8", "replace")), pos
        if kind == 0x5F:  # '_' null
            return None, pos
        if kind == 0x23:  # '#' boolean
            return line == b"t", pos
        if kind == 0x2C:  # ',' double
            return float(line), pos
        if kind == 0x28:  # '(' big number: its digits, as hiredis gives them
            return self.text(line), pos
        raise InvalidResponse(f"Protocol error, got {chr(kind)!r} as reply type byte")


def make_reader(encoding: str | None = None, errors: str = "strict") -> Reader:
    """A reply parser: hiredis' when it is installed, else `RespReader`."""
    if hiredis is None:
        return RespReader(encoding, errors)
    kwargs: dict[str, Any] = {"protocolError": InvalidResponse, "replyError": _parse_error, "notEnoughData": MORE}
    if encoding is not None:
        kwargs.update(encoding=encoding, errors=errors)
    return hiredis.Reader(**kwargs)


def _copy(error: BaseException) -> BaseException:
    """A new exception like `error` (redis-py's exceptions take their message)."""
    try:
        return type(error)(*error.args)
    except Exception:  # pragma: no cover - an exception class with another signature
        return error


# -- one connection -------------------------------------------------------------------------------
class Pipe(asyncio.Protocol):
    """One pipelined connection: commands written in order, replies complete futures in order."""

    def __init__(self, pipes: Pipes) -> None:
        self.pipes = pipes
        self.loop = loop = pipes.loop
        self.budget = pipes.budget
        self.new_future = loop.create_future
        # the loop's clock (`loop.time`); the standard loop's is time.monotonic, called directly
        self.clock: Callable[[], float] = monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        self.reader = make_reader(pipes.encoding, pipes.errors)
        self.waiting: deque[asyncio.Future[Any]] = deque()  # one per command sent, oldest first
        self.out: list[bytes] = []  # commands not written yet (the last len(out) of `waiting`)
        self.transport: Any = None  # set when ready
        self.conn: Any = None  # the redis-py connection whose transport this is
        self.streams: Any = None  # its StreamReaderProtocol (told when the connection closes)
        self.error: BaseException | None = None  # set when dropped: nothing is sent any more
        self.since = 0.0  # loop time the wait for the next reply started
        self.timer: asyncio.TimerHandle | None = None
        self.last_look = False  # the timer is giving the socket one more loop turn
        self.flushing = False  # a write of `out` is scheduled for this loop turn

    # -- sending -----------------------------------------------------------------------------
    def request(self, packed: bytes) -> asyncio.Future[Any]:
        """Send one packed command; the future gets its reply (or its error)."""
        fut = self.new_future()
        if self.error is not None:
            fut.set_exception(_copy(self.error))
            return fut
        waiting = self.waiting
        waiting.append(fut)
        if self.transport is None or self.flushing:
            self.out.append(packed)  # being set up, or a write is due this turn
        elif len(waiting) == 1:
            self.transport.write(packed)  # nothing outstanding: write now
            self.since = self.clock()  # `started`, inline (the common call)
            if self.timer is None and self.budget is not None:
                self.timer = self.loop.call_at(self.since + self.budget, self.check)
        else:
            self.out.append(packed)  # replies outstanding: write with the others of this turn
            self.flushing = True
            self.loop.call_soon(self.flush)
        return fut

    def flush(self) -> None:
        self.flushing = False
        out = self.out
        if not out or self.transport is None or self.error is not None:
            return
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        outstanding_before = len(self.waiting) - len(out)
        out.clear()
        if not outstanding_before:
            self.started()

    def started(self) -> None:
        """Replies became outstanding: the budget runs from now."""
        self.since = self.clock()
        if self.timer is None and self.budget is not None:
            self.timer = self.loop.call_at(self.since + self.budget, self.check)

    def check(self) -> None:
        """The timer: drop the connection when no reply came for one budget (see the module doc)."""
        self.timer = None
        if self.error is not None or len(self.waiting) == len(self.out):
            self.last_look = False
            return  # dropped, or nothing outstanding: the next write starts the clock
        now, due = self.clock(), self.since + self.budget  # type: ignore[operator]
        if now < due:
            self.last_look = False
            self.timer = self.loop.call_at(due, self.check)
        elif not self.last_look:
            self.last_look = True  # a timer runs after the loop turn's I/O: look once more
            self.timer = self.loop.call_at(now, self.check)
        else:
            self.last_look = False
            self.drop(RedisTimeoutError("Timeout reading from socket (no reply within the budget; not retried)"))

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.out and self.error is None:
            self.flush()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        waiting = self.waiting
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not MORE:
                if isinstance(reply, _PUSH_TYPES):
                    continue  # not a reply: the FIFO must not move
                fut = waiting.popleft()
                if fut.done():
                    continue  # its caller gave up: the reply is dropped, not passed on
                if isinstance(reply, RedisError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
        except (RedisError, ValueError, IndexError) as exc:  # a protocol error, or a reply nobody asked for
            self.drop(RedisConnectionError(f"Protocol error on the breaker's connection: {exc!r}"))
            return
        if waiting:  # progress; with nothing outstanding, the next write starts the clock
            self.since = self.clock()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            detail = f"Error while reading from socket: {exc}" if exc is not None else "Connection closed by server."
            self.drop(RedisConnectionError(detail))
        if self.streams is not None:
            self.streams.connection_lost(exc)  # redis-py's disconnect waits for it

    # -- dropping ------------------------------------------------------------------------------
    def drop(self, error: BaseException) -> None:
        """Fail everything outstanding with `error` and close the connection (once)."""
        if self.error is not None:
            return
        self.error = error
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.out.clear()
        waiting, self.waiting = self.waiting, deque()
        for fut in waiting:
            if not fut.done():  # an exception of its own per caller (each raise adds a traceback)
                fut.set_exception(_copy(error))
        if self.transport is not None:
            self.transport.abort()
        self.pipes.dropped(self)


# -- the pipes of a pool on one loop --------------------------------------------------------------
def _get_connection_args() -> tuple[str, ...]:
    """redis-py < 5.1 requires a command name in get_connection(); newer ones deprecate it."""
    param = inspect.signature(redis.asyncio.ConnectionPool.get_connection).parameters.get("command_name")
    return ("EVALSHA",) if param is not None and param.default is inspect.Parameter.empty else ()


_GET_CONNECTION_ARGS = _get_connection_args()
_forks = 0  # bumped in a forked child: the parent's connections are not the child's


def _after_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class Pipes:
    """The pipelined connection of one redis-py asyncio pool on one event loop.

    One connection carries every command (a second is set up only when the first is dropped).
    `request` is the hot path: no coroutine, a future to await.
    """

    def __init__(self, pool: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self.loop, self.fork = pool, loop, _forks
        kwargs = pool.connection_kwargs
        timeout = kwargs.get("socket_timeout")
        self.budget: float | None = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None
        self.encoding: str | None = kwargs.get("encoding", "utf-8") if kwargs.get("decode_responses") else None
        self.errors: str = kwargs.get("encoding_errors", "strict")
        self.send_encoding: str = kwargs.get("encoding", "utf-8")  # of str arguments (`pack`)
        self.pieces: dict[str, bytes] = {}  # str argument -> its RESP piece (`pack`)
        self.pipe: Pipe | None = None
        self.tasks: set[asyncio.Task[None]] = set()  # set-ups and releases running (one per connection)
        # Closed with the loop: asyncio.run() (and asyncio.Runner) close the async generators of
        # the loop before closing it, so this one's `finally` drops the pipe while the loop can
        # still close its socket and give the connection back to the pool.
        self.guard = self.until_loop_closes()
        try:
            self.guard.asend(None).send(None)
        except StopIteration:
            pass

    async def until_loop_closes(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self.release_all()

    def prune(self, by_loop: dict[Any, Pipes]) -> None:
        """Forget the pipes of loops now closed (their connections go back to the pool)."""
        for loop in [lp for lp in by_loop if lp.is_closed()]:
            self.spawn(by_loop.pop(loop).release_all())

    def pack(self, command: tuple[Any, ...]) -> bytes | None:
        """`command` in RESP, as redis-py would send it (`_transport.pack`), None for an argument
        of a type it does not handle (the caller then lets redis-py send it).

        A breaker's commands repeat almost every argument (the SHA, the keys, the config
        fingerprint, most outcome fields), so each str argument's RESP piece is kept once made:
        only new values are encoded (at most `PACK_CACHE` pieces, then it starts over).
        """
        cache = self.pieces
        parts = [b"*%d\r\n" % len(command)]
        for arg in command:
            kind = type(arg)
            if kind is str:
                piece = cache.get(arg)
                if piece is None:
                    raw = arg.encode(self.send_encoding, self.errors)
                    piece = b"$%d\r\n%b\r\n" % (len(raw), raw)
                    if len(cache) >= PACK_CACHE:
                        cache.clear()
                    cache[arg] = piece
                parts.append(piece)
            elif kind is int:
                raw = b"%d" % arg
                parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
            elif kind is bytes:
                parts.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
            else:
                return None
        return b"".join(parts)

    def request(self, packed: bytes) -> asyncio.Future[Any]:
        """Send `packed` on the connection (set one up if there is none); await the future."""
        pipe = self.pipe
        if pipe is None or pipe.error is not None:
            pipe = self.pipe = Pipe(self)
            self.spawn(self.set_up(pipe))
        return pipe.request(packed)

    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def set_up(self, pipe: Pipe) -> None:
        """Connect `pipe` through the pool (redis-py's set-up), then take the transport over."""
        try:
            await asyncio.sleep(0)  # one loop turn later: the rest of a burst starts first
            conn = await self.pool.get_connection(*_GET_CONNECTION_ARGS)
        except BaseException as exc:
            pipe.drop(exc if isinstance(exc, RedisError) else RedisConnectionError(f"Error connecting: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
            return
        pipe.conn = conn
        writer = getattr(conn, "_writer", None)
        transport = getattr(writer, "transport", None)
        if pipe.error is not None or transport is None or not hasattr(transport, "set_protocol"):
            if pipe.error is None:
                pipe.drop(RedisConnectionError("the connection has no asyncio transport"))
            else:
                pipe.conn = None
                await self.release(conn)
            return
        pipe.streams = transport.get_protocol()
        transport.set_protocol(pipe)
        pipe.connection_made(transport)
        if transport.is_closing():  # closed while being set up: the loop may not tell the pipe
            pipe.connection_lost(None)

    def dropped(self, pipe: Pipe) -> None:
        if self.pipe is pipe:
            self.pipe = None
        conn, pipe.conn = pipe.conn, None
        if conn is not None and not self.loop.is_closed():
            self.spawn(self.release(conn))

    async def release(self, conn: Any) -> None:
        """Give a dropped pipe's redis-py connection back to the pool, disconnected."""
        try:
            await conn.disconnect()
        except Exception:  # pragma: no cover - its transport is gone: nothing more to close
            pass
        try:
            await self.pool.release(conn)
        except Exception:  # pragma: no cover - the pool was closed or refuses it
            pass

    async def release_all(self) -> None:
        """Drop the pipe (its loop is closing or closed) and give its connection back."""
        pipe, self.pipe = self.pipe, None
        if pipe is None:
            return
        conn, pipe.conn = pipe.conn, None
        try:
            pipe.drop(RedisConnectionError("the event loop of this connection closed"))
        except RuntimeError:  # the loop is already closed: its socket is left to the garbage collector
            pass
        if conn is not None:
            await self.release(conn)


def pipes_for(pool: Any) -> Pipes:
    """The `Pipes` of `pool` for the running event loop (made on first use; a forked child or a
    new loop gets its own)."""
    loop = asyncio.get_running_loop()
    by_loop: dict[Any, Pipes] | None = pool.__dict__.get(_PIPES)
    if by_loop is not None:
        pipes = by_loop.get(loop)
        if pipes is not None and pipes.fork == _forks:
            if len(by_loop) > 1:
                pipes.prune(by_loop)
            return pipes
    if by_loop is None or any(p.fork != _forks for p in by_loop.values()):
        by_loop = pool.__dict__[_PIPES] = {}  # a forked child: the parent's are not ours to touch
    pipes = by_loop[loop] = Pipes(pool, loop)
    pipes.prune(by_loop)
    return pipes
