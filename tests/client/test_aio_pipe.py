"""The asyncio pipelined connection (`distbreaker._aio_pipe`): one connection per pool and loop,
replies in order, a timed-out or cancelled caller never gets (or passes on) another's reply, a
stalled connection is dropped after one budget. On real servers; the parser against hiredis."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import hiredis
import pytest
import redis
import redis.asyncio
from _servers import Server, ServerFactory
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

import distbreaker.asyncio as dba
from distbreaker import BreakerConfig, _aio_pipe
from distbreaker._aio_pipe import MORE, Push, RespReader, pipes_for
from distbreaker._model import Outcome
from distbreaker._transport import ALane, _aexecute

PARSERS = ["hiredis", "own"]


@pytest.fixture(params=PARSERS)
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test with hiredis' reader, then with distbreaker's own `RespReader`."""
    if request.param == "own":
        monkeypatch.setattr(_aio_pipe, "make_reader", RespReader)
    yield request.param


@pytest.fixture
def server(redis_server_factory: ServerFactory) -> Server:
    return redis_server_factory()


@pytest.fixture
async def aclient(server: Server) -> AsyncIterator[Any]:
    client = dba.connect(server.url, timeout=2.0)
    yield client
    await client.aclose()


def _connections(admin: redis.Redis) -> int:
    """Connections the server accepted so far (`admin`'s own is made at its first command)."""
    return int(admin.info("stats")["total_connections_received"])


async def _run(client: Any, *command: Any) -> Any:
    return await _aexecute(client, client.connection_pool, command)


async def _poll(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.001)


# -- the parser --------------------------------------------------------------------------------------
REPLIES = [
    b"+OK\r\n",
    b"-ERR distbreaker: bad argument\r\n",
    b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
    b":0\r\n",
    b":-42\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"$5\r\nca\r\nf\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*3\r\n$6\r\nclosed\r\n:7\r\n$-1\r\n",
    b"*2\r\n*2\r\n:1\r\n+x\r\n*1\r\n-ERR nested\r\n",
    b"_\r\n",
    b"#t\r\n",
    b"%1\r\n+k\r\n:1\r\n",
    b"~2\r\n:1\r\n:2\r\n",
    b",1.5\r\n",
    b"(12345678901234567890\r\n",
    b"=7\r\ntxt:abc\r\n",
]


def _all(reader: Any) -> list[Any]:
    out = []
    while (reply := reader.gets()) is not MORE:
        out.append(reply)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, BaseException) or isinstance(b, BaseException):
        return type(a) is type(b) and str(a) == str(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("encoding", [None, "utf-8"])
def test_own_reader_parses_as_hiredis_does_in_any_split(encoding: str | None) -> None:
    """`RespReader` gives what hiredis gives (errors as redis-py's exception classes), whatever
    the chunks the stream arrives in."""
    stream = b"".join(REPLIES)
    expected = _all(make_hiredis(encoding, stream))
    assert len(expected) == len(REPLIES)
    assert isinstance(expected[2], NoScriptError) and isinstance(expected[1], ResponseError)
    rng = random.Random(7)
    for _ in range(60):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        reader, got = RespReader(encoding), []
        for lo, hi in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            reader.feed(stream[lo:hi])
            got += _all(reader)
        assert len(got) == len(expected) and all(_same(a, b) for a, b in zip(got, expected, strict=True)), got
    one = RespReader(encoding)  # byte by byte
    got = []
    for i in range(len(stream)):
        one.feed(stream[i : i + 1])
        got += _all(one)
    assert all(_same(a, b) for a, b in zip(got, expected, strict=True)) and len(got) == len(expected)


def make_hiredis(encoding: str | None, data: bytes) -> Any:
    reader = _aio_pipe.make_reader(encoding)
    assert isinstance(reader, hiredis.Reader)
    reader.feed(data)
    return reader


def test_own_reader_marks_push_messages_and_refuses_garbage() -> None:
    """A RESP3 push is a `Push` (the pipe skips it); an unknown type byte is a protocol error."""
    reader = RespReader()
    reader.feed(b">2\r\n+invalidate\r\n*1\r\n+k\r\n:5\r\n")
    push = reader.gets()
    assert isinstance(push, Push) and push == [b"invalidate", [b"k"]]
    assert reader.gets() == 5
    reader.feed(b"?what\r\n")
    with pytest.raises(redis.exceptions.InvalidResponse):
        reader.gets()


# -- the connection ----------------------------------------------------------------------------------
async def test_a_cold_burst_shares_one_connection(server: Server, parser: str, prefix: str) -> None:
    """1000 concurrent calls on a fresh client are all counted, over ONE connection set up for
    the burst (not one per task), with either parser."""
    admin = server.client()
    before = _connections(admin)
    client = dba.connect(server.url, timeout=1.0)  # the default 50 ms: test_async.py (not the point here)
    b = dba.Breaker("svc", client, BreakerConfig(minimum_calls=10**6), prefix=prefix, listen=False)
    try:
        results = await asyncio.gather(*(b.call(lambda: "ran") for _ in range(1000)))
        assert results == ["ran"] * 1000
        assert b._core.down_until == 0  # no call saw a Redis error
        assert (await b.snapshot()).calls == 1000
        assert _connections(admin) - before == 1
    finally:
        await client.aclose()


async def test_replies_come_back_in_order_to_their_callers(aclient: Any, parser: str) -> None:
    """500 concurrent ECHOs of distinct values, and a reply larger than many socket reads (1 MB),
    each get their own value."""
    values = [f"v{i}-{'x' * (i % 50)}".encode() for i in range(500)]
    big = os.urandom(1 << 20)
    got = await asyncio.gather(*(_run(aclient, "ECHO", v) for v in values), _run(aclient, "ECHO", big))
    assert got[:-1] == values and got[-1] == big


async def test_an_error_reply_goes_to_its_caller_and_keeps_the_connection(aclient: Any, prefix: str) -> None:
    """WRONGTYPE in the middle of a burst is raised to its caller only; the others and the next
    command get their own replies on the same connection."""
    await _run(aclient, "SET", f"{prefix}:s", "x")
    results = await asyncio.gather(
        *(_run(aclient, "ECHO", str(i)) for i in range(10)),
        _run(aclient, "HGET", f"{prefix}:s", "f"),
        *(_run(aclient, "ECHO", str(i)) for i in range(10, 20)),
        return_exceptions=True,
    )
    assert [r for r in results if isinstance(r, BaseException)] == [results[10]]
    assert isinstance(results[10], ResponseError) and "WRONGTYPE" in str(results[10])
    assert results[:10] + results[11:] == [str(i).encode() for i in range(20)]
    pipe = pipes_for(aclient.connection_pool).pipe
    assert await _run(aclient, "ECHO", "next") == b"next"
    assert pipes_for(aclient.connection_pool).pipe is pipe


async def test_a_cancelled_caller_never_gets_or_passes_on_a_reply(server: Server, aclient: Any) -> None:
    """A caller cancelled while its reply is outstanding leaves its place in the FIFO: its reply
    is dropped when it comes, and the callers after it get their own (same connection)."""
    assert await _run(aclient, "PING") == b"PONG"
    pipe = pipes_for(aclient.connection_pool).pipe
    assert pipe is not None
    server.pause()
    try:
        first = asyncio.ensure_future(_run(aclient, "ECHO", "first"))
        second = asyncio.ensure_future(_run(aclient, "ECHO", "second"))
        await _poll("both written", lambda: len(pipe.waiting) == 2 and not pipe.out)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        server.resume()
    assert await second == b"second"
    assert await _run(aclient, "ECHO", "third") == b"third"
    assert pipes_for(aclient.connection_pool).pipe is pipe and pipe.error is None


async def test_a_stalled_connection_is_dropped_after_about_one_budget(server: Server, prefix: str) -> None:
    """With Redis stopped, 200 outstanding commands all fail with a Redis TimeoutError at once,
    on the one connection; after resume the next command gets its own reply on a new one."""
    client = dba.connect(server.url, timeout=0.2)
    try:
        assert await _run(client, "PING") == b"PONG"
        admin = server.client()
        before = _connections(admin)
        server.pause()
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            results = await asyncio.gather(*(_run(client, "ECHO", str(i)) for i in range(200)), return_exceptions=True)
            took = loop.time() - t0
        finally:
            server.resume()
        assert all(isinstance(r, RedisTimeoutError) for r in results), results[:3]
        assert took < 5.0  # loose: one budget (0.2 s) and a loop turn, not 200 budgets (40 s)
        assert await _run(client, "ECHO", "after") == b"after"
        assert _connections(admin) - before == 1  # only the replacement
    finally:
        await client.aclose()


async def test_a_connection_the_server_closed_is_replaced(server: Server, prefix: str) -> None:
    """A connection the server closed (its `timeout`, CLIENT KILL) is dropped when the loop sees
    it; the next calls use a new one and lose nothing."""
    client = dba.connect(server.url, timeout=2.0)
    b = dba.Breaker("svc", client, BreakerConfig(), prefix=prefix, listen=False)
    try:
        await b.call(lambda: None)
        pipe = pipes_for(client.connection_pool).pipe
        assert pipe is not None
        assert int(server.client().client_kill_filter(_type="normal", skipme=True)) >= 1
        await _poll("the close seen", lambda: pipe.error is not None)
        assert isinstance(pipe.error, RedisConnectionError)
        for _ in range(5):
            await b.call(lambda: None)
        assert b._core.down_until == 0
        assert (await b.snapshot()).calls == 6
    finally:
        await client.aclose()


async def test_noscript_during_a_burst_is_reloaded(aclient: Any, r: redis.Redis, prefix: str) -> None:
    """SCRIPT FLUSH while a burst is outstanding: every call still counted (NOSCRIPT -> EVAL)."""
    b = dba.Breaker("svc", aclient, BreakerConfig(minimum_calls=10**6), prefix=prefix, listen=False)
    await b.call(lambda: None)
    for _ in range(3):
        aclient_flush = asyncio.ensure_future(_run(aclient, "SCRIPT", "FLUSH"))
        await asyncio.gather(*(b.call(lambda: None) for _ in range(300)), aclient_flush)
    assert b._core.down_until == 0
    assert (await b.snapshot()).calls == 901


async def test_decoded_replies_on_a_decode_responses_client(server: Server, prefix: str) -> None:
    """A client built with decode_responses=True gets str replies on the pipe too, and its
    breaker counts."""
    client = dba.connect(server.url, timeout=2.0, decode_responses=True)
    try:
        assert await _run(client, "ECHO", "café") == "café"
        b = dba.Breaker("svc", client, BreakerConfig(), prefix=prefix, listen=False)
        await asyncio.gather(*(b.call(lambda: None) for _ in range(50)))
        assert (await b.snapshot()).calls == 50
    finally:
        await client.aclose()


async def test_aclose_closes_the_pipe_and_fails_nothing_pending(server: Server) -> None:
    """`aclose()` with a live pipe returns (redis-py's disconnect is told the socket closed) and
    the connection is gone from the server."""
    client = dba.connect(server.url, timeout=2.0)
    assert await _run(client, "PING") == b"PONG"
    pipe = pipes_for(client.connection_pool).pipe
    assert pipe is not None
    admin = server.client()
    assert int(admin.info("clients")["connected_clients"]) == 2
    await asyncio.wait_for(client.aclose(), 5)
    assert pipe.error is not None
    for _ in range(1000):  # the server sees the close within its next event loop cycles
        if int(admin.info("clients")["connected_clients"]) == 1:
            break
    assert int(admin.info("clients")["connected_clients"]) == 1


async def test_each_event_loop_has_its_own_pipe(server: Server) -> None:
    """A client used from a second event loop (another thread) gets its own connection there;
    the first loop's keeps working."""
    client = dba.connect(server.url, timeout=2.0)
    try:
        assert await _run(client, "ECHO", "a") == b"a"

        async def other() -> Any:
            return await _run(client, "ECHO", "b")

        assert await asyncio.to_thread(asyncio.run, other()) == b"b"
        assert await _run(client, "ECHO", "c") == b"c"
    finally:
        await client.aclose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_a_forked_child_does_not_use_the_parents_pipe(server: Server, prefix: str) -> None:
    """A child forked after the parent's calls makes its own connection (the parent's pipe is not
    touched): both count, nothing is lost."""
    client = dba.connect(server.url, timeout=2.0)
    b = dba.Breaker("svc", client, BreakerConfig(), prefix=prefix, listen=False)
    await b.call(lambda: None)
    parent_pipe = pipes_for(client.connection_pool).pipe
    pid = os.fork()
    if pid == 0:  # the child: a loop of its own, 10 calls, then report through the exit code
        code = 1
        try:

            async def child() -> int:
                for _ in range(10):
                    await b.call(lambda: None)
                mine = pipes_for(client.connection_pool).pipe
                return 0 if b._core.down_until == 0 and mine is not parent_pipe else 2

            code = asyncio.new_event_loop().run_until_complete(child())
        finally:
            os._exit(code)
    for _ in range(10):
        await b.call(lambda: None)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (await b.snapshot()).calls == 21
    assert pipes_for(client.connection_pool).pipe is parent_pipe
    await client.aclose()


async def test_the_pipes_packer_matches_pack_and_refuses_what_pack_refuses(aclient: Any) -> None:
    """The pipe's packer (pieces of str arguments kept) gives `pack`'s bytes, call after call, in
    the client's encoding; a float or bool is left to redis-py, as `pack` leaves it."""
    from distbreaker._transport import pack

    pipes = pipes_for(aclient.connection_pool)
    command = ("EVALSHA", "a" * 40, 2, "p:{svc}", "p:{svc}:events", "", "café", b"\x00\xff", -7, 0, "1")
    for _ in range(3):
        assert pipes.pack(command) == pack(command, "utf-8", "strict")
    assert pipes.pack(("SET", "k", 1.5)) is None and pipes.pack(("SET", "1", True)) is None
    for i in range(_aio_pipe.PACK_CACHE + 10):  # the kept pieces are bounded
        assert pipes.pack(("ECHO", str(i))) == pack(("ECHO", str(i)), "utf-8", "strict")
    assert len(pipes.pieces) <= _aio_pipe.PACK_CACHE
    assert await _run(aclient, "ECHO", 1.5) == b"1.5"  # through redis-py


async def test_a_cold_burst_sends_one_acquire(server: Server, prefix: str) -> None:
    """The tasks of a cold burst that find no cached state wait for the one acquire in flight
    (its reply fills the cache) instead of each sending their own: 300 calls, 300 records and
    at most 2 acquires (one, and its NOCONFIG resend) reach the server; all are counted."""
    admin = server.client()
    client = dba.connect(server.url, timeout=2.0)
    b = dba.Breaker("svc", client, BreakerConfig(minimum_calls=10**6), prefix=prefix, listen=False)
    try:  # the scripts loaded first (by another breaker): no NOSCRIPT -> EVAL per concurrent record
        await dba.Breaker("other", client, BreakerConfig(), prefix=prefix, listen=False).call(lambda: None)
        admin.config_resetstat()
        await asyncio.gather(*(b.call(lambda: None) for _ in range(300)))
        stats = admin.info("commandstats")
        scripts = sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))
        assert 300 < scripts <= 300 + 2, stats  # the records, one acquire (and its NOCONFIG resend)
        assert (await b.snapshot()).calls == 300
    finally:
        await client.aclose()


async def test_the_asyncio_breaker_sends_its_record_through_the_lane(aclient: Any, prefix: str) -> None:
    """On a `dba.connect` client the closed call's record goes straight onto the loop's pipe
    (`_transport.ALane`): packed once for the prepared request, the same connection, every
    call counted."""
    b = dba.Breaker("svc", aclient, BreakerConfig(minimum_calls=10**6), prefix=prefix, listen=False)
    assert isinstance(b._lane, ALane)
    for _ in range(20):
        await b.call(lambda: None)
    request = b._core.record((b._core.view.generation, ""), Outcome.SUCCESS, 0.0)
    assert id(request) in b._lane.packed  # the common call's request, packed once and kept
    assert b._lane.pipes is pipes_for(aclient.connection_pool)
    assert (await b.snapshot()).calls == 20


async def test_a_single_connection_client_has_no_lane(server: Server, prefix: str) -> None:
    """A single-connection client keeps its own connection: the breaker goes through redis-py."""
    client = redis.asyncio.Redis.from_url(server.url, socket_timeout=2.0, single_connection_client=True)
    try:
        b = dba.Breaker("svc", client, BreakerConfig(), prefix=prefix, listen=False)
        assert b._lane is None
        await b.call(lambda: None)
        assert (await b.snapshot()).calls == 1
    finally:
        await client.aclose()


async def test_noscript_on_the_lane_is_reloaded_and_counted(aclient: Any, prefix: str) -> None:
    """After SCRIPT FLUSH the lane's EVALSHA answers NOSCRIPT to its caller: the call goes on
    with EVAL (the steps, `adrive(answered=...)`), counts once, and the pipe stays."""
    b = dba.Breaker("svc", aclient, BreakerConfig(), prefix=prefix, listen=False)
    await b.call(lambda: None)
    sha = b._core.scripts["record"].sha
    await _run(aclient, "SCRIPT", "FLUSH")
    assert b._lane is not None
    pipe = pipes_for(aclient.connection_pool).pipe
    with pytest.raises(NoScriptError):
        await b._lane.request(b._core.record((b._core.view.generation, ""), Outcome.SUCCESS, 0.0))
    assert await b.call(lambda: 5) == 5
    assert await _run(aclient, "SCRIPT", "EXISTS", sha) == [1]
    assert pipes_for(aclient.connection_pool).pipe is pipe and pipe is not None and pipe.error is None
    assert b._core.down_until == 0
    assert (await b.snapshot()).calls == 2


def test_the_lane_follows_a_new_event_loop(server: Server, prefix: str) -> None:
    """A breaker used under two `asyncio.run`s sends on each loop's own pipe (the lane's cached
    pipes belong to the loop that made them)."""
    client = dba.connect(server.url, timeout=2.0)
    b = dba.Breaker("svc", client, BreakerConfig(minimum_calls=10**6), prefix=prefix, listen=False)
    seen = []

    async def calls() -> None:
        for _ in range(3):
            await b.call(lambda: None)
        assert b._lane is not None
        seen.append(b._lane.pipes)
        assert b._lane.pipes.loop is asyncio.get_running_loop()

    asyncio.run(calls())
    asyncio.run(calls())
    assert seen[0] is not seen[1]

    async def count() -> int:
        calls = (await b.snapshot()).calls
        await client.aclose()
        return calls

    assert asyncio.run(count()) == 6
