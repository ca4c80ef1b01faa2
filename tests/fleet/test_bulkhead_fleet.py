"""Fleet invariants of the bulkhead with real worker processes sharing one Redis.

Workers are spawned (each builds its own client from the URL). Every call through the bulkhead
counts itself in and out in Redis with one atomic script (`_TRACK`), which also keeps the
highest count seen: the test asserts that peak against `max_concurrent`. Every wait is bounded
by a deadline and stragglers are terminated in a ``finally``.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from distbreaker import Bulkhead, BulkheadFullError, connect

pytestmark = pytest.mark.fleet

TIMEOUT = 2.0  # socket timeout of every client here: 8 busy processes on 2 cores miss 50 ms
START_TIMEOUT = 30.0
NAME = "fleet-bulkhead"
_CTX = multiprocessing.get_context("spawn")

# KEYS[1] the number of calls inside now, KEYS[2] the highest it was, KEYS[3] calls entered;
# ARGV[1] +1 (enter) or -1 (leave)
_TRACK = """
local now = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[1]) > 0 then
  redis.call('INCR', KEYS[3])
  local peak = tonumber(redis.call('GET', KEYS[2]) or '0')
  if now > peak then redis.call('SET', KEYS[2], now) end
end
return now
"""


def _track_keys(prefix: str) -> tuple[str, str, str]:
    return (f"{prefix}:track:now", f"{prefix}:track:peak", f"{prefix}:track:entered")


def _worker_main(out: Any, wid: int, body: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    try:
        out.put((wid, "ok", body(*args)))
    except BaseException:
        out.put((wid, "error", traceback.format_exc()))


def _reap(procs: Sequence[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def _run_fleet(body: Callable[..., dict[str, Any]], args: Sequence[tuple[Any, ...]], timeout: float) -> list[Any]:
    out = _CTX.Queue()
    procs = [_CTX.Process(target=_worker_main, args=(out, i, body, a), daemon=True) for i, a in enumerate(args)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        results: dict[int, Any] = {}
        errors: list[str] = []
        while len(results) + len(errors) < len(procs):
            try:
                wid, status, payload = out.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"only {len(results) + len(errors)} of {len(procs)} workers reported; errors: {errors}")
            if status == "ok":
                results[wid] = payload
            else:
                errors.append(f"worker {wid}:\n{payload}")
        assert not errors, "\n".join(errors)
        for p in procs:
            p.join(timeout=max(0.01, deadline - time.monotonic()))
            assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"
        return [results[i] for i in range(len(procs))]
    finally:
        _reap(procs)
        out.close()
        out.join_thread()


# -- worker bodies (module level: spawn pickles them by reference) ------------------------------
def _body_calls(url: str, prefix: str, limit: int, barrier: Any, calls: int, work: float) -> dict[str, Any]:
    client = connect(url, timeout=TIMEOUT)
    try:
        bh = Bulkhead(NAME, client, max_concurrent=limit, lease_timeout=60, max_wait=60, prefix=prefix)
        track = client.register_script(_TRACK)
        keys = _track_keys(prefix)

        def call() -> None:
            track(keys=keys, args=[1])
            try:
                time.sleep(work)  # the protected call's workload, not synchronisation
            finally:
                track(keys=keys, args=[-1])

        barrier.wait(timeout=START_TIMEOUT)
        for _ in range(calls):
            bh.call(call)
        return {"held": bh.held}
    finally:
        client.close()


def _body_hold(url: str, prefix: str, lease_timeout: float, out: Any, patience: float) -> dict[str, Any]:
    """Take the only slot, say so, then block until killed."""
    client = connect(url, timeout=TIMEOUT)
    bh = Bulkhead(NAME, client, max_concurrent=1, lease_timeout=lease_timeout, prefix=prefix)
    bh.acquire()
    out.put("held")
    time.sleep(patience)  # stands for a call that hangs; the test kills the process long before
    return {}


# -- tests --------------------------------------------------------------------------------------
def test_processes_never_exceed_max_concurrent(redis_url: str, prefix: str) -> None:
    """8 processes x 15 calls through a 3-slot bulkhead: every call runs, never more than 3 at once."""
    workers, calls, limit = 8, 15, 3
    barrier = _CTX.Barrier(workers)
    results = _run_fleet(
        _body_calls, [(redis_url, prefix, limit, barrier, calls, 0.01)] * workers, timeout=START_TIMEOUT + 120
    )
    client = connect(redis_url, timeout=TIMEOUT)
    try:
        now, peak, entered = (int(client.get(k) or 0) for k in _track_keys(prefix))
        state = Bulkhead(NAME, client, max_concurrent=limit, prefix=prefix).state()
    finally:
        client.close()
    print(f"\nbulkhead fleet: {workers} processes x {calls} calls, max_concurrent={limit}: peak inside {peak}")
    assert entered == workers * calls and now == 0
    assert 1 <= peak <= limit
    assert state.in_use == 0 and all(r["held"] == 0 for r in results)


def test_slot_of_a_killed_process_comes_back(redis_url: str, prefix: str) -> None:
    """A process killed while holding the only slot blocks the fleet only until its lease expires."""
    lease_timeout = 1.0
    client = connect(redis_url, timeout=TIMEOUT)
    out = _CTX.Queue()
    proc = _CTX.Process(target=_body_hold, args=(redis_url, prefix, lease_timeout, out, 60.0), daemon=True)
    try:
        proc.start()
        assert out.get(timeout=START_TIMEOUT) == "held"
        bh = Bulkhead(NAME, client, max_concurrent=1, lease_timeout=30, prefix=prefix)
        with pytest.raises(BulkheadFullError) as info:
            bh.acquire()
        assert info.value.in_use == 1 and 0 < info.value.retry_after <= lease_timeout
        proc.kill()
        proc.join(timeout=10)
        assert not proc.is_alive()
        waiter = Bulkhead(NAME, client, max_concurrent=1, lease_timeout=30, max_wait=lease_timeout + 10, prefix=prefix)
        lease = waiter.acquire()  # granted once the dead process's lease expired
        assert lease.id and waiter.state().in_use == 1
        waiter.release(lease)
    finally:
        _reap([proc])
        out.close()
        out.join_thread()
        client.close()
