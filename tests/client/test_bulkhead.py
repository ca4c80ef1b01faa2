"""The fleet-wide bulkhead (distbreaker.Bulkhead / distbreaker.asyncio.Bulkhead) on a real server.

Concurrency is shown by what the calls themselves observe: each admitted call counts itself in
and out, and the first `max_concurrent` of them wait (on an event, bounded by a deadline) until
that many are inside together, so a test proves both that the limit is reached and that it is
never passed. Waits for a slot are the bulkhead's own `max_wait` polling.
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import distbreaker.asyncio as dba
from distbreaker import (
    Breaker,
    BreakerConfig,
    BreakerRegistry,
    Bulkhead,
    BulkheadFullError,
    BulkheadState,
    CircuitOpenError,
    ConfigError,
    DistbreakerError,
    _otel,
    connect,
)
from distbreaker._bulkhead_otel import HELD, REJECTIONS
from distbreaker._log import LIMITED
from distbreaker._scripts import OTHER_SCRIPTS
from distbreaker.bulkhead import DEFAULT_RETRY_AFTER, AsyncBulkhead, bulkhead_key, bulkheads

pytestmark = pytest.mark.redis

PATIENCE = 10.0  # seconds: the bound of every wait in this module (never reached when all is well)


@pytest.fixture
def url(redis_url: str) -> str:
    return redis_url


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    c = connect(url, timeout=2.0)  # generous: these tests check limits, not outage handling
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(autouse=True)
def _fresh_log_limits() -> Iterator[None]:
    LIMITED.clear()
    yield
    LIMITED.clear()


class Inside:
    """What the calls through a bulkhead observe: how many are inside at once.

    The first `limit` calls stay inside until `limit` are inside together *and* each of the
    `others` callers has been refused at least once (so a bulkhead that let one more in would
    show it: that caller would have got in instead of being refused). Later calls pass through.
    """

    def __init__(self, limit: int, others: int) -> None:
        self.limit, self.others = limit, others
        self.lock = threading.Lock()
        self.now = self.peak = self.entered = 0
        self.refused_by: set[int] = set()
        self.full = False
        self.gate = threading.Event()

    def _check(self) -> None:
        if self.full and len(self.refused_by) >= self.others:
            self.gate.set()

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.entered += 1
            self.peak = max(self.peak, self.now)
            self.full = self.full or self.now >= self.limit
            self._check()

    def leave(self) -> None:
        with self.lock:
            self.now -= 1

    def refused(self, who: int) -> None:
        with self.lock:
            self.refused_by.add(who)
            self._check()

    def work(self) -> None:
        self.enter()
        try:
            assert self.gate.wait(PATIENCE), "the bulkhead never had max_concurrent calls in while the others waited"
        finally:
            self.leave()


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


# -- limits -------------------------------------------------------------------------------------
def test_threads_never_exceed_max_concurrent(client: redis.Redis, prefix: str) -> None:
    """12 threads through a 3-slot bulkhead: 3 run together while the 9 others are refused."""
    bh = Bulkhead("pay", client, max_concurrent=3, lease_timeout=30, prefix=prefix)
    inside = Inside(3, others=9)
    errors: list[BaseException] = []

    def worker(who: int) -> None:
        deadline = time.monotonic() + PATIENCE
        try:
            while True:
                try:
                    return bh.call(inside.work)
                except BulkheadFullError:
                    inside.refused(who)
                    assert time.monotonic() < deadline, "never got a slot"
                    time.sleep(0.002)  # load pacing between tries, not synchronisation
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE * 3)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert inside.entered == 12 and inside.peak == 3
    assert bh.state().in_use == 0 and bh.held == 0


def test_waiting_threads_share_the_slots(client: redis.Redis, prefix: str) -> None:
    """12 threads waiting for slots (max_wait) all run, at most 3 at once."""
    bh = Bulkhead("pay", client, max_concurrent=3, lease_timeout=30, max_wait=PATIENCE, prefix=prefix)
    inside = Inside(3, others=0)
    threads = [threading.Thread(target=bh.call, args=(inside.work,)) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE * 3)
    assert not any(t.is_alive() for t in threads)
    assert inside.entered == 12 and inside.peak == 3


async def test_tasks_never_exceed_max_concurrent(url: str, prefix: str) -> None:
    """12 asyncio tasks through a 3-slot async bulkhead: 3 run together while the 9 others are refused."""
    client = dba.connect(url, timeout=2.0)
    try:
        bh = dba.Bulkhead("pay", client, max_concurrent=3, lease_timeout=30, prefix=prefix)
        assert isinstance(bh, AsyncBulkhead)
        now = peak = 0
        full = False
        refused: set[int] = set()
        gate = asyncio.Event()

        def check() -> None:
            if full and len(refused) >= 9:
                gate.set()

        @bh
        async def work(i: int) -> int:
            nonlocal now, peak, full
            now += 1
            peak = max(peak, now)
            full = full or now >= 3
            check()
            try:
                await asyncio.wait_for(gate.wait(), PATIENCE)
            finally:
                now -= 1
            return i

        async def caller(i: int) -> int:
            deadline = time.monotonic() + PATIENCE
            while True:
                try:
                    return await work(i)
                except BulkheadFullError:
                    refused.add(i)
                    check()
                    assert time.monotonic() < deadline, "never got a slot"
                    await asyncio.sleep(0.002)  # pacing between tries

        assert sorted(await asyncio.gather(*(caller(i) for i in range(12)))) == list(range(12))
        assert peak == 3
        assert (await bh.state()).in_use == 0
    finally:
        await client.aclose()


def test_full_raises_with_retry_after(client: redis.Redis, prefix: str) -> None:
    """With every slot leased, a call is refused at once with BulkheadFullError (a
    DistbreakerError) carrying in_use and retry_after up to the earliest lease's expiry; the
    function does not run; a released slot admits the next call."""
    bh = Bulkhead("pay", client, max_concurrent=2, lease_timeout=timedelta(seconds=30), prefix=prefix)
    a, b = bh.acquire(), bh.acquire()
    ran: list[int] = []
    with pytest.raises(BulkheadFullError) as info:
        bh.call(ran.append, 1)
    err = info.value
    assert isinstance(err, DistbreakerError)
    assert ran == []
    assert (err.bulkhead, err.max_concurrent, err.in_use, err.reason) == ("pay", 2, 2, "full")
    assert 0 < err.retry_after <= 30
    assert "'pay' is full (2/2 in use)" in str(err)
    state = bh.state()
    assert state == BulkheadState("pay", 2, 2, state.next_expiry, 30.0) and 0 < (state.next_expiry or 0) <= 30
    bh.release(a)
    assert bh.call(ran.append, 1) is None and ran == [1]
    bh.release(b)
    state = bh.state()  # released
    assert (state.in_use, state.max_concurrent, state.next_expiry) == (0, 2, None)


def test_with_block_gives_lease_and_releases_on_error(client: redis.Redis, prefix: str) -> None:
    """``with bulkhead as lease`` holds a slot for the block and gives it back when the block raises."""
    bh = Bulkhead("pay", client, max_concurrent=1, prefix=prefix)
    with pytest.raises(KeyError):
        with bh as lease:
            assert lease.id and lease.bulkhead == "pay" and lease.expires_in == 60.0
            assert bh.state().in_use == 1
            with pytest.raises(BulkheadFullError):
                with bh:
                    pass
            raise KeyError("boom")
    assert bh.state().in_use == 0
    with bh:  # the slot is free again
        pass


def test_max_wait_gets_a_released_slot(client: redis.Redis, prefix: str) -> None:
    """A caller with max_wait gets the slot another call releases while it waits."""
    bh = Bulkhead("pay", client, max_concurrent=1, max_wait=PATIENCE, prefix=prefix)
    held = bh.acquire()
    result: list[Any] = []
    waiter = threading.Thread(target=lambda: result.append(bh.call(lambda: "ran")))
    waiter.start()
    bh.release(held)
    waiter.join(PATIENCE * 2)
    assert result == ["ran"]


def test_max_wait_runs_out(client: redis.Redis, prefix: str) -> None:
    """When no slot frees within max_wait, the call is refused after polling."""
    holder = Bulkhead("pay", client, max_concurrent=1, prefix=prefix)
    waiter = Bulkhead("pay", client, max_concurrent=1, max_wait=0.05, prefix=prefix)
    lease = holder.acquire()
    with pytest.raises(BulkheadFullError) as info:
        waiter.call(lambda: None)
    assert info.value.in_use == 1
    holder.release(lease)


def test_lease_of_a_dead_caller_expires(client: redis.Redis, prefix: str) -> None:
    """A lease never released (its worker died) frees its slot after lease_timeout."""
    bh = Bulkhead("pay", client, max_concurrent=1, lease_timeout=0.2, prefix=prefix)
    bh.acquire()  # never released
    with pytest.raises(BulkheadFullError) as info:
        bh.acquire()
    assert 0 < info.value.retry_after <= 0.2
    patient = Bulkhead("pay", client, max_concurrent=1, lease_timeout=30, max_wait=PATIENCE, prefix=prefix)
    lease = patient.acquire()  # granted once the dead lease expired
    assert client.zscore(bulkhead_key(prefix, "pay"), lease.id) is not None
    # the new lease, 'max' and 'lease': the old one pruned
    assert client.zcard(bulkhead_key(prefix, "pay")) == 3


def test_renew_extends_a_live_lease_only(client: redis.Redis, prefix: str) -> None:
    """renew pushes a live lease's expiry; an expired lease is not revived (False)."""
    key = bulkhead_key(prefix, "pay")
    bh = Bulkhead("pay", client, max_concurrent=1, lease_timeout=30, prefix=prefix)
    lease = bh.acquire()
    before = client.zscore(key, lease.id)
    assert before is not None
    client.zadd(key, {lease.id: before - 20_000})  # as if granted 20 s earlier
    assert bh.renew(lease) is True
    after = client.zscore(key, lease.id)
    assert after is not None and after >= before - 1000
    client.zadd(key, {lease.id: 1})  # long expired
    assert bh.renew(lease) is False
    assert client.zscore(key, lease.id) is None
    bh.release(lease)  # releasing a lease that is gone is harmless
    assert bh.held == 0


def test_processes_with_different_prefixes_do_not_share(client: redis.Redis, prefix: str) -> None:
    """The same name under another prefix is another bulkhead."""
    a = Bulkhead("pay", client, max_concurrent=1, prefix=prefix)
    b = Bulkhead("pay", client, max_concurrent=1, prefix=prefix + "-other")
    la, lb = a.acquire(), b.acquire()
    a.release(la)
    b.release(lb)


# -- scripts ------------------------------------------------------------------------------------
def test_survives_script_flush(client: redis.Redis, prefix: str) -> None:
    """After SCRIPT FLUSH (a restart, a failover) the next call reloads the script itself."""
    bh = Bulkhead("pay", client, max_concurrent=1, prefix=prefix)
    bh.call(lambda: None)
    client.script_flush()
    assert bh.call(lambda: 7) == 7
    assert client.script_exists(OTHER_SCRIPTS["bulkhead"].sha) == [True]


def test_functions_mode(url: str, redis_binary: Any, prefix: str) -> None:
    """connect(functions=True): the bulkhead runs as a Redis Function (FCALL), same limits."""
    if redis_binary.version < (7, 0, 0):
        pytest.skip("Redis Functions need Redis >= 7")
    c = connect(url, timeout=2.0, functions=True)
    try:
        bh = Bulkhead("pay", c, max_concurrent=1, prefix=prefix)
        assert bh._core.script.function.endswith("_bulkhead")
        with bh:
            with pytest.raises(BulkheadFullError):
                bh.acquire()
        assert bh.state().in_use == 0
    finally:
        c.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope", ""], "op must be"),
        (["acquire", "", "0", "1000", "id"], "max_concurrent must be an integer"),
        (["acquire", "", "100001", "1000", "id"], "max_concurrent must be an integer"),
        (["acquire", "", "1.5", "1000", "id"], "max_concurrent must be an integer"),
        (["acquire", "", "1", "0", "id"], "lease_timeout must be an integer"),
        (["acquire", "", "1", "86400001", "id"], "lease_timeout must be an integer"),
        (["acquire", "", "1", "1000", "max"], "lease id"),
        (["acquire", "", "1", "1000", "lease"], "lease id"),
        (["acquire", "", "1", "1000", ""], "lease id"),
        (["release", ""], "lease id"),
        (["acquire", "soon", "1", "1000", "id"], "now must be"),
    ],
)
def test_script_refuses_bad_arguments_before_writing(
    r: redis.Redis, prefix: str, argv: list[str], message: str
) -> None:
    """The script validates every argument first: an error names it, and nothing is written."""
    key = bulkhead_key(prefix, "pay")
    with pytest.raises(redis.ResponseError, match="distbreaker: .*" + message):
        r.eval(OTHER_SCRIPTS["bulkhead"].text, 1, key, *argv)
    assert r.exists(key) == 0


def test_script_grants_by_server_time_and_prunes(r: redis.Redis, prefix: str) -> None:
    """With an explicit clock: grants up to max, refuses with the earliest expiry, prunes at expiry."""
    key, text = bulkhead_key(prefix, "pay"), OTHER_SCRIPTS["bulkhead"].text
    assert r.eval(text, 1, key, "acquire", "1000", "2", "500", "a") == [1, 1, 0, 1000]
    assert r.eval(text, 1, key, "acquire", "1100", "2", "500", "b") == [1, 2, 0, 1100]
    assert r.eval(text, 1, key, "acquire", "1200", "2", "500", "c") == [0, 2, 1500, 1200]
    assert r.eval(text, 1, key, "read", "1200") == [2, 2, 1500, 1200, 500]
    assert r.eval(text, 1, key, "acquire", "1500", "2", "500", "c") == [1, 2, 0, 1500]  # a expired
    assert r.eval(text, 1, key, "release", "", "b") == [1]
    assert r.eval(text, 1, key, "release", "", "b") == [0]
    assert r.eval(text, 1, key, "read", "2001") == [0, 2, 0, 2001, 500]
    assert 0 < r.pttl(key) <= 7 * 86400 * 1000


def test_plain_reads_count_as_the_script_reads(r: redis.Redis, prefix: str) -> None:
    """read_steps (the exporter's and `distbreaker bulkheads`' reader: no script) gives what the
    script's read gives at the same time, at every step: a lease expiring exactly now is not
    live, nor one never released past its expiry."""
    from distbreaker._bulk import run
    from distbreaker.bulkhead import decode_state, read_steps

    key, text = bulkhead_key(prefix, "pay"), OTHER_SCRIPTS["bulkhead"].text

    def same_at(now: int) -> BulkheadState:
        (plain,), _ = run(r, read_steps(prefix, ["pay"], now_ms=now))
        assert plain == decode_state("pay", r.eval(text, 1, key, "read", str(now))), now
        assert isinstance(plain, BulkheadState)
        return plain

    assert same_at(900) == BulkheadState("pay", 0, None, None, None)  # no key at all
    r.eval(text, 1, key, "acquire", "1000", "3", "500", "a")
    r.eval(text, 1, key, "acquire", "1100", "3", "700", "b")
    assert same_at(1200) == BulkheadState("pay", 2, 3, 0.3, 0.7)
    assert same_at(1500).in_use == 1  # a's expiry is 1500: not live at 1500
    assert same_at(1799) == BulkheadState("pay", 1, 3, 0.001, 0.7)
    assert same_at(1800) == BulkheadState("pay", 0, 3, None, 0.7)  # b expired, never released
    assert r.zcard(key) == 4  # both leases still stored: the read pruned nothing


# -- composition with a breaker -------------------------------------------------------------------
def test_breaker_protect_with_bulkhead(client: redis.Redis, prefix: str) -> None:
    """breaker.protect(bulkhead=...): a full bulkhead raises BulkheadFullError (or goes to the
    fallback) and the breaker does not count it; an open breaker refuses before the bulkhead."""
    breaker = Breaker("pay", client, BreakerConfig(minimum_calls=1, redis_timeout=2.0), prefix=prefix, listen=False)
    bh = Bulkhead("pay", client, max_concurrent=1, prefix=prefix)

    @breaker.protect(bulkhead=bh)
    def charge(x: int) -> int:
        assert bh.state().in_use == 1  # the call holds the slot
        return x * 2

    @breaker.protect(bulkhead=bh, fallback=lambda exc: type(exc).__name__)
    def charge_or_name(x: int) -> Any:
        return x

    assert charge(21) == 42
    lease = bh.acquire()
    for _ in range(5):
        with pytest.raises(BulkheadFullError):
            charge(1)
    assert charge_or_name(1) == "BulkheadFullError"
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.state.value) == (1, 0, "closed")  # only the call that ran
    bh.release(lease)
    breaker.trip(reason="test")
    with pytest.raises(CircuitOpenError):
        charge(1)
    assert bh.state().in_use == 0
    breaker.close()
    with pytest.raises(TypeError, match="distbreaker.Bulkhead"):
        breaker.protect(bulkhead=object())  # type: ignore[arg-type]


def test_stacked_decorators_do_not_count_a_full_bulkhead(client: redis.Redis, prefix: str) -> None:
    """@breaker over @bulkhead: BulkheadFullError passes through the breaker uncounted."""
    breaker = Breaker("pay", client, BreakerConfig(minimum_calls=1, redis_timeout=2.0), prefix=prefix, listen=False)
    bh = Bulkhead("pay", client, max_concurrent=1, prefix=prefix)

    @breaker
    @bh
    def charge() -> str:
        return "ok"

    lease = bh.acquire()
    for _ in range(3):
        with pytest.raises(BulkheadFullError):
            charge()
    bh.release(lease)
    assert charge() == "ok"
    snap = breaker.snapshot()
    assert (snap.calls, snap.failures, snap.state.value) == (1, 0, "closed")
    breaker.close()


async def test_async_breaker_protect_with_bulkhead(url: str, client: redis.Redis, prefix: str) -> None:
    """The asyncio Breaker's protect(bulkhead=...) and ``async with`` on the async bulkhead."""
    aclient = dba.connect(url, timeout=2.0)
    try:
        breaker = dba.Breaker(
            "pay", aclient, BreakerConfig(minimum_calls=1, redis_timeout=2.0), prefix=prefix, listen=False
        )
        bh = dba.Bulkhead("pay", aclient, max_concurrent=1, prefix=prefix)

        async def fallback(exc: BaseException) -> str:
            return "later"

        @breaker.protect(bulkhead=bh, fallback=fallback)
        async def charge() -> str:
            return "ok"

        assert await charge() == "ok"
        async with bh as lease:
            assert lease.id
            assert await charge() == "later"
            with pytest.raises(BulkheadFullError):
                await bh.call(asyncio.sleep, 0)
        assert await charge() == "ok"
        snap = await breaker.snapshot()
        assert (snap.calls, snap.failures) == (2, 0)
        await breaker.close()
        with pytest.raises(TypeError, match="distbreaker.asyncio.Bulkhead"):
            breaker.protect(bulkhead=Bulkhead("pay", client, max_concurrent=1))  # type: ignore[arg-type]
    finally:
        await aclient.aclose()


def test_registry_protect_with_bulkhead(client: redis.Redis, prefix: str) -> None:
    """BreakerRegistry.protect(service, bulkhead=...) as Breaker.protect(bulkhead=...): the call
    holds a slot; a full bulkhead raises BulkheadFullError, or goes to the given fallback, or
    else to the registry's default one, and the breaker does not count it; an open breaker
    refuses before the bulkhead is asked."""
    registry = BreakerRegistry(client, BreakerConfig(minimum_calls=1, redis_timeout=2.0), prefix=prefix, listen=False)
    defaulted = BreakerRegistry(
        client, BreakerConfig(redis_timeout=2.0), prefix=prefix, listen=False, fallback=lambda exc: "default"
    )
    bh = Bulkhead("pay", client, max_concurrent=1, prefix=prefix)

    @registry.protect("pay", bulkhead=bh)
    def charge(x: int) -> int:
        assert bh.state().in_use == 1  # the call holds the slot
        return x * 2

    @registry.protect("pay", bulkhead=bh, fallback=lambda exc: type(exc).__name__)
    def charge_or_name() -> Any:
        return "ran"

    @defaulted.protect("pay2", bulkhead=bh)
    def charge_or_default() -> Any:
        return "ran"

    try:
        assert charge(21) == 42 and charge_or_default() == "ran"
        lease = bh.acquire()
        for _ in range(3):
            with pytest.raises(BulkheadFullError):
                charge(1)
        assert charge_or_name() == "BulkheadFullError" and charge_or_default() == "default"
        snap = registry.get("pay").snapshot()
        assert (snap.calls, snap.failures, snap.state.value) == (1, 0, "closed")  # only the call that ran
        bh.release(lease)
        registry.get("pay").trip(reason="test")
        with pytest.raises(CircuitOpenError):
            charge(1)
        assert bh.state().in_use == 0
        with pytest.raises(TypeError, match="distbreaker.Bulkhead"):
            registry.protect("pay", bulkhead=object())  # type: ignore[arg-type]
    finally:
        registry.close()
        defaulted.close()


async def test_async_registry_protect_with_bulkhead(url: str, client: redis.Redis, prefix: str) -> None:
    """The asyncio BreakerRegistry.protect(service, bulkhead=...): as the asyncio Breaker's, with
    an async fallback; the breaker does not count a full bulkhead."""
    aclient = dba.connect(url, timeout=2.0)
    registry = dba.BreakerRegistry(
        aclient, BreakerConfig(minimum_calls=1, redis_timeout=2.0), prefix=prefix, listen=False
    )
    try:
        bh = dba.Bulkhead("pay", aclient, max_concurrent=1, prefix=prefix)

        async def fallback(exc: BaseException) -> str:
            return "later"

        @registry.protect("pay", bulkhead=bh, fallback=fallback)
        async def charge() -> str:
            assert (await bh.state()).in_use == 1
            return "ok"

        @registry.protect("pay", bulkhead=bh, timeout=5)
        async def charge_or_raise() -> str:
            return "ok"

        assert await charge() == "ok"
        async with bh:
            assert await charge() == "later"
            with pytest.raises(BulkheadFullError):
                await charge_or_raise()
        assert await charge_or_raise() == "ok"
        snap = await registry.get("pay").snapshot()
        assert (snap.calls, snap.failures) == (2, 0)
        await registry.get("pay").trip(reason="test")
        with pytest.raises(CircuitOpenError):
            await charge_or_raise()
        assert (await bh.state()).in_use == 0
        with pytest.raises(TypeError, match="distbreaker.asyncio.Bulkhead"):
            registry.protect("pay", bulkhead=Bulkhead("pay", client, max_concurrent=1))  # type: ignore[arg-type]
    finally:
        await registry.close()
        await aclient.aclose()


async def test_async_cancelled_call_gives_its_slot_back(url: str, prefix: str) -> None:
    """A task cancelled inside the bulkhead releases its lease."""
    client = dba.connect(url, timeout=2.0)
    try:
        bh = dba.Bulkhead("pay", client, max_concurrent=1, prefix=prefix)
        inside = asyncio.Event()

        async def hang() -> None:
            inside.set()
            await asyncio.Event().wait()

        task = asyncio.ensure_future(bh.call(hang))
        await asyncio.wait_for(inside.wait(), PATIENCE)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + PATIENCE
        while (await bh.state()).in_use and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the shielded release may finish just after the task
        assert (await bh.state()).in_use == 0
    finally:
        await client.aclose()


# -- Redis unavailable ----------------------------------------------------------------------------
def test_on_redis_error(prefix: str) -> None:
    """Redis unreachable: "allow" runs the call without a slot; "reject" refuses it."""
    dead = connect(_dead_url(), timeout=0.2)
    try:
        allow = Bulkhead("pay", dead, max_concurrent=1, prefix=prefix)
        assert allow.call(lambda: "ran") == "ran" and allow.held == 0
        with allow as lease:
            assert lease.id == ""
        reject = Bulkhead("pay", dead, max_concurrent=1, prefix=prefix, on_redis_error="reject")
        with pytest.raises(BulkheadFullError) as info:
            reject.call(lambda: "ran")
        assert (info.value.reason, info.value.in_use, info.value.retry_after) == (
            "redis unavailable",
            None,
            DEFAULT_RETRY_AFTER,
        )
    finally:
        dead.close()


# -- input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": -1}, "max_concurrent"),
        ({"max_concurrent": True}, "max_concurrent"),
        ({"max_concurrent": 1.5}, "max_concurrent"),
        ({"max_concurrent": 100_001}, "max_concurrent"),
        ({"lease_timeout": 0}, "lease_timeout"),
        ({"lease_timeout": -1}, "lease_timeout"),
        ({"lease_timeout": math.inf}, "lease_timeout"),
        ({"lease_timeout": math.nan}, "lease_timeout"),
        ({"lease_timeout": 86_401}, "lease_timeout"),
        ({"lease_timeout": "5"}, "lease_timeout"),
        ({"max_wait": -0.1}, "max_wait"),
        ({"max_wait": math.inf}, "max_wait"),
        ({"max_wait": 3601}, "max_wait"),
        ({"on_redis_error": "local"}, "on_redis_error"),
        ({"prefix": "a b"}, "prefix"),
        ({"name": "pay{x}"}, "name"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_is_refused(client: redis.Redis, kwargs: dict[str, Any], field: str) -> None:
    """Every invalid argument raises ConfigError (a ValueError) naming it; Redis is not touched."""
    args: dict[str, Any] = {"name": "pay", "max_concurrent": 1, **kwargs}
    name = args.pop("name")
    with pytest.raises(ConfigError) as info:
        Bulkhead(name, client, **args)
    assert info.value.field == field and isinstance(info.value, ValueError)


def test_wrong_kind_of_function_or_client(client: redis.Redis, url: str) -> None:
    """The sync bulkhead refuses coroutine functions and asyncio clients, and vice versa."""
    bh = Bulkhead("pay", client, max_concurrent=1)

    async def coro() -> None: ...

    with pytest.raises(TypeError, match="distbreaker.asyncio.Bulkhead"):
        bh(coro)
    aclient = redis.asyncio.Redis.from_url(url)
    with pytest.raises(TypeError, match="distbreaker.Bulkhead"):
        dba.Bulkhead("pay", aclient, max_concurrent=1)(lambda: None)
    with pytest.raises(ConfigError, match="asyncio client"):
        Bulkhead("pay", aclient, max_concurrent=1)
    with pytest.raises(ConfigError, match="sync client"):
        dba.Bulkhead("pay", client, max_concurrent=1)


# -- the fleet's view and metrics -----------------------------------------------------------------
def test_bulkheads_lists_every_bulkhead_under_the_prefix(client: redis.Redis, prefix: str) -> None:
    """bulkheads() finds each bulkhead under the prefix with its use and limit, and nothing else."""
    a = Bulkhead("a", client, max_concurrent=2, prefix=prefix)
    b = Bulkhead("b.x", client, max_concurrent=5, prefix=prefix)
    Bulkhead("c", client, max_concurrent=1, prefix=prefix + "x").call(lambda: None)
    client.set(f"{prefix}:{{weird}}:bulkhead:not", "1")
    lease = a.acquire()
    b.call(lambda: None)
    found = bulkheads(client, prefix)
    assert [(s.name, s.in_use, s.max_concurrent) for s in found] == [("a", 1, 2), ("b.x", 0, 5)]
    assert found[0].next_expiry is not None and 0 < found[0].next_expiry <= 60
    a.release(lease)


def test_metrics(client: redis.Redis, prefix: str) -> None:
    """distbreaker.bulkhead.held reports this process's held slots; rejections are counted."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    _otel.use_meter_provider(provider)
    try:
        name = f"m-{prefix[-8:]}"
        bh = Bulkhead(name, client, max_concurrent=1, prefix=prefix)

        def points(metric: str) -> dict[tuple[Any, ...], Any]:
            out: dict[tuple[Any, ...], Any] = {}
            data = reader.get_metrics_data()
            for rm in data.resource_metrics if data else ():
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == metric:
                            for p in m.data.data_points:
                                attrs = dict(p.attributes)
                                if attrs.pop("bulkhead") == name:
                                    out[tuple(sorted(attrs.items()))] = p.value
            return out

        with bh:
            assert points(HELD) == {(): 1}
            for _ in range(2):
                with pytest.raises(BulkheadFullError):
                    bh.acquire()
        assert points(HELD) == {(): 0}
        assert points(REJECTIONS) == {(("reason", "full"),): 2}
    finally:
        _otel.use_meter_provider(None)
        provider.shutdown()


def test_cli_bulkheads_command(client: redis.Redis, redis_url: str, prefix: str) -> None:
    """`distbreaker bulkheads` shows in use / max per bulkhead; -o json is one document; a glob filters."""
    import json

    from click.testing import CliRunner

    from distbreaker_cli.app import cli

    a = Bulkhead("pay", client, max_concurrent=4, prefix=prefix)
    Bulkhead("search", client, max_concurrent=9, prefix=prefix).call(lambda: None)
    lease = a.acquire()
    try:
        run = CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix, "bulkheads"])
        assert run.exit_code == 0, run.output
        lines = run.stdout.splitlines()
        assert lines[0].split() == ["BULKHEAD", "IN", "USE", "MAX", "NEXT", "EXPIRY", "LEASE", "TIMEOUT"]
        assert lines[1].split()[:3] == ["pay", "1", "4"] and lines[1].split()[4] == "60s"
        assert lines[2].split() == ["search", "0", "9", "-", "60s"]
        run = CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix, "--json", "bulkheads", "pa*"])
        assert run.exit_code == 0, run.output
        (doc,) = json.loads(run.stdout)
        assert (doc["name"], doc["in_use"], doc["max_concurrent"]) == ("pay", 1, 4)
        assert 0 < doc["next_expiry"] <= 60 and doc["lease_timeout"] == 60
        run = CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix + "-none", "bulkheads"])
        assert run.exit_code == 0 and run.stdout == "" and "no bulkheads" in run.stderr
        run = CliRunner().invoke(cli, ["--url", "redis://u:s3cret@" + _dead_url()[8:], "bulkheads"])
        assert run.exit_code == 69 and "s3cret" not in run.output and "Traceback" not in run.output
    finally:
        a.release(lease)


def _acl_lines(page: str, start: str, end: str | None) -> list[list[str]]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / page).read_text()
    section = text[text.index(start) : text.index(end) if end else None]
    lines = re.findall(r"^ACL SETUSER .*$", section, re.MULTILINE)
    return [[r.replace(">WORKER_PASSWORD", ">worker-pw") for r in line.split()[3:]] for line in lines]


def test_docs_acl_line_lets_the_worker_use_a_bulkhead(redis_server_factory: Any) -> None:
    """The worker user of docs/operations.md plus the line of docs/bulkhead.md runs a bulkhead
    (FCALL where the server has Functions); without that line it is denied."""
    from distbreaker import AccessDeniedError, Admin

    server = redis_server_factory()
    admin = server.client()
    url = f"redis://127.0.0.1:{server.port}/0"
    try:
        functions = tuple(int(p) for p in str(admin.info("server")["redis_version"]).split(".")[:2]) >= (7, 0)
        ops = _acl_lines("operations.md", "## ACL: least privilege", "## When Redis is down")
        worker = ops[0] if functions else ops[2]
        assert len(ops) == 4  # the docs give both pairs (Functions, and 6.2)
        admin.execute_command("ACL", "SETUSER", "worker", *worker)
        if functions:
            Admin(admin).load_functions()
        client = connect(url.replace("redis://", "redis://worker:worker-pw@"), timeout=2, functions=functions)
        try:
            bh = Bulkhead("pay", client, max_concurrent=1)
            with pytest.raises(AccessDeniedError):
                bh.state()
            (extra,) = _acl_lines("bulkhead.md", "## ACL", None)
            admin.execute_command("ACL", "SETUSER", "worker", *extra)
            with bh as lease:
                assert bh.renew(lease) and bh.state().in_use == 1
            assert bh.state().in_use == 0
        finally:
            client.close()
    finally:
        admin.close()


def test_two_objects_of_one_bulkhead_in_one_process_hold_separate_leases(client: redis.Redis, prefix: str) -> None:
    """Two Bulkhead objects with the same name in one process never reuse a lease id (a reused
    id would overwrite a live lease and let one call too many in)."""
    a = Bulkhead("pay", client, max_concurrent=2, prefix=prefix)
    b = Bulkhead("pay", client, max_concurrent=2, prefix=prefix)
    la, lb = a.acquire(), b.acquire()
    assert la.id != lb.id and a.state().in_use == 2
    with pytest.raises(BulkheadFullError):
        a.acquire()
    a.release(la)
    b.release(lb)
