"""The background runner shared by the listener, the flusher and the periodic checks (no Redis)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable

import pytest

from distbreaker._runner import BACKOFF_MAX, BACKOFF_MIN, TaskRunner, ThreadRunner, cancel_requested, next_backoff


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_backoff_doubles_from_min_to_max() -> None:
    """0.1 s after the first failure, doubled by each one in a row, at most 2 s."""
    seen, b = [], 0.0
    for _ in range(7):
        b = next_backoff(b)
        seen.append(b)
    assert seen[0] == BACKOFF_MIN and seen[1] == 2 * BACKOFF_MIN and seen[-1] == BACKOFF_MAX


def test_a_failing_step_is_logged_and_run_again(caplog: pytest.LogCaptureFixture) -> None:
    """An exception escaping a step does not end the thread: it is logged and the step runs again."""
    calls: list[int] = []

    def step() -> float | None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("boom")
        return None if len(calls) >= 4 else 0.0

    runner = ThreadRunner("test-runner", step)
    runner.start()
    wait_for("the runner to end", lambda: len(calls) >= 4 and not runner.running)
    assert any("background step failed" in r.getMessage() for r in caplog.records)


def test_start_after_the_end_runs_again_and_stop_ends_it() -> None:
    """A runner whose step said 'no more work' starts again on start(); stop() ends a waiting one."""
    work = threading.Event()
    rounds: list[float] = []

    def step() -> float | None:
        rounds.append(time.monotonic())
        return 10.0 if work.is_set() else None

    runner = ThreadRunner("test-runner", step)
    runner.start()
    wait_for("the first end", lambda: not runner.running and len(rounds) == 1)
    work.set()
    runner.start()
    wait_for("the second round", lambda: len(rounds) == 2)
    assert runner.running  # waiting 10 s for its next round
    runner.stop(5)
    assert not runner.running


async def test_task_runner_runs_until_none_and_restarts() -> None:
    """The asyncio runner: steps until None, a failing step is retried, start() runs it again."""
    calls: list[int] = []

    async def step() -> float | None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return 0.0 if len(calls) < 3 else None

    runner = TaskRunner("test-task", step)
    runner.start()
    for _ in range(500):
        if len(calls) >= 3 and not runner.running:
            break
        await asyncio.sleep(0.01)
    assert len(calls) == 3 and not runner.running
    runner.start()
    for _ in range(500):
        if len(calls) >= 4:
            break
        await asyncio.sleep(0.01)
    assert len(calls) == 4
    await runner.stop()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is Python 3.11+")
async def test_task_runner_ends_when_a_step_swallowed_its_cancellation() -> None:
    """A cancellation that a step swallows (as Python 3.11's wait_for, or an asyncio.timeout
    entered with a cancellation pending, can) still ends the task: the loop teardown that
    cancels it once must not wait forever (seen twice in the suite, after asyncio tests that left
    a listening breaker open)."""
    entered = asyncio.Event()
    steps = []

    async def step() -> float | None:
        steps.append(1)
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            pass  # swallowed below the runner
        return 0.01

    runner = TaskRunner("test-swallow", step)
    runner.start()
    await asyncio.wait_for(entered.wait(), 5)
    task = runner._task
    assert task is not None
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled(), f"the task is still running after {len(steps)} steps"
    assert len(steps) == 1


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is Python 3.11+")
async def test_cancel_requested_sees_a_swallowed_cancellation() -> None:
    """cancel_requested(): what the listener's runner and the dashboard's sampler check each round."""
    seen: list[bool] = []

    async def swallow() -> None:
        me = asyncio.current_task()
        seen.append(cancel_requested(me))
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(cancel_requested(me))

    task = asyncio.create_task(swallow())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait_for(task, 5)
    assert seen == [False, True] and not cancel_requested(None)
