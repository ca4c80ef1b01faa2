"""The lane (distbreaker._transport.Lane): the breaker's record/acquire written and read straight on
the held connection's socket. Its edge cases on a real server: replies split across reads, large
replies, NOSCRIPT, the server closing the connection, timeouts, a desynchronised stream; and
the socket given back to redis-py as redis-py set it. Correctness only, never time."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from distbreaker import Breaker, BreakerConfig, _resp, connect
from distbreaker._core import Eval
from distbreaker._scripts import LuaScript
from distbreaker._transport import _HELD, _KERNEL_TIMEOUTS, _LANE, Lane, lane_for

DEADLINE = 10.0  # seconds any wait below may take before the test fails


class Proxy:
    """A loopback TCP proxy to a Redis server, for shapes of traffic a server never makes.

    `on_reply(data, client_socket)` sees every chunk the server sends and forwards it (or not);
    `on_command(data)` sees every chunk the client sends and returns what to forward (None:
    close the client's connection instead). Threads end when `close()` runs.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.on_reply: Callable[[bytes, socket.socket], None] = lambda data, client: client.sendall(data)
        self.on_command: Callable[[bytes], bytes | None] = lambda data: data
        self.sockets: list[socket.socket] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, server]
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                forward = self.on_command(data)
                if forward is None:
                    client.shutdown(socket.SHUT_RDWR)
                    client.close()
                    return
                server.sendall(forward)
        except OSError:
            pass

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                self.on_reply(data, client)
        except OSError:
            pass

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def proxy(redis_url: str) -> Iterator[Proxy]:
    host, port = redis_url.split("//")[1].split("/")[0].rsplit(":", 1)
    p = Proxy((host, int(port)))
    try:
        yield p
    finally:
        p.close()


def _breaker(client: redis.Redis, prefix: str, name: str = "svc") -> Breaker:
    return Breaker(name, client, BreakerConfig(redis_timeout=2.0), prefix=prefix, listen=False)


def _wire(client: redis.Redis) -> Any:
    """The lane's state of the (one) connection the lane holds."""
    (conn,) = client.connection_pool.__dict__[_HELD]
    return conn.__dict__[_LANE]


class CountingReader:
    """Wraps a connection's reader: counts feeds, and may run a hook on each."""

    def __init__(self, inner: Any, hook: Callable[[int], None] = lambda n: None) -> None:
        self.inner, self.hook, self.feeds = inner, hook, 0

    def feed(self, *args: Any) -> None:
        self.feeds += 1
        self.inner.feed(*args)
        self.hook(self.feeds)

    def gets(self) -> Any:
        return self.inner.gets()

    def has_data(self) -> bool:
        return bool(self.inner.has_data())


def test_the_breaker_uses_the_lane_on_a_connect_client(redis_url: str, prefix: str) -> None:
    client = connect(redis_url, timeout=2.0)
    b = _breaker(client, prefix)
    assert isinstance(b._lane, Lane)
    for _ in range(5):
        b.call(lambda: None)
    assert b._lane.on and b._lane.packed  # the record was packed once and sent by the lane
    wire = _wire(client)
    assert wire.sock is client.connection_pool.__dict__[_HELD][0]._sock
    assert b.snapshot().calls == 5
    client.close()


@pytest.mark.parametrize("parser", ["default", "ours"])
def test_a_reply_split_across_reads(proxy: Proxy, prefix: str, parser: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reply comes in two pieces, the second only after the lane read the first: it is read
    whole (two feeds), with hiredis and with our parser."""
    if parser == "ours":
        monkeypatch.setattr(_resp, "reader", lambda encoding=None, errors="strict": _resp.PyReader(encoding, errors))
    client = connect(proxy.url, timeout=2.0)
    b = _breaker(client, prefix)
    b.call(lambda: None)  # connection made, script loaded, config stored
    wire = _wire(client)
    first_read = threading.Event()
    counting = CountingReader(wire.reader, lambda n: first_read.set())
    wire.reader = counting
    if parser == "ours":
        assert isinstance(counting.inner, _resp.PyReader)

    def split(data: bytes, client_sock: socket.socket) -> None:
        client_sock.sendall(data[:7])
        assert first_read.wait(DEADLINE)  # the lane has read the first piece (and waits for more)
        client_sock.sendall(data[7:])

    proxy.on_reply = split
    assert b.call(lambda: 42) == 42
    assert counting.feeds == 2
    proxy.on_reply = lambda data, c: c.sendall(data)
    assert b._core.down_until == 0  # no Redis error
    assert b.snapshot().calls == 2
    client.close()


def _big_script(size: int) -> LuaScript:
    text = f"return {{string.rep('x', {size}), 7, ARGV[1]}}".encode()
    import hashlib

    return LuaScript("big", text, hashlib.sha1(text).hexdigest())


@pytest.mark.parametrize("parser", ["default", "ours"])
def test_a_large_reply(redis_url: str, r: redis.Redis, parser: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply many times the lane's read buffer (16 KB) is read whole."""
    if parser == "ours":
        monkeypatch.setattr(_resp, "reader", lambda encoding=None, errors="strict": _resp.PyReader(encoding, errors))
    client = connect(redis_url, timeout=2.0)
    lane = lane_for(client)
    assert lane is not None
    script = _big_script(300_000)
    r.script_load(script.text)
    reply = lane.run(Eval(script, (), ["a\r\nb"], None))
    assert reply == [b"x" * 300_000, 7, b"a\r\nb"]
    assert lane.run(Eval(script, (), ["again"], None))[2] == b"again"  # the connection is in step
    client.close()


def test_noscript_is_reloaded_and_counted(redis_url: str, r: redis.Redis, prefix: str) -> None:
    """After SCRIPT FLUSH the lane's EVALSHA answers NOSCRIPT: the call goes on with EVAL (through
    the steps), counts once, and the connection stays held."""
    client = connect(redis_url, timeout=2.0)
    b = _breaker(client, prefix)
    b.call(lambda: None)
    sha = b._core.scripts["record"].sha
    r.script_flush()
    assert r.script_exists(sha) == [False]
    lane = b._lane
    assert lane is not None
    request = b._core.record((b._core.view.generation, ""), _success(), 0.0)
    with pytest.raises(NoScriptError):
        lane.run(request)
    assert len(client.connection_pool.__dict__[_HELD]) == 1  # an error reply: the connection is fine
    assert b.call(lambda: 5) == 5
    assert r.script_exists(sha) == [True]
    assert b._core.down_until == 0
    assert b.snapshot().calls == 2
    client.close()


def _success() -> Any:
    from distbreaker._model import Outcome

    return Outcome.SUCCESS


def test_a_held_connection_the_server_closed_is_not_used(redis_url: str, r: redis.Redis, prefix: str) -> None:
    client = connect(redis_url, timeout=2.0)
    b = _breaker(client, prefix)
    b.call(lambda: None)
    old = _wire(client).sock
    assert r.client_kill_filter(_type="normal", skipme=True) >= 1
    b.call(lambda: None)
    assert b._core.down_until == 0  # the dead connection was seen before sending: no error
    assert _wire(client).sock is not old
    assert b.snapshot().calls == 2
    client.close()


def test_the_server_closes_after_the_command(proxy: Proxy, prefix: str) -> None:
    """The connection dies after the command was sent, before any reply: a ConnectionError (the
    breaker's outage policy applies; the call itself runs), and the connection is dropped."""
    client = connect(proxy.url, timeout=2.0)
    b = _breaker(client, prefix)
    b.call(lambda: None)
    lane = b._lane
    assert lane is not None
    request = b._core.record((b._core.view.generation, ""), _success(), 0.0)
    proxy.on_command = lambda data: None
    with pytest.raises(RedisConnectionError):
        lane.run(request)
    assert client.connection_pool.__dict__[_HELD] == []
    assert b.call(lambda: 3) == 3  # allowed (on_redis_error="allow"); the record failed
    assert b._core.down_until > 0
    proxy.on_command = lambda data: data
    b._core.retry_now()
    b.call(lambda: None)
    assert b._core.down_until == 0
    assert b.snapshot().calls == 2  # the first call and the last; the two lost ones are not counted
    client.close()


def test_a_timeout_drops_the_connection(proxy: Proxy, prefix: str) -> None:
    """No reply within the socket timeout: a Redis TimeoutError, the connection dropped, and the
    next command gets its own reply (not the late one)."""
    client = connect(proxy.url, timeout=0.2)
    b = Breaker("svc", client, BreakerConfig(redis_timeout=0.2), prefix=prefix, listen=False)
    b.call(lambda: None)
    lane = b._lane
    assert lane is not None
    request = b._core.record((b._core.view.generation, ""), _success(), 0.0)
    held_back: list[bytes] = []
    proxy.on_reply = lambda data, c: held_back.append(data)  # the reply never reaches the client
    started = time.monotonic()
    with pytest.raises(RedisTimeoutError):
        lane.run(request)
    assert time.monotonic() - started >= 0.2  # never before the socket timeout (the kernel's bound is under it)
    assert client.connection_pool.__dict__[_HELD] == []
    proxy.on_reply = lambda data, c: c.sendall(data)
    reply = lane.run(request)
    assert type(reply) is int and reply > 0  # a record reply (the bare one: `now`), of this command
    assert b"".join(held_back).startswith(b":")  # the swallowed reply: the first command's (bare too)
    assert b.snapshot().calls == 3  # the timed-out record was applied by the server
    client.close()


def test_two_replies_to_one_command_drop_the_connection(proxy: Proxy, prefix: str) -> None:
    client = connect(proxy.url, timeout=2.0)
    b = _breaker(client, prefix)
    b.call(lambda: None)
    lane = b._lane
    assert lane is not None
    request = b._core.record((b._core.view.generation, ""), _success(), 0.0)
    proxy.on_reply = lambda data, c: c.sendall(data + b":1\r\n")
    with pytest.raises(InvalidResponse):
        lane.run(request)
    assert client.connection_pool.__dict__[_HELD] == []
    proxy.on_reply = lambda data, c: c.sendall(data)
    assert b.call(lambda: 1) == 1
    client.close()


def test_an_interrupt_mid_reply_drops_the_connection(redis_url: str, prefix: str) -> None:
    client = connect(redis_url, timeout=2.0)
    b = _breaker(client, prefix)
    b.call(lambda: None)
    wire = _wire(client)

    def interrupt(n: int) -> None:
        raise KeyboardInterrupt

    wire.reader = CountingReader(wire.reader, interrupt)
    with pytest.raises(KeyboardInterrupt):
        b.call(lambda: None)
    assert client.connection_pool.__dict__[_HELD] == []
    b.call(lambda: None)
    assert b.snapshot().calls == 3  # each record reached the server
    client.close()


@pytest.mark.skipif(not _KERNEL_TIMEOUTS, reason="kernel socket timeouts: Linux")
def test_the_socket_timeout_moves_to_the_kernel_and_back(redis_url: str, prefix: str) -> None:
    """While the lane holds a connection its socket is blocking with SO_RCVTIMEO/SO_SNDTIMEO set
    to the client's timeout; a command of redis-py's own path gets the socket as redis-py set it."""
    client = connect(redis_url, timeout=0.25)
    b = Breaker("svc", client, BreakerConfig(redis_timeout=0.25), prefix=prefix, listen=False)
    b.call(lambda: None)
    sock = _wire(client).sock

    def kernel_timeouts() -> list[tuple[int, int]]:
        return [
            struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, opt, 16))
            for opt in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO)
        ]

    assert sock.gettimeout() is None
    bounds = kernel_timeouts()
    assert bounds[0] == bounds[1] and bounds[0][0] == 0 and 0 < bounds[0][1] < 250_000  # under the timeout
    b.snapshot()  # read.lua through drive(): redis-py's path takes the held connection
    (conn,) = client.connection_pool.__dict__[_HELD]
    assert conn._sock is sock
    assert sock.gettimeout() == 0.25
    assert kernel_timeouts() == [(0, 0), (0, 0)]
    b.call(lambda: None)
    assert sock.gettimeout() is None
    assert b.snapshot().calls == 2
    client.close()


def test_decode_responses_client(redis_url: str, prefix: str) -> None:
    client = connect(redis_url, timeout=2.0, decode_responses=True)
    b = _breaker(client, prefix)
    for _ in range(3):
        b.call(lambda: None)
    assert b._lane is not None and b._lane.on
    assert b.snapshot().calls == 3
    client.close()


def test_a_resp3_client_goes_through_redis_py(redis_url: str, prefix: str) -> None:
    client = connect(redis_url, timeout=2.0, protocol=3)
    b = _breaker(client, prefix)
    for _ in range(3):
        b.call(lambda: None)
    assert b._lane is not None and not b._lane.on  # turned off: the lane speaks RESP2 only
    assert b.snapshot().calls == 3
    client.close()


def test_a_unix_socket_client(redis_server_factory: Any, tmp_path: Any, prefix: str) -> None:
    path = str(tmp_path / "redis.sock")
    redis_server_factory("--unixsocket", path, "--unixsocketperm", "700")
    client = connect(f"unix://{path}", timeout=2.0)
    b = _breaker(client, prefix)
    for _ in range(3):
        b.call(lambda: None)
    assert b._lane is not None and b._lane.on
    assert _wire(client).sock.family == socket.AF_UNIX
    assert b.snapshot().calls == 3
    client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_socket(redis_url: str, prefix: str) -> None:
    client = connect(redis_url, timeout=2.0)
    b = _breaker(client, prefix)
    b.call(lambda: None)
    parent_sock = _wire(client).sock
    pid = os.fork()
    if pid == 0:  # the child: 5 calls, then report whether it used the parent's socket
        code = 1
        try:
            for _ in range(5):
                b.call(lambda: None)
            code = 0 if b._core.down_until == 0 and _wire(client).sock is not parent_sock else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    b.call(lambda: None)
    assert _wire(client).sock is parent_sock
    assert b.snapshot().calls == 7
    client.close()


def test_an_error_reply_is_redis_pys_exception(redis_url: str, r: redis.Redis, prefix: str) -> None:
    """An error reply read by the lane is raised as redis-py would raise it (here WRONGTYPE, a
    ResponseError), and the connection stays held and in step."""
    client = connect(redis_url, timeout=2.0)
    r.set(f"{prefix}:{{taken}}", "x")
    bad = _breaker(client, prefix, "taken")
    with pytest.raises(Exception, match="WRONGTYPE") as raised:
        bad.call(lambda: None)
    assert isinstance(raised.value.__cause__, ResponseError)  # what the lane raised: redis-py's
    good = _breaker(client, prefix)
    assert good.call(lambda: 7) == 7
    assert good.snapshot().calls == 1
    client.close()


# -- our RESP2 parser (where hiredis is missing), against hiredis ------------------------------------
def _resp2(value: Any) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%b\r\n" % (len(value), value)
    if isinstance(value, _resp.ReplyError):
        return b"-%b\r\n" % value.args[0].encode()
    return b"*%d\r\n" % len(value) + b"".join(_resp2(v) for v in value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return type(a) is type(b) and a.args == b.args
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _values() -> Any:
    from hypothesis import strategies as st

    leaf = st.one_of(
        st.none(),
        st.integers(-(2**63), 2**63 - 1),
        st.binary(max_size=40) | st.sampled_from([b"", b"\r\n", b"a\r\nb", b"$3\r\n", b":1"]),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ abc:", min_size=1, max_size=20).map(_resp.ReplyError),
    )
    return st.recursive(leaf, lambda children: st.lists(children, max_size=8), max_leaves=30)


def test_our_parser_reads_what_hiredis_reads() -> None:
    """Any RESP2 value, fed whole or in pieces, is read by `PyReader` as hiredis reads it."""
    pytest.importorskip("hiredis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(values=st.lists(_values(), min_size=1, max_size=3), cuts=st.lists(st.integers(0, 400), max_size=6))
    def check(values: list[Any], cuts: list[int]) -> None:
        data = b"".join(_resp2(v) for v in values)
        ours, theirs = _resp.PyReader(), _resp.reader()
        assert type(theirs) is not _resp.PyReader
        got: list[list[Any]] = [[], []]
        points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        for a, b in zip(points, points[1:]):
            for i, reader in enumerate((ours, theirs)):
                reader.feed(data[a:b])
                while (reply := reader.gets()) is not False:
                    got[i].append(reply)
        assert len(got[0]) == len(values) and _same(got[0], got[1]), (got, values)
        assert not ours.has_data()

    check()


def test_our_parser_decodes_and_refuses_what_is_not_resp2() -> None:
    reader = _resp.PyReader("utf-8")
    reader.feed(b"*3\r\n$2\r\n\xc3\xa9\r\n:5\r\n+OK\r\n")
    assert reader.gets() == ["\u00e9", 5, "OK"]
    reader = _resp.PyReader()
    reader.feed(bytearray(b"xx*1\r\n:1\r\n"), 2, 8)
    assert reader.gets() == [1] and not reader.has_data()
    for bad in (b"%1\r\n", b"*x\r\n", b"$3\r\nabcd\r\n"):
        reader = _resp.PyReader()
        reader.feed(bad)
        with pytest.raises(_resp.ProtocolError):
            reader.gets()


def test_our_parser_waits_for_an_empty_string_cut_after_its_length() -> None:
    """Regression (found by the test above): ``$0\r\n`` at the end of a piece is not an empty
    string yet; the reply waits for its last CRLF instead of ending early."""
    reader = _resp.PyReader()
    reader.feed(b"*2\r\n$-1\r\n$0\r\n")
    assert reader.gets() is False
    reader.feed(b"\r\n$-1\r\n")
    assert reader.gets() == [None, b""]
    assert reader.gets() is None and not reader.has_data()
