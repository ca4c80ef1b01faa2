"""Issue 16 items 2 and 3 with real worker processes sharing one breaker through one Redis.

* Quorum (`minimum_failing_workers`): one bad pod failing every call does not trip the fleet
  when N = 2; two bad pods do, and the cause names how many clients were failing.
* Half-open verdict by rate (`half_open_failure_rate_threshold`): with a threshold of 0.5 and
  10 probes, one flaky probe does not reopen the breaker; with the default rule it does.

Each runs in sync mode, asyncio and `mode="batched"` (the flush carries the client id already:
``'<client>:<seq>'``; half-open probes stay synchronous there). Workers are spawned processes;
every wait is bounded by a deadline, stragglers are terminated in a ``finally`` (the helpers of
tests/fleet/test_fleet.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from test_fleet import _CTX, FLEET_TIMEOUT, START_TIMEOUT, ProbeFailed, _config, _run_fleet

import distbreaker.asyncio as dba
from distbreaker import Admin, Breaker, CircuitOpenError, State, connect

pytestmark = pytest.mark.fleet

SERVICE = "verdict-svc"
MODES = ("sync", "asyncio", "batched")
CALL_LIMIT = 40.0  # seconds a worker may spend on its calls (a bound, never a wait)


def _failing_calls(
    url: str, prefix: str, cfg: dict[str, Any], mode: str, barrier: Any, n: int, fail: bool
) -> dict[str, Any]:
    """Make up to `n` calls that all fail (`fail`) or all succeed; stop at the first rejection."""

    def body() -> None:
        if fail:
            raise ProbeFailed("bad pod")

    if mode == "asyncio":
        return asyncio.run(_failing_calls_async(url, prefix, cfg, barrier, n, body))
    client = connect(url, timeout=FLEET_TIMEOUT)
    kw: dict[str, Any] = {"mode": "batched", "flush_interval": 0.05} if mode == "batched" else {}
    breaker = Breaker(SERVICE, client, _config(**cfg), prefix=prefix, **kw)
    executed = 0
    try:
        barrier.wait(timeout=START_TIMEOUT)
        deadline = time.monotonic() + CALL_LIMIT
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            try:
                executed += 1
                breaker.call(body)
            except ProbeFailed:
                pass
            except CircuitOpenError:
                executed -= 1
                return {"executed": executed, "rejected": True}
        return {"executed": executed, "rejected": False}
    finally:
        breaker.close()  # flushes a batched breaker's last outcomes, stops its listener
        client.close()


async def _failing_calls_async(
    url: str, prefix: str, cfg: dict[str, Any], barrier: Any, n: int, body: Any
) -> dict[str, Any]:
    client = dba.connect(url, timeout=FLEET_TIMEOUT)
    breaker = dba.Breaker(SERVICE, client, _config(**cfg), prefix=prefix)
    executed = 0

    async def call() -> None:
        body()

    try:
        await asyncio.to_thread(barrier.wait, START_TIMEOUT)
        deadline = time.monotonic() + CALL_LIMIT
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            try:
                executed += 1
                await breaker.call(call)
            except ProbeFailed:
                pass
            except CircuitOpenError:
                executed -= 1
                return {"executed": executed, "rejected": True}
        return {"executed": executed, "rejected": False}
    finally:
        await breaker.close()
        await client.aclose()


QUORUM = {"minimum_calls": 10, "failure_rate_threshold": 0.5, "minimum_failing_workers": 2}


@pytest.mark.parametrize("mode", MODES)
def test_one_bad_pod_does_not_trip_the_fleet(redis_url: str, prefix: str, mode: str) -> None:
    """With minimum_failing_workers=2, one process failing every call (60 failures, well past
    minimum_calls and the failure rate) leaves the breaker closed for it and two healthy ones;
    status shows 1 failing client."""
    barrier = _CTX.Barrier(3)
    args = [(redis_url, prefix, QUORUM, mode, barrier, 60, True)]
    args += [(redis_url, prefix, QUORUM, mode, barrier, 20, False) for _ in range(2)]
    results = _run_fleet(_failing_calls, args, timeout=START_TIMEOUT + CALL_LIMIT + 30)
    assert [r["rejected"] for r in results] == [False, False, False], results
    assert [r["executed"] for r in results] == [60, 20, 20]
    client = connect(redis_url, timeout=FLEET_TIMEOUT)
    try:
        snap = Admin(client, prefix=prefix).status(SERVICE)
    finally:
        client.close()
    assert snap.state is State.CLOSED
    assert (snap.calls, snap.failures) == (100, 60), "every outcome counted"
    assert snap.failing_clients == 1


@pytest.mark.parametrize("mode", MODES)
def test_two_bad_pods_trip_the_fleet(redis_url: str, prefix: str, mode: str) -> None:
    """With minimum_failing_workers=2, two processes failing every call open the breaker (each
    stops at its first rejection), and the cause says 2 clients were failing."""
    barrier = _CTX.Barrier(2)
    args = [(redis_url, prefix, QUORUM, mode, barrier, 400, True) for _ in range(2)]
    results = _run_fleet(_failing_calls, args, timeout=START_TIMEOUT + CALL_LIMIT + 30)
    assert all(r["executed"] >= 1 for r in results), results
    assert any(r["rejected"] for r in results), results
    client = connect(redis_url, timeout=FLEET_TIMEOUT)
    try:
        admin = Admin(client, prefix=prefix)
        snap = admin.status(SERVICE)
        opened = [t for t in admin.history(SERVICE, n=50) if t.to_state is State.OPEN]
    finally:
        client.close()
    assert snap.state is State.OPEN
    assert len(opened) == 1 and opened[0].cause.endswith("from 2 failing clients"), opened


# -- half-open verdict by rate ---------------------------------------------------------------------
def _probing_calls(
    url: str, prefix: str, cfg: dict[str, Any], mode: str, barrier: Any, executed: Any, wanted: int
) -> dict[str, Any]:
    """Call until `wanted` calls succeeded (or the time bound); the fleet's first executed call
    fails (the flaky probe), every other succeeds."""

    def body() -> None:
        with executed.get_lock():
            executed.value += 1
            first = executed.value == 1
        if first:
            raise ProbeFailed("flaky")

    if mode == "asyncio":
        return asyncio.run(_probing_calls_async(url, prefix, cfg, barrier, wanted, body))
    client = connect(url, timeout=FLEET_TIMEOUT)
    kw: dict[str, Any] = {"mode": "batched", "flush_interval": 0.05} if mode == "batched" else {}
    breaker = Breaker(SERVICE, client, _config(**cfg), prefix=prefix, **kw)
    ok = failed = rejected = 0
    try:
        barrier.wait(timeout=START_TIMEOUT)
        deadline = time.monotonic() + CALL_LIMIT
        while ok < wanted and time.monotonic() < deadline:
            try:
                breaker.call(body)
                ok += 1
            except ProbeFailed:
                failed += 1
            except CircuitOpenError:
                rejected += 1
                time.sleep(0.005)  # load pacing while the others probe: 2 cores
        return {"ok": ok, "failed": failed, "rejected": rejected}
    finally:
        breaker.close()
        client.close()


async def _probing_calls_async(
    url: str, prefix: str, cfg: dict[str, Any], barrier: Any, wanted: int, body: Any
) -> dict[str, Any]:
    client = dba.connect(url, timeout=FLEET_TIMEOUT)
    breaker = dba.Breaker(SERVICE, client, _config(**cfg), prefix=prefix)
    ok = failed = rejected = 0

    async def call() -> None:
        body()

    try:
        await asyncio.to_thread(barrier.wait, START_TIMEOUT)
        deadline = time.monotonic() + CALL_LIMIT
        while ok < wanted and time.monotonic() < deadline:
            try:
                await breaker.call(call)
                ok += 1
            except ProbeFailed:
                failed += 1
            except CircuitOpenError:
                rejected += 1
                await asyncio.sleep(0.005)  # load pacing while the others probe: 2 cores
        return {"ok": ok, "failed": failed, "rejected": rejected}
    finally:
        await breaker.close()
        await client.aclose()


PROBES = {"minimum_calls": 1, "open_duration": 0.3, "half_open_max_calls": 10, "probe_timeout": 30.0}


def _open(url: str, prefix: str, cfg: dict[str, Any]) -> None:
    """Open the breaker with one failure (minimum_calls=1), as a worker would."""
    client = connect(url, timeout=FLEET_TIMEOUT)
    breaker = Breaker(SERVICE, client, _config(**cfg), prefix=prefix, listen=False)
    try:
        with pytest.raises(ProbeFailed):
            breaker.call(_raise)
        assert breaker.snapshot().state is State.OPEN
    finally:
        breaker.close()
        client.close()


def _raise() -> None:
    raise ProbeFailed("down")


def _after_open(url: str, prefix: str) -> list[tuple[str, str, str]]:
    """(from, to, cause) of the transitions after the first open, oldest first."""
    client = connect(url, timeout=FLEET_TIMEOUT)
    try:
        history = Admin(client, prefix=prefix).history(SERVICE, n=50)[::-1]
    finally:
        client.close()
    moves = [(t.from_state.value, t.to_state.value, t.cause) for t in history if t.from_state is not t.to_state]
    assert moves[0][:2] == ("closed", "open"), moves
    return moves[1:]


@pytest.mark.parametrize("mode", MODES)
def test_one_flaky_probe_of_ten_does_not_reopen(redis_url: str, prefix: str, mode: str) -> None:
    """half_open_failure_rate_threshold=0.5, half_open_max_calls=10: four processes probe; the
    first probe fails, the others succeed; the breaker closes once 6 of the 10 probes succeeded
    (the rate can no longer reach 0.5) and never reopens."""
    cfg = {**PROBES, "half_open_failure_rate_threshold": 0.5}
    _open(redis_url, prefix, cfg)
    executed = _CTX.Value("i", 0)
    barrier = _CTX.Barrier(4)
    args = [(redis_url, prefix, cfg, mode, barrier, executed, 5) for _ in range(4)]
    results = _run_fleet(_probing_calls, args, timeout=START_TIMEOUT + CALL_LIMIT + 30)
    assert sum(r["failed"] for r in results) == 1, results
    assert all(r["ok"] == 5 for r in results), results
    moves = _after_open(redis_url, prefix)
    assert [m[:2] for m in moves] == [("open", "half_open"), ("half_open", "closed")], moves
    assert moves[1][2] == "6 of 10 probes succeeded, failure rate < 0.50"


def test_one_flaky_probe_reopens_with_the_default_rule(redis_url: str, prefix: str) -> None:
    """The same fleet without half_open_failure_rate_threshold (the default): the flaky first
    probe reopens the breaker (0.1's rule, unchanged)."""
    cfg = {**PROBES, "half_open_max_calls": 1}  # one probe at a time: the flaky one reports first
    _open(redis_url, prefix, cfg)
    executed = _CTX.Value("i", 0)
    barrier = _CTX.Barrier(4)
    args = [(redis_url, prefix, cfg, "sync", barrier, executed, 5) for _ in range(4)]
    results = _run_fleet(_probing_calls, args, timeout=START_TIMEOUT + CALL_LIMIT + 30)
    assert sum(r["failed"] for r in results) == 1, results
    moves = _after_open(redis_url, prefix)
    assert moves[:3] == [
        ("open", "half_open", "open_duration elapsed"),
        ("half_open", "open", "probe failed"),
        ("open", "half_open", "open_duration elapsed"),
    ], moves
