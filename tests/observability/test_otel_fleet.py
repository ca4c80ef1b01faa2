"""Four worker processes share one flapping breaker, each with its own in-memory SDK.

Summed over the fleet, ``distbreaker.transitions`` equals the transitions in the breaker's
events stream (each counted by the one process whose script made it, never by those that
learnt it from pub/sub), every process's ``on_transition`` hook saw every transition exactly
once, and each process's ``distbreaker.calls`` equals the calls it made, per outcome.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from collections import Counter
from typing import Any

import pytest
import redis

from distbreaker import BreakerConfig

pytestmark = pytest.mark.fleet

WORKERS = 4
RUN_FOR = 1.5  # seconds of calls per worker
PHASE = 0.25  # the service fails in every other PHASE seconds
START_TIMEOUT = 60.0  # spawning interpreters on 2 cores
SERVICE = "otel-fleet"

_CTX = multiprocessing.get_context("spawn")


class Boom(Exception):
    pass


def _config() -> BreakerConfig:
    # A window of one PHASE: each failing phase trips it whatever the balance of calls in the
    # phases before (with the default 60 s window, a loaded machine could make too few calls in
    # the failing phases to reach the rate, and the breaker never opened: seen in CI).
    return BreakerConfig(
        window=PHASE,
        buckets=5,
        minimum_calls=4,
        failure_rate_threshold=0.5,
        open_duration=0.1,
        backoff_multiplier=1.0,
        half_open_max_calls=1,
        redis_timeout=2.0,
        max_staleness=0.5,
    )


def _worker(url: str, prefix: str, out: Any, ready: Any, go: Any, last_gen: Any) -> None:
    """One process: its own SDK and breaker; calls for RUN_FOR s; reports what it counted."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from distbreaker import Breaker, CircuitOpenError, _otel, connect

        reader = InMemoryMetricReader()
        _otel.use_meter_provider(MeterProvider(metric_readers=[reader]))
        seen: list[int] = []
        b = Breaker(
            SERVICE,
            connect(url, timeout=2.0),
            _config(),
            prefix=prefix,
            on_transition=lambda t: seen.append(t.generation),
        )
        made: Counter[str] = Counter()

        def call(fail: bool) -> None:
            def fn() -> None:
                if fail:
                    raise Boom

            try:
                b.call(fn)
                made["success"] += 1
            except Boom:
                made["failure"] += 1
            except CircuitOpenError:
                made["rejected"] += 1

        call(False)  # starts the listener
        assert b._listener is not None and b._listener.ready.wait(10)
        ready.put(True)
        if not go.wait(START_TIMEOUT):
            raise RuntimeError("never told to go")
        end = time.monotonic() + RUN_FOR
        while time.monotonic() < end:
            call(int(time.time() / PHASE) % 2 == 1)
            time.sleep(0.003)
        out.put(("done", None))
        deadline = time.monotonic() + 20
        while last_gen.value == 0 or (not seen or max(seen) < last_gen.value):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        transitions: Counter[str] = Counter()
        calls: Counter[str] = Counter()
        data = reader.get_metrics_data()
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for p in m.data.data_points:
                        a = dict(p.attributes)
                        if m.name == _otel.TRANSITIONS:
                            transitions[f"{a['from']}>{a['to']}"] += int(p.value)
                        elif m.name == _otel.CALLS:
                            calls[str(a["outcome"])] += int(p.value)
        out.put(("report", {"seen": seen, "transitions": dict(transitions), "calls": dict(calls), "made": dict(made)}))
        b.close()
    except BaseException:
        out.put(("error", traceback.format_exc()))


def test_four_processes_count_each_transition_once(redis_url: str, prefix: str) -> None:
    """Transitions summed over 4 processes = the stream; each hook saw each transition once."""
    out, ready = _CTX.Queue(), _CTX.Queue()
    go, last_gen = _CTX.Event(), _CTX.Value("i", 0)
    procs = [
        _CTX.Process(target=_worker, args=(redis_url, prefix, out, ready, go, last_gen), daemon=True)
        for _ in range(WORKERS)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            try:
                ready.get(timeout=START_TIMEOUT)
            except queue.Empty:
                pytest.fail("a worker did not start")
        go.set()
        reports, done = [], 0
        deadline = time.monotonic() + START_TIMEOUT
        while len(reports) < WORKERS:
            kind, value = out.get(timeout=max(0.1, deadline - time.monotonic()))
            if kind == "error":
                pytest.fail(f"worker failed:\n{value}")
            if kind == "done":
                done += 1
                if done == WORKERS:  # every call made: the stream is final
                    client = redis.Redis.from_url(redis_url)
                    entries = client.xrange(f"{prefix}:{{{SERVICE}}}:events")
                    client.close()
                    last_gen.value = int(entries[-1][1][b"gen"]) if entries else -1
            else:
                reports.append(value)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
    stream = Counter(f"{e[1][b'from'].decode()}>{e[1][b'to'].decode()}" for e in entries)
    gens = [int(e[1][b"gen"]) for e in entries]
    assert len(stream) >= 3 and sum(stream.values()) >= 6, stream  # it did flap
    assert gens == list(range(1, len(gens) + 1))
    summed: Counter[str] = Counter()
    for r in reports:
        summed.update(r["transitions"])
        assert sorted(r["seen"]) == gens, f"a hook missed or repeated a transition: {sorted(r['seen'])} != {gens}"
        assert r["calls"] == r["made"], f"distbreaker.calls {r['calls']} != the calls made {r['made']}"
    assert summed == stream, f"transitions counted {dict(summed)} != the stream {dict(stream)}"
    assert sum(1 for r in reports if r["transitions"]) >= 2  # several processes made transitions
