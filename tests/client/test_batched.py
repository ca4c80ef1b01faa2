"""Batched mode: outcomes summed locally, flushed in the background, applied at most once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from _servers import ServerFactory
from redis.exceptions import TimeoutError as RedisTimeout

import distbreaker.asyncio as dba
from distbreaker import Breaker, BreakerConfig, CircuitOpenError, State, connect
from distbreaker._scripts import SCRIPTS


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_counts_are_exact_after_close(redis_url: str, prefix: str) -> None:
    """5000 calls in batched mode, half failing, count exactly once close() flushed the rest."""
    b = Breaker(
        "svc",
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=10**6),
        prefix=prefix,
        mode="batched",
        flush_interval=0.05,
    )
    for i in range(5000):
        try:
            b.call(boom if i % 2 else (lambda: None))
        except Boom:
            pass
    b.close()
    s = b.snapshot()
    assert (s.calls, s.failures) == (5000, 2500)


def test_calls_make_no_round_trip(redis_server_factory: ServerFactory, prefix: str) -> None:
    """Closed calls in batched mode cost no EVALSHA each: a handful of flushes carry them all."""
    server = redis_server_factory()
    stats = server.client()
    b = Breaker(
        "svc",
        connect(server.url, timeout=1),
        BreakerConfig(minimum_calls=10**6),
        prefix=prefix,
        mode="batched",
        flush_interval=0.2,
        listen=False,
    )
    b.call(lambda: None)  # first call: acquire (empty cache)
    stats.config_resetstat()
    for _ in range(2000):
        b.call(lambda: None)
    b.close()
    cmd = stats.info("commandstats")
    scripts = cmd.get("cmdstat_evalsha", {}).get("calls", 0) + cmd.get("cmdstat_eval", {}).get("calls", 0)
    assert 1 <= scripts <= 20
    assert b.snapshot().calls == 2001


def test_trip_is_detected_within_an_interval(redis_url: str, prefix: str) -> None:
    """All calls failing: the breaker opens after a flush and then rejects locally."""
    b = Breaker(
        "svc",
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=10),
        prefix=prefix,
        mode="batched",
        flush_interval=0.05,
        listen=False,
    )
    executed = 0
    deadline = time.monotonic() + 5
    while True:
        assert time.monotonic() < deadline, "never tripped"
        try:
            b.call(boom)
            executed += 1
        except Boom:
            executed += 1
        except CircuitOpenError:
            break
    assert b.snapshot().state is State.OPEN
    b.close()


def test_a_failing_caller_flushes_inline_so_overshoot_stays_small(redis_url: str, prefix: str) -> None:
    """A caller whose unflushed failures could trip flushes at once: no thousands of calls past the trip."""
    b = Breaker(
        "svc",
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=10),
        prefix=prefix,
        mode="batched",
        flush_interval=30,
        listen=False,
    )  # the background flush never comes
    executed = 0
    while executed < 10_000:
        try:
            b.call(boom)
        except Boom:
            pass
        except CircuitOpenError:
            break
        executed += 1
    assert executed <= 2 * 10
    b.close()


class LosesReplies:
    """A client whose every other EVALSHA/EVAL is applied by Redis but whose reply is 'lost'."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.connection_pool = client.connection_pool
        self.n = 0

    def execute_command(self, *args: Any) -> Any:
        reply = self.client.execute_command(*args)
        if args[0] in ("EVALSHA", "EVAL"):
            self.n += 1
            if self.n % 2 == 0:
                raise RedisTimeout("reply lost (injected)")
        return reply


def test_lost_replies_are_retried_and_applied_once(redis_url: str, prefix: str) -> None:
    """Flushes whose replies are lost are retried with the same id and counted exactly once."""
    lossy = LosesReplies(connect(redis_url, timeout=1))
    b = Breaker(
        "svc",
        lossy,
        BreakerConfig(minimum_calls=10**6),
        prefix=prefix,
        mode="batched",
        flush_interval=0.01,
        listen=False,
    )
    for _round in range(50):
        for _ in range(20):
            b.call(lambda: None)
        b._core.retry_now()  # no backoff between injected failures: retry at once
        b.flush()
    for _ in range(10):  # drain whatever is still pending
        b._core.retry_now()
        b.flush()
        if b._core.batch is not None and b._core.batch.empty:
            break
    b.close()
    assert lossy.n > 50  # failures were injected and retried
    snapshot = Breaker("svc", connect(redis_url, timeout=1), prefix=prefix, listen=False).snapshot()
    assert snapshot.calls == 1000  # every call counted exactly once


def test_same_batch_id_twice_counts_once(r: redis.Redis, prefix: str) -> None:
    """record.lua applies a batch id at most once per client."""
    cfg = BreakerConfig(minimum_calls=10**6)
    keys = (f"{prefix}:{{svc}}", f"{prefix}:{{svc}}:events", f"{prefix}:{{svc}}:ids")
    args = ["", cfg.fingerprint, "0", "3", "1", "0", "", "client-a:1", "", *cfg._lua]
    for _ in range(3):
        r.eval(SCRIPTS["record"].text, 3, *keys, *args)  # (the lean reply: the counts are in the hash)
    assert r.hmget(keys[0], "tc", "tf") == [b"4", b"1"]
    args[7] = "client-a:2"
    r.eval(SCRIPTS["record"].text, 3, *keys, *args)
    assert r.hget(keys[0], "tc") == b"8"
    args[7] = "client-b:1"  # another client's sequence is independent
    r.eval(SCRIPTS["record"].text, 3, *keys, *args)
    assert r.hget(keys[0], "tc") == b"12"
    for batch in ("client-a:2", "client-b:1", "client-a:1"):  # again, without the config (as a flusher sends it)
        r.eval(SCRIPTS["record"].text, 3, *keys, *args[:7], batch, "")
    assert r.hget(keys[0], "tc") == b"12"


def test_outcomes_are_flushed_at_interpreter_exit(redis_url: str, prefix: str) -> None:
    """A process that exits normally without close() loses no batched outcome."""
    code = textwrap.dedent(f"""
        from distbreaker import Breaker, BreakerConfig, connect
        b = Breaker("svc", connect({redis_url!r}, timeout=1), BreakerConfig(minimum_calls=10**6),
                    prefix={prefix!r}, mode="batched", flush_interval=30)
        for _ in range(321):
            b.call(lambda: None)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    b = Breaker("svc", connect(redis_url, timeout=1), prefix=prefix, listen=False)
    assert b.snapshot().calls == 321


def test_invalid_mode_arguments(redis_url: str) -> None:
    """mode, flush_interval and flush_size are validated."""
    client = connect(redis_url, timeout=1)
    with pytest.raises(ValueError, match="mode"):
        Breaker("svc", client, mode="fast", listen=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flush_interval"):
        Breaker("svc", client, mode="batched", flush_interval=0, listen=False)
    with pytest.raises(ValueError, match="flush_size"):
        Breaker("svc", client, mode="batched", flush_size=0, listen=False)


async def test_async_batched_counts_and_stops(redis_url: str, prefix: str) -> None:
    """The asyncio batched breaker counts exactly and its flusher task ends on close()."""
    client = dba.connect(redis_url, timeout=1)
    b = dba.Breaker(
        "svc", client, BreakerConfig(minimum_calls=10**6), prefix=prefix, mode="batched", flush_interval=0.05
    )
    for _ in range(1000):
        await b.call(lambda: None)
    flusher = b._flusher
    assert flusher is not None and flusher.running
    await b.close()
    assert not flusher.running
    assert (await dba.Breaker("svc", client, prefix=prefix, listen=False).snapshot()).calls == 1000
    await client.aclose()


# -- fork (gunicorn --preload, any pre-fork server) --------------------------------------------
_FORK_SCRIPT = """
import os, sys
from distbreaker import Breaker, BreakerConfig, connect
b = Breaker("svc", connect({url!r}, timeout=1), BreakerConfig(minimum_calls=10**6), prefix={prefix!r},
            mode="batched", flush_interval={interval}, listen=False)
for _ in range({parent_calls}):
    b.call(lambda: None)  # the parent's own, not flushed yet at the fork
pid = os.fork()
if pid == 0:
    for _ in range(100):
        b.call(lambda: None)
    print("called", flush=True)
    if {wait_in_child}:
        sys.stdin.readline()  # runs until the test says so
    sys.exit(0)  # a normal exit, like a gunicorn worker's
os.waitpid(pid, 0)
print("child gone", flush=True)
sys.stdin.readline()  # the parent exits (and flushes its own) when the test says so
"""


def _calls(url: str, prefix: str) -> int:
    return Breaker("svc", connect(url, timeout=1), prefix=prefix, listen=False).snapshot().calls


def _fork_run(url: str, prefix: str, interval: float, parent_calls: int, wait_in_child: bool) -> subprocess.Popen[str]:
    code = _FORK_SCRIPT.format(
        url=url, prefix=prefix, interval=interval, parent_calls=parent_calls, wait_in_child=wait_in_child
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "called"
    return proc


def test_a_forked_child_flushes_its_outcomes_while_it_runs(redis_url: str, prefix: str) -> None:
    """A batched breaker built before os.fork(): the child's 100 calls reach Redis from its own
    flusher while it still runs; the parent's 10 unflushed ones are counted once, not twice."""
    proc = _fork_run(redis_url, prefix, 0.05, 10, wait_in_child=True)
    try:
        wait_for("the child's periodic flush", lambda: _calls(redis_url, prefix) == 110)
        assert proc.poll() is None  # the child (and the parent waiting for it) still run
    finally:
        proc.communicate("\n", timeout=30)
    assert proc.returncode == 0
    assert _calls(redis_url, prefix) == 110


@pytest.mark.parametrize("parent_calls", [0, 10], ids=["unused", "used"])
def test_a_forked_child_flushes_at_its_exit(redis_url: str, prefix: str, parent_calls: int) -> None:
    """A child that exits normally (sys.exit) before any periodic flush still counts its 100 calls,
    whether or not the parent used the breaker before the fork; the parent's count once."""
    proc = _fork_run(redis_url, prefix, 30, parent_calls, wait_in_child=False)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "child gone"
    assert _calls(redis_url, prefix) == 100  # the child's, flushed at its exit (the parent still runs)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert _calls(redis_url, prefix) == 100 + parent_calls


def _mp_child(url: str, prefix: str, b: Breaker) -> None:
    for _ in range(100):
        b.call(lambda: None)


def test_a_multiprocessing_fork_child_flushes_at_its_end(redis_url: str, prefix: str) -> None:
    """A multiprocessing child (fork method, which ends with os._exit after its target) flushes
    what it summed; the parent's unflushed outcomes are not sent by the child."""
    import multiprocessing

    b = Breaker(
        "svc",
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=10**6),
        prefix=prefix,
        mode="batched",
        flush_interval=30,
        listen=False,
    )
    for _ in range(7):
        b.call(lambda: None)
    proc = multiprocessing.get_context("fork").Process(target=_mp_child, args=(redis_url, prefix, b))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert _calls(redis_url, prefix) == 100
    b.close()
    assert _calls(redis_url, prefix) == 107
