"""Fleet behaviour with real worker processes: trip overshoot against the peers, and how fast a
trip reaches every worker.

(a) Overshoot: 8 processes (spawn, one start barrier) call a function that always fails through
    a breaker whose threshold is 10 failures; count the calls that ran before every worker
    rejects. distbreaker: minimum_calls=10, failure_rate_threshold=0.5 (all calls fail, so it
    opens at the 10th recorded failure); pybreaker: fail_max=10; purgatory: threshold=10;
    aiobreaker-redis: failure_threshold=10; aiobreaker: fail_max=10. Ideal: 10.
(b) Propagation: 8 workers each hold a breaker whose cache says closed; the parent trips it with
    `Admin.trip`; each worker reports the `time.monotonic()` at which it first sees
    forced_open (CLOCK_MONOTONIC is system-wide on Linux, so times compare across processes).

    python benchmarks/fleet.py [--url redis://127.0.0.1:PORT/0] [--trials 3] [--prop-trials 10] [--quick]

Without --url it starts a private server (loopback) from the binaries the tests use. Peers
come from the `bench` extra; a missing one prints "n/a". Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import queue
import statistics
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from _server import server  # benchmarks/_server.py

WORKERS = 8
THRESHOLD = 10
FLEET_TIMEOUT = 2.0  # socket timeout / redis_timeout for the overshoot runs: 8 busy processes
# on 2 cores can miss 50 ms, and a dropped record would hide overshoot
START_TIMEOUT = 60.0  # spawning 8 interpreters on a loaded 2-core machine
TASK_TIMEOUT = 60.0  # one overshoot or propagation task, per worker
MAX_ATTEMPTS = 200_000  # calls per worker per overshoot task, at most
POLL = 0.001  # propagation: the workers' poll / call interval

_CTX = multiprocessing.get_context("spawn")

LIBS = {
    "db_sync": ("distbreaker, sync", "minimum_calls=10, failure_rate_threshold=0.5"),
    "db_batched": ("distbreaker, batched (flush_interval=0.1 s)", "minimum_calls=10, failure_rate_threshold=0.5"),
    "pybreaker": ("pybreaker + CircuitRedisStorage", "fail_max=10"),
    "purgatory": ("purgatory + AsyncRedisUnitOfWork", "threshold=10"),
    "aiobreaker_redis": ("aiobreaker-redis 0.1.0 (redis.asyncio)", "failure_threshold=10"),
    "aiobreaker": ("aiobreaker + its CircuitRedisStorage", "fail_max=10"),
}


class Failing(Exception):
    """The protected function's own failure."""


# -- worker side ------------------------------------------------------------------------------


class Unavailable(Exception):
    """The library cannot be used here (not installed, or no batched mode yet)."""


def _sync_caller(
    lib: str, url: str, ns: str
) -> tuple[Callable[[Callable[[], Any]], Any], type | tuple, Callable[[], None]]:
    """(call(fn), rejection exception type(s), close) for a sync library."""
    if lib in ("db_sync", "db_batched"):
        from distbreaker import Breaker, BreakerConfig, CircuitOpenError, connect

        client = connect(url, timeout=FLEET_TIMEOUT)
        cfg = BreakerConfig(
            minimum_calls=THRESHOLD,
            failure_rate_threshold=0.5,
            window=600.0,
            open_duration=60.0,
            max_open_duration=60.0,
            redis_timeout=FLEET_TIMEOUT,
        )
        kw: dict[str, Any] = {"mode": "batched", "flush_interval": 0.1} if lib == "db_batched" else {}
        try:
            breaker = Breaker("svc", client, cfg, prefix=ns, **kw)
        except TypeError as exc:
            raise Unavailable(f"pending ({exc})") from exc

        def close() -> None:
            breaker.close()
            client.close()

        return breaker.call, CircuitOpenError, close
    if lib == "pybreaker":
        try:
            import pybreaker
            import redis
        except ImportError as exc:
            raise Unavailable(f"n/a ({exc})") from exc
        client = redis.Redis.from_url(url, socket_timeout=FLEET_TIMEOUT)
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=ns)
        pb = pybreaker.CircuitBreaker(fail_max=THRESHOLD, reset_timeout=60, state_storage=storage)
        return pb.call, pybreaker.CircuitBreakerError, client.close
    raise AssertionError(lib)


async def _async_caller(
    lib: str, url: str, ns: str
) -> tuple[Callable[[Callable[[], Any]], Any], type | tuple, Callable[[], Any]]:
    if lib == "purgatory":
        try:
            from purgatory import AsyncCircuitBreakerFactory, AsyncRedisUnitOfWork
            from purgatory.domain.model import OpenedState
        except ImportError as exc:
            raise Unavailable(f"n/a ({exc})") from exc
        uow = AsyncRedisUnitOfWork(url)
        factory = AsyncCircuitBreakerFactory(default_threshold=THRESHOLD, default_ttl=60, uow=uow)
        await factory.initialize()

        async def pg_call(fn: Callable[[], Any]) -> Any:
            return await factory(ns)(fn)()

        return pg_call, OpenedState, uow.contexts.redis.aclose  # type: ignore[attr-defined]
    if lib == "aiobreaker_redis":
        try:
            import redis.asyncio
            from aiobreaker_redis import CircuitBreaker, CircuitOpenError
        except ImportError as exc:
            raise Unavailable(f"n/a ({exc})") from exc
        client = redis.asyncio.from_url(url, socket_timeout=FLEET_TIMEOUT)
        ar = CircuitBreaker(
            "svc", failure_threshold=THRESHOLD, recovery_timeout=60, redis_client=client, redis_prefix=ns
        )
        return ar.call, CircuitOpenError, client.aclose
    if lib == "aiobreaker":
        try:
            from datetime import timedelta

            import aiobreaker
            import redis
            from aiobreaker.storage.redis import CircuitRedisStorage
        except ImportError as exc:
            raise Unavailable(f"n/a ({exc})") from exc
        sclient = redis.Redis.from_url(url, socket_timeout=FLEET_TIMEOUT)
        storage = CircuitRedisStorage(aiobreaker.CircuitBreakerState.CLOSED, sclient, namespace=ns)
        ab = aiobreaker.CircuitBreaker(
            fail_max=THRESHOLD, timeout_duration=timedelta(seconds=60), state_storage=storage
        )

        async def ab_close() -> None:
            sclient.close()

        return ab.call_async, aiobreaker.CircuitBreakerError, ab_close
    raise AssertionError(lib)


def _overshoot(barrier: Any, executed: Any, lib: str, url: str, ns: str) -> dict[str, Any]:
    """Call an always-failing function until the breaker rejects (it did not run it)."""
    mine = 0
    ran = False

    def count() -> None:
        nonlocal mine, ran
        ran = True
        mine += 1
        with executed.get_lock():
            executed.value += 1

    def fail() -> None:
        count()
        raise Failing("down")

    async def afail() -> None:
        count()
        raise Failing("down")

    def outcome(exc: BaseException, reject: Any, i: int) -> dict[str, Any] | None:
        """None to go on; a result when this call was rejected."""
        if isinstance(exc, Failing) or ran:
            return None  # the call ran (pybreaker raises its own error on the tripping call)
        if isinstance(exc, reject):
            return {"executed": mine, "rejected": True, "attempts": i + 1}
        raise exc

    if lib in ("db_sync", "db_batched", "pybreaker"):
        call, reject, close = _sync_caller(lib, url, ns)
        try:
            barrier.wait(timeout=START_TIMEOUT)
            deadline = time.monotonic() + TASK_TIMEOUT / 2
            for i in range(MAX_ATTEMPTS):
                ran = False
                try:
                    call(fail)
                except BaseException as exc:  # noqa: BLE001 - sorted by outcome()
                    res = outcome(exc, reject, i)
                    if res is not None:
                        return res
                if time.monotonic() > deadline:
                    break
            return {"executed": mine, "rejected": False, "attempts": i + 1}
        finally:
            close()

    async def main() -> dict[str, Any]:
        nonlocal ran
        call, reject, close = await _async_caller(lib, url, ns)
        try:
            barrier.wait(timeout=START_TIMEOUT)  # blocking: nothing else runs in this loop yet
            deadline = time.monotonic() + TASK_TIMEOUT / 2
            for i in range(MAX_ATTEMPTS):
                ran = False
                try:
                    await call(afail)
                except BaseException as exc:  # noqa: BLE001
                    res = outcome(exc, reject, i)
                    if res is not None:
                        return res
                if time.monotonic() > deadline:
                    break
            return {"executed": mine, "rejected": False, "attempts": i + 1}
        finally:
            await close()

    return asyncio.run(main())


def _watch(
    results: Any,
    wid: int,
    url: str,
    prefix: str,
    service: str,
    listen: bool,
    mode: str,
    max_staleness: float,
    calling: bool,
) -> dict[str, Any]:
    """Hold a breaker whose cache says closed; report when it first sees the trip."""
    from distbreaker import Breaker, BreakerConfig, CircuitOpenError, connect

    client = connect(url)  # the default budget: redis_timeout 0.05 s
    cfg = BreakerConfig(max_staleness=max_staleness)
    kw: dict[str, Any] = {"mode": "batched", "flush_interval": 0.1} if mode == "batched" else {}
    breaker = Breaker(service, client, cfg, prefix=prefix, listen=listen, **kw)
    try:
        breaker.call(int)
        if listen and breaker._listener is not None and not breaker._listener.ready.wait(10):
            raise RuntimeError("the pub/sub listener did not subscribe within 10 s")
        if not breaker.allows():
            raise RuntimeError("the cache rejects after one successful call")
        results.put((wid, "ready", time.monotonic()))
        deadline = time.monotonic() + 10.0
        calls = 0
        while time.monotonic() < deadline:
            if calling:
                try:
                    breaker.call(int)
                    calls += 1
                except CircuitOpenError:
                    return {"seen": time.monotonic(), "how": "rejected", "calls": calls}
            if not breaker.allows():  # the local cache alone rejects: it has seen the trip
                return {"seen": time.monotonic(), "how": "cache", "calls": calls}
            time.sleep(POLL)
        return {"seen": None, "how": "never", "calls": calls}
    finally:
        breaker.close()
        client.close()


def worker_main(wid: int, tasks: Any, results: Any, barrier: Any, executed: Any) -> None:
    """A persistent worker: run tasks until None (or no task for 10 minutes)."""
    while True:
        try:
            task = tasks.get(timeout=600)
        except queue.Empty:
            return
        if task is None:
            return
        kind, args = task
        try:
            if kind == "overshoot":
                res = _overshoot(barrier, executed, *args)
            elif kind == "watch":
                res = _watch(results, wid, *args)
            else:
                raise AssertionError(kind)
            results.put((wid, "ok", res))
        except Unavailable as exc:
            with contextlib.suppress(Exception):
                barrier.abort()
            results.put((wid, "unavailable", str(exc)))
        except BaseException:
            with contextlib.suppress(Exception):
                barrier.abort()
            results.put((wid, "error", traceback.format_exc()))


# -- parent side ------------------------------------------------------------------------------


class Fleet:
    """WORKERS spawned processes that take tasks from their own queue."""

    def __init__(self) -> None:
        self.results = _CTX.Queue()
        self.barrier = _CTX.Barrier(WORKERS)
        self.executed = _CTX.Value("i", 0)
        self.tasks = [_CTX.Queue() for _ in range(WORKERS)]
        self.procs = [
            _CTX.Process(
                target=worker_main,
                name=f"fleet-{i}",
                daemon=True,
                args=(i, self.tasks[i], self.results, self.barrier, self.executed),
            )
            for i in range(WORKERS)
        ]
        for p in self.procs:
            p.start()

    def send(self, kind: str, args: tuple[Any, ...]) -> None:
        for q in self.tasks:
            q.put((kind, args))

    def collect(self, want: str, timeout: float) -> dict[int, Any]:
        """One message per worker; raises on an error report or a missing worker."""
        got: dict[int, Any] = {}
        unavailable: list[str] = []
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        while len(got) + len(unavailable) + len(errors) < WORKERS:
            try:
                wid, status, payload = self.results.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"only {len(got)} of {WORKERS} workers reported {want!r} within {timeout:.0f} s; errors: {errors}"
                ) from None
            if status == want:
                got[wid] = payload
            elif status == "unavailable":
                unavailable.append(payload)
            elif status == "error":
                errors.append(f"worker {wid}:\n{payload}")
            else:  # "ok" of a task whose other workers failed early, etc.
                errors.append(f"worker {wid}: unexpected {status!r}")
        if errors or unavailable:
            self.barrier.reset()
            if unavailable:  # the others then see a broken barrier
                raise Unavailable(unavailable[0])
            raise RuntimeError("\n".join(errors))
        return got

    def close(self) -> None:
        for q in self.tasks:
            with contextlib.suppress(Exception):
                q.put(None)
        for p in self.procs:
            p.join(timeout=10)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        self.results.close()
        for q in self.tasks:
            q.close()


def overshoot(fleet: Fleet, url: str, lib: str) -> dict[str, Any]:
    ns = f"fleet-{uuid.uuid4().hex[:10]}"
    with fleet.executed.get_lock():
        fleet.executed.value = 0
    fleet.send("overshoot", (lib, url, ns))
    res = fleet.collect("ok", START_TIMEOUT + TASK_TIMEOUT)
    total = sum(r["executed"] for r in res.values())
    if total != fleet.executed.value:
        raise RuntimeError(f"counts disagree: {total} != {fleet.executed.value}")
    return {
        "total": total,
        "all_rejected": all(r["rejected"] for r in res.values()),
        "per_worker": [res[i]["executed"] for i in sorted(res)],
    }


def propagation(fleet: Fleet, url: str, listen: bool, mode: str, max_staleness: float, calling: bool) -> list[float]:
    """One trial: seconds from just before `Admin.trip` to each worker seeing it."""
    from distbreaker import Admin, connect

    prefix = f"prop-{uuid.uuid4().hex[:10]}"
    service = "svc"
    fleet.send("watch", (url, prefix, service, listen, mode, max_staleness, calling))
    fleet.collect("ready", START_TIMEOUT)
    client = connect(url, timeout=1.0)
    try:
        time.sleep(0.05)  # let every worker enter its loop
        t0 = time.monotonic()
        Admin(client, prefix=prefix).trip(service, for_=60, reason="propagation benchmark", actor="bench")
        res = fleet.collect("ok", TASK_TIMEOUT)
    finally:
        client.close()
    seen = [r["seen"] for r in res.values()]
    if any(s is None for s in seen):
        raise RuntimeError(f"{seen.count(None)} workers never saw the trip within 10 s")
    return [s - t0 for s in seen]


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--url")
    ap.add_argument("--trials", type=int, default=3, help="overshoot runs per library")
    ap.add_argument("--prop-trials", type=int, default=10, help="trips per propagation scenario")
    ap.add_argument("--quick", action="store_true", help="one run each: a smoke test")
    a = ap.parse_args(argv)
    if a.quick:
        a.trials, a.prop_trials = 1, 2
    with server(a.url) as url:
        import redis

        r = redis.Redis.from_url(url, socket_timeout=5)
        info = r.info("server")
        r.close()
        name = info.get("server_name") or "redis"
        version = info.get("valkey_version") or info.get("redis_version")
        try:
            load = "load average %.2f %.2f %.2f" % os.getloadavg()
        except OSError:
            load = "load unknown"
        print(
            f"Machine: {os.cpu_count()} CPUs, {load} at start; {name} {version} on loopback; "
            f"{WORKERS} worker processes (spawn)\n"
        )
        fleet = Fleet()
        try:
            print(
                f"(a) Trip overshoot: {WORKERS} processes, every call fails, threshold 10; calls executed "
                f"before every worker rejects, {a.trials} run(s) each (min / median / max)\n"
            )
            print(
                "| library | threshold | executed before all reject | per worker (median run) | every worker rejected |"
            )
            print("|---|---|---:|---|---|")
            for lib, (label, setting) in LIBS.items():
                runs: list[dict[str, Any]] = []
                na = None
                for _ in range(a.trials):
                    try:
                        runs.append(overshoot(fleet, url, lib))
                    except Unavailable as exc:
                        na = str(exc)
                        break
                    except RuntimeError as exc:
                        na = "n/a (" + str(exc).strip().splitlines()[-1][:100].replace("|", "/") + ")"
                        break
                if na is not None or not runs:
                    print(f"| {label} | {setting} | {na} | — | — |", flush=True)
                    continue
                totals = sorted(r["total"] for r in runs)
                med = sorted(runs, key=lambda r: r["total"])[len(runs) // 2]
                rejected = sum(r["all_rejected"] for r in runs)
                print(
                    f"| {label} | {setting} | {totals[0]} / {statistics.median(totals):g} / {totals[-1]} | "
                    f"{med['per_worker']} | {rejected}/{len(runs)} runs |",
                    flush=True,
                )

            print(
                f"\n(b) Propagation of `Admin.trip` to {WORKERS} workers whose cache says closed: seconds from "
                f"just before the trip to each worker seeing forced_open ({a.prop_trials} trips × {WORKERS} "
                f"workers; poll/call interval {POLL * 1000:g} ms)\n"
            )
            print("| scenario | samples | p50 | p99 | max | bound |")
            print("|---|---:|---:|---:|---:|---|")
            scenarios = [
                ("pub/sub (listen=True), idle workers polling their cache", True, "sync", 1.0, False, "p99 ≤ 50 ms"),
                (
                    "no pub/sub (listen=False, max_staleness=0.5 s), workers calling, sync mode",
                    False,
                    "sync",
                    0.5,
                    True,
                    "≤ max_staleness + redis_timeout = 550 ms",
                ),
                (
                    "no pub/sub (listen=False, max_staleness=0.5 s), workers calling, batched mode",
                    False,
                    "batched",
                    0.5,
                    True,
                    "≤ max_staleness + redis_timeout = 550 ms",
                ),
            ]
            for label, listen, mode, staleness, calling, bound in scenarios:
                samples: list[float] = []
                err = None
                for _ in range(a.prop_trials):
                    try:
                        samples += propagation(fleet, url, listen, mode, staleness, calling)
                    except (RuntimeError, Unavailable) as exc:
                        err = str(exc).strip().splitlines()[-1][:100].replace("|", "/")
                        break
                if err is not None and not samples:
                    print(f"| {label} | 0 | n/a ({err}) | — | — | {bound} |", flush=True)
                    continue
                note = f" (stopped: {err})" if err else ""
                print(
                    f"| {label}{note} | {len(samples)} | {pct(samples, 50) * 1e3:.1f} ms | "
                    f"{pct(samples, 99) * 1e3:.1f} ms | {max(samples) * 1e3:.1f} ms | {bound} |",
                    flush=True,
                )
        finally:
            fleet.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
