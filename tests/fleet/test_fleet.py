"""Fleet invariants with real worker processes sharing one breaker through one Redis.

Workers are started with the "spawn" context: each builds its own client from the URL, and
only plain data (URL, prefix, config keywords) crosses the process boundary. Every wait is
bounded by a deadline and stragglers are terminated in a ``finally``.

The clients here use a generous socket timeout (``FLEET_TIMEOUT``): these tests check the
concurrency invariants (exact counts, probe exclusivity), not outage handling, and eight
busy processes on two cores can miss a 50 ms budget, which under ``on_redis_error="allow"``
would drop records silently. Workers count the library's log warnings so that a dropped
record shows up as a diagnosis rather than as a puzzling count.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from distbreaker import Breaker, BreakerConfig, CircuitOpenError, State, connect

pytestmark = pytest.mark.fleet

WORKERS = 8
FLEET_TIMEOUT = 2.0  # socket timeout of every client in this module (see the module docstring)
START_TIMEOUT = 30.0  # spawning 8 interpreters on 2 cores can take a few seconds
SERVICE = "fleet-svc"

_CTX = multiprocessing.get_context("spawn")


class ProbeFailed(Exception):
    """The protected function's own failure."""


# -- helpers shared by parent and workers -------------------------------------------------------
def _config(**kw: Any) -> BreakerConfig:
    return BreakerConfig(redis_timeout=FLEET_TIMEOUT, **kw)


class _WarningCounter(logging.Handler):
    """Counts the distbreaker log records at WARNING or above (Redis errors, mostly)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _worker_main(out: Any, wid: int, body: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    """Run ``body(*args)`` in a worker and put ``(wid, "ok"|"error", payload)`` on ``out``."""
    counter = _WarningCounter()
    logging.getLogger("distbreaker").addHandler(counter)
    try:
        result = body(*args)
        result["warnings"] = counter.count
        out.put((wid, "ok", result))
    except BaseException:
        out.put((wid, "error", traceback.format_exc()))


def _make_breaker(url: str, prefix: str, cfg: dict[str, Any]) -> tuple[Any, Breaker]:
    client = connect(url, timeout=FLEET_TIMEOUT)
    return client, Breaker(SERVICE, client, _config(**cfg), prefix=prefix)


def _run_fleet(
    body: Callable[..., dict[str, Any]],
    args_per_worker: Sequence[tuple[Any, ...]],
    timeout: float,
) -> list[dict[str, Any]]:
    """Start one spawned process per args tuple, collect their results within ``timeout``."""
    out = _CTX.Queue()
    procs = [
        _CTX.Process(target=_worker_main, args=(out, wid, body, args), daemon=True, name=f"fleet-{wid}")
        for wid, args in enumerate(args_per_worker)
    ]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        results: dict[int, dict[str, Any]] = {}
        errors: list[str] = []
        while len(results) + len(errors) < len(procs):
            try:
                wid, status, payload = out.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(
                    f"only {len(results) + len(errors)} of {len(procs)} workers reported "
                    f"within {timeout:.0f} s; errors so far: {errors}"
                )
            if status == "ok":
                results[wid] = payload
            else:
                errors.append(f"worker {wid}:\n{payload}")
        assert not errors, "\n".join(errors)
        for p in procs:
            p.join(timeout=max(0.01, deadline - time.monotonic()))
            assert not p.is_alive(), f"{p.name} did not exit within {timeout:.0f} s"
            assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"
        return [results[i] for i in range(len(procs))]
    finally:
        _reap(procs)
        out.close()
        out.join_thread()


def _reap(procs: Sequence[Any]) -> None:
    """Terminate, then kill, any process still alive; always join."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


# -- worker bodies (module level: spawn pickles them by reference) -----------------------------
def _body_successes(url: str, prefix: str, cfg: dict[str, Any], barrier: Any, n: int) -> dict[str, Any]:
    client, breaker = _make_breaker(url, prefix, cfg)
    try:
        barrier.wait(timeout=START_TIMEOUT)
        done = sum(breaker.call(int, 1) for _ in range(n))
        return {"done": done}
    finally:
        breaker.close()  # stop its listener before its client goes
        client.close()


def _body_failures(
    url: str, prefix: str, cfg: dict[str, Any], barrier: Any, executed: Any, attempts: int
) -> dict[str, Any]:
    client, breaker = _make_breaker(url, prefix, cfg)
    mine = 0

    def fail() -> None:
        nonlocal mine
        mine += 1
        with executed.get_lock():
            executed.value += 1
        raise ProbeFailed("down")

    try:
        barrier.wait(timeout=START_TIMEOUT)
        for i in range(attempts):
            try:
                breaker.call(fail)
            except ProbeFailed:
                continue
            except CircuitOpenError as exc:
                return {"executed": mine, "rejected": True, "attempts": i + 1, "state": exc.state}
        return {"executed": mine, "rejected": False, "attempts": attempts, "state": None}
    finally:
        breaker.close()  # stop its listener before its client goes
        client.close()


def _body_probes(
    url: str, prefix: str, cfg: dict[str, Any], barrier: Any, duration: float, work: float
) -> dict[str, Any]:
    client, breaker = _make_breaker(url, prefix, cfg)
    intervals: list[tuple[float, float]] = []

    def probe() -> None:
        start = time.monotonic()
        time.sleep(work)  # the workload of the protected call, not synchronisation
        intervals.append((start, time.monotonic()))
        raise ProbeFailed("still down")

    rejected = 0
    try:
        barrier.wait(timeout=START_TIMEOUT)
        end = time.monotonic() + duration
        while time.monotonic() < end:
            try:
                breaker.call(probe)
            except CircuitOpenError:
                rejected += 1
            except ProbeFailed:
                pass
            time.sleep(0.002)  # load pacing: 8 spinning processes would starve Redis on 2 cores
        return {"intervals": intervals, "rejected": rejected}
    finally:
        breaker.close()  # stop its listener before its client goes
        client.close()


def _body_hold_probe(url: str, prefix: str, cfg: dict[str, Any], out: Any, patience: float) -> None:
    """Enter the breaker as the half-open probe, report it, then block until killed."""
    client, breaker = _make_breaker(url, prefix, cfg)
    give_up = time.monotonic() + patience
    while True:
        t0 = time.monotonic()
        try:
            with breaker:
                out.put(("held", t0))
                threading.Event().wait(patience)  # block "forever": the parent SIGKILLs us
                out.put(("not killed", time.monotonic()))
                return
        except CircuitOpenError:
            if time.monotonic() > give_up:
                out.put(("never admitted", time.monotonic()))
                return
            time.sleep(0.005)  # poll interval while waiting for the open state to elapse


# -- tests -------------------------------------------------------------------------------------
def test_counts_are_exact_across_processes(redis_url: str, prefix: str) -> None:
    """Eight processes making 500 successful calls each are counted exactly 4000 times."""
    n = 500
    cfg = {"window": 600.0, "buckets": 10, "minimum_calls": 1_000_000}
    barrier = _CTX.Barrier(WORKERS)
    results = _run_fleet(_body_successes, [(redis_url, prefix, cfg, barrier, n)] * WORKERS, timeout=START_TIMEOUT + 60)
    assert [r["done"] for r in results] == [n] * WORKERS
    assert sum(r["warnings"] for r in results) == 0, results

    client, breaker = _make_breaker(redis_url, prefix, cfg)
    try:
        snap = breaker.snapshot()
    finally:
        breaker.close()  # stop its listener before its client goes
        client.close()
    assert snap.state is State.CLOSED
    assert snap.calls == WORKERS * n
    assert snap.failures == 0


def test_trip_overshoot_is_bounded(redis_url: str, prefix: str) -> None:
    """Eight processes failing together run at most minimum_calls + 8 calls before all reject."""
    minimum_calls = 10
    cfg = {
        "minimum_calls": minimum_calls,
        "failure_rate_threshold": 0.5,
        "window": 600.0,
        "open_duration": 60.0,
        "max_open_duration": 60.0,
    }
    barrier = _CTX.Barrier(WORKERS)
    executed = _CTX.Value("i", 0)
    results = _run_fleet(
        _body_failures, [(redis_url, prefix, cfg, barrier, executed, 200)] * WORKERS, timeout=START_TIMEOUT + 30
    )
    total = sum(r["executed"] for r in results)
    print(
        f"\ntrip overshoot: {total} calls executed (minimum_calls={minimum_calls}, "
        f"workers={WORKERS}); per worker {[r['executed'] for r in results]}"
    )
    assert total == executed.value
    assert total <= minimum_calls + WORKERS
    assert all(r["rejected"] for r in results), results
    assert {r["state"] for r in results} == {"open"}
    assert sum(r["warnings"] for r in results) == 0, results

    client, breaker = _make_breaker(redis_url, prefix, cfg)
    try:
        assert breaker.snapshot().state is State.OPEN
    finally:
        breaker.close()  # stop its listener before its client goes
        client.close()


def test_half_open_admits_one_probe_fleet_wide(redis_url: str, prefix: str) -> None:
    """With half_open_max_calls=1, probes from eight processes never overlap in time."""
    open_duration, work, duration = 0.3, 0.02, 2.0
    cfg = {
        "minimum_calls": 2,
        "failure_rate_threshold": 0.5,
        "open_duration": open_duration,
        "backoff_multiplier": 1.0,
        "max_open_duration": open_duration,
        "half_open_max_calls": 1,
        "probe_timeout": 5.0,
    }
    client, breaker = _make_breaker(redis_url, prefix, cfg)
    try:
        for _ in range(2):
            with pytest.raises(ProbeFailed):
                breaker.call(_raise_probe_failed)
        assert breaker.snapshot().state is State.OPEN
    finally:
        breaker.close()  # stop its listener before its client goes
        client.close()

    barrier = _CTX.Barrier(WORKERS)
    results = _run_fleet(
        _body_probes,
        [(redis_url, prefix, cfg, barrier, duration, work)] * WORKERS,
        timeout=START_TIMEOUT + duration + 30,
    )
    intervals = sorted(iv for r in results for iv in r["intervals"])
    gaps = [b[0] - a[1] for a, b in zip(intervals, intervals[1:])]
    print(
        f"\nprobes: {len(intervals)} in {duration:.1f} s from "
        f"{sum(1 for r in results if r['intervals'])} workers; "
        f"smallest gap between probes {min(gaps, default=float('nan')):.3f} s; "
        f"rejections {sum(r['rejected'] for r in results)}"
    )
    assert len(intervals) > 1
    for (s1, e1), (s2, e2) in zip(intervals, intervals[1:]):
        assert s2 >= e1, f"probes overlapped: [{s1:.4f}, {e1:.4f}] and [{s2:.4f}, {e2:.4f}]"
    # Each failed probe reopens the breaker for open_duration before the next can start.
    assert min(gaps) >= open_duration - 0.05, gaps
    assert sum(r["warnings"] for r in results) == 0, results


def _raise_probe_failed() -> None:
    raise ProbeFailed("down")


def test_lease_of_killed_worker_frees_after_probe_timeout(redis_url: str, prefix: str) -> None:
    """A probe lease held by a SIGKILLed worker blocks others only until probe_timeout."""
    probe_timeout = 1.0
    cfg = {
        "minimum_calls": 2,
        "failure_rate_threshold": 0.5,
        "open_duration": 0.2,
        "max_open_duration": 0.2,
        "half_open_max_calls": 1,
        "probe_timeout": probe_timeout,
    }
    client, breaker = _make_breaker(redis_url, prefix, cfg)
    out = _CTX.Queue()
    proc = _CTX.Process(
        target=_body_hold_probe, args=(redis_url, prefix, cfg, out, 30.0), daemon=True, name="fleet-holder"
    )
    try:
        for _ in range(2):
            with pytest.raises(ProbeFailed):
                breaker.call(_raise_probe_failed)
        assert breaker.snapshot().state is State.OPEN

        proc.start()
        try:
            what, t0 = out.get(timeout=START_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the worker did not acquire the probe within {START_TIMEOUT:.0f} s")
        assert what == "held", what
        proc.kill()
        proc.join(timeout=10)
        assert not proc.is_alive()
        killed_at = time.monotonic()

        states: list[str] = []
        admitted_at = None
        deadline = killed_at + probe_timeout + 5.0
        while time.monotonic() < deadline:
            try:
                breaker.call(int)
            except CircuitOpenError as exc:
                states.append(exc.state)
                time.sleep(0.005)  # poll interval
                continue
            admitted_at = time.monotonic()
            break
        assert admitted_at is not None, f"never admitted within {deadline - killed_at:.1f} s"
        print(
            f"\nkilled probe: admitted {admitted_at - t0:.3f} s after the lease was taken "
            f"(probe_timeout={probe_timeout}); {len(states)} rejections before"
        )
        assert states, "the lease of the killed worker was not honoured at all"
        assert set(states) == {"half_open"}
        assert admitted_at - t0 >= probe_timeout - 0.05
        assert breaker.snapshot().state is State.CLOSED  # the successful probe closed it
    finally:
        _reap([proc])
        out.close()
        out.join_thread()
        breaker.close()  # stop its listener before its client goes
        client.close()


def _body_k_probes(
    url: str, prefix: str, cfg: dict[str, Any], barrier: Any, duration: float, work: float, threads: int
) -> dict[str, Any]:
    """`threads` callers in this process call the half-open breaker for `duration` seconds."""
    client, breaker = _make_breaker(url, prefix, cfg)
    intervals: list[tuple[float, float]] = []
    rejected = [0]
    lock = threading.Lock()

    def probe() -> None:
        start = time.monotonic()
        time.sleep(work)  # the workload of the protected call, not synchronisation
        with lock:
            intervals.append((start, time.monotonic()))

    def caller(end: float) -> None:
        while time.monotonic() < end:
            try:
                breaker.call(probe)
            except CircuitOpenError:
                with lock:
                    rejected[0] += 1
            time.sleep(0.002)  # load pacing for 32 callers on 2 cores

    try:
        barrier.wait(timeout=START_TIMEOUT)
        end = time.monotonic() + duration
        callers = [threading.Thread(target=caller, args=(end,)) for _ in range(threads)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(timeout=duration + 30)
        return {"intervals": intervals, "rejected": rejected[0]}
    finally:
        breaker.close()  # stop its listener before its client goes
        client.close()


def test_exactly_k_probes_across_32_callers_in_8_processes(redis_url: str, prefix: str) -> None:
    """half_open_max_calls=3: 32 concurrent callers in 8 processes never run more than 3 probes
    at once, and do run 3 at once."""
    k, work, duration = 3, 0.05, 2.0
    cfg = {
        "minimum_calls": 1,
        "open_duration": 0.05,
        "half_open_max_calls": k,
        "half_open_successes": 1_000,
        "probe_timeout": 10.0,
    }
    client, breaker = _make_breaker(redis_url, prefix, cfg)
    try:
        with pytest.raises(ProbeFailed):
            breaker.call(_raise_probe_failed)  # open; it half-opens 50 ms later, and stays so
        assert breaker.snapshot().state is State.OPEN
    finally:
        breaker.close()
        client.close()

    barrier = _CTX.Barrier(WORKERS)
    results = _run_fleet(
        _body_k_probes,
        [(redis_url, prefix, cfg, barrier, duration, work, 4)] * WORKERS,
        timeout=START_TIMEOUT + duration + 40,
    )
    events = sorted(
        [(s, 1) for r in results for s, _ in r["intervals"]] + [(e, -1) for r in results for _, e in r["intervals"]],
        key=lambda x: (x[0], x[1]),
    )
    running = most = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        most = max(most, running)
    probes = sum(len(r["intervals"]) for r in results)
    print(
        f"\nK={k}: {probes} probes by 32 callers in {duration:.0f} s, at most {most} at once, "
        f"{sum(r['rejected'] for r in results)} rejections"
    )
    assert most == k
    assert probes > 2 * k
    assert sum(r["warnings"] for r in results) == 0, results


# -- pre-fork workers (gunicorn --preload) -------------------------------------------------------
_FORK = multiprocessing.get_context("fork")


def _forked_calls(breaker: Breaker, go: Any, n: int) -> None:
    if not go.wait(START_TIMEOUT):
        raise RuntimeError("never told to go")
    for _ in range(n):
        breaker.call(lambda: None)


def test_prefork_batched_workers_count_exactly(redis_url: str, prefix: str) -> None:
    """One batched breaker built in the parent (and used: 25 unflushed outcomes), then 4 workers
    forked from it, 500 calls each: every worker's outcomes are flushed by its own flusher or at
    its end, and the parent's are counted once: exactly 2025."""
    client = connect(redis_url, timeout=FLEET_TIMEOUT)
    breaker = Breaker(
        SERVICE, client, _config(minimum_calls=10**6), prefix=prefix, mode="batched", flush_interval=0.05, listen=False
    )
    for _ in range(25):
        breaker.call(lambda: None)
    go = _FORK.Event()
    procs = [_FORK.Process(target=_forked_calls, args=(breaker, go, 500), daemon=True) for _ in range(4)]
    try:
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(START_TIMEOUT)
            assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"
    finally:
        _reap(procs)
    breaker.close()
    assert breaker.snapshot().calls == 4 * 500 + 25


# -- a forger on the channel ---------------------------------------------------------------------
def _body_call_under_forgery(
    url: str, prefix: str, cfg: dict[str, Any], ready: Any, go: Any, run_for: float
) -> dict[str, Any]:
    client, breaker = _make_breaker(url, prefix, cfg)
    try:
        breaker.call(lambda: None)
        assert breaker._listener is not None and breaker._listener.ready.wait(START_TIMEOUT)
        ready.put(True)
        if not go.wait(START_TIMEOUT):
            raise RuntimeError("never told to go")
        admitted = rejected = 0
        end = time.monotonic() + run_for
        while time.monotonic() < end:
            try:
                breaker.call(lambda: None)
                admitted += 1
            except CircuitOpenError:
                rejected += 1
            time.sleep(0.005)
        return {"admitted": admitted, "rejected": rejected}
    finally:
        breaker.close()
        client.close()


def test_a_forger_on_the_channel_makes_no_worker_reject(redis_url: str, prefix: str) -> None:
    """4 listening workers call for 1.5 s while a forger publishes a forced_open for their
    breaker every 50 ms (the message that made workers reject every call): none is rejected,
    and Redis counted every call."""
    import json

    import redis

    ready, go = _CTX.Queue(), _CTX.Event()
    cfg = {"minimum_calls": 10**6, "max_staleness": 60}
    result: list[list[dict[str, Any]]] = []
    fleet = threading.Thread(
        target=lambda: result.append(
            _run_fleet(_body_call_under_forgery, [(redis_url, prefix, cfg, ready, go, 1.5)] * 4, START_TIMEOUT * 2)
        )
    )
    fleet.start()
    forger = redis.Redis.from_url(redis_url)
    forged = json.dumps({"service": SERVICE, "to": "forced_open", "generation": 1000000, "forced_until": 0})
    try:
        for _ in range(4):
            ready.get(timeout=START_TIMEOUT * 2)
        go.set()
        end = time.monotonic() + 2.0
        while time.monotonic() < end and fleet.is_alive():
            forger.publish(f"{prefix}:events", forged)
            time.sleep(0.05)
    finally:
        fleet.join(START_TIMEOUT * 2)
        forger.close()
    assert result, "the fleet did not report"
    reports = result[0]
    assert sum(r["rejected"] for r in reports) == 0, reports
    admitted = sum(r["admitted"] for r in reports)
    assert admitted > 0
    client, breaker = _make_breaker(redis_url, prefix, {})
    assert breaker.snapshot().calls == admitted + 4  # each worker's first call too
    breaker.close()
    client.close()
