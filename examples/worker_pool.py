"""A Celery-style worker pool: N processes (multiprocessing, spawn) run jobs that call a flaky
service through one shared breaker.

Each worker process builds its own client and `Breaker("jobs-backend", ...)`; because they use
the same Redis and prefix, they share one breaker: once the service starts failing, the pool
trips together and stops calling it, probes it (one probe at a time, fleet-wide), and closes
again when it has recovered. Rejected jobs are not run (a real queue would retry them later).

The simulated service is healthy, fails 90% of the jobs from 25% to 55% of `--duration`, then
recovers. It prints the `distbreaker status` command that shows the breaker, a progress line
every 2 s (on stderr), and at the end a summary: jobs run (ok / failed), jobs rejected by the breaker,
the transitions from the breaker's events stream (`Admin.history`) and how the workers exited.

Run it (an embedded server is started when ``DISTBREAKER_URL`` is not set)::

    pip install '.[demo]'
    python examples/worker_pool.py --workers 4 --duration 20
    python examples/worker_pool.py --mode batched --json      # batched mode; the summary as JSON
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import sys
import time
import uuid
from typing import Any

from distbreaker import Admin, Breaker, BreakerConfig, CircuitOpenError, Transition, connect

SERVICE = "jobs-backend"
HEALTHY, FAILING = 0.02, 0.9  # failure probability of the simulated service in each phase


def breaker_config(duration: float) -> BreakerConfig:
    """Scaled to the run, so that the breaker trips and recovers within `duration` seconds."""
    return BreakerConfig(
        failure_rate_threshold=0.5,
        minimum_calls=10,
        window=max(1.0, duration / 10),
        buckets=5,
        open_duration=max(0.3, duration / 15),
        backoff_multiplier=1.5,
        max_open_duration=max(1.0, duration / 6),
        half_open_successes=3,
        probe_timeout=1.0,
        redis_timeout=0.5,  # generous: a busy laptop must not turn into "Redis unavailable"
        max_staleness=0.2,
        idle_ttl=3600,
    )


class ServiceError(Exception):
    """The simulated service failed."""


# -- in each worker process -------------------------------------------------------------------
_breaker: Breaker | None = None
_rng = random.Random()
_start: Any = None  # shared: the parent sets it once every worker is ready
_duration = 1.0


def init_worker(url: str, prefix: str, mode: str, start: Any, duration: float, ready: Any) -> None:
    """Pool initializer: one client and one breaker per worker process, for its whole life."""
    global _breaker, _start, _duration
    from multiprocessing.util import Finalize

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    _start, _duration = start, duration
    _rng.seed(os.getpid())
    client = connect(url, timeout=0.5)
    _breaker = Breaker(SERVICE, client, breaker_config(duration), prefix=prefix, mode=mode)  # type: ignore[arg-type]
    with ready.get_lock():
        ready.value += 1
    # Pool workers leave through os._exit (no atexit): flush the batched outcomes and stop
    # listening when the worker exits normally (after pool.close()).
    Finalize(_breaker, _close, args=(_breaker, client), exitpriority=10)


def _close(breaker: Breaker, client: Any) -> None:
    try:
        breaker.close()
    finally:
        client.close()


def flaky_service(job: int) -> int:
    time.sleep(_rng.uniform(0.002, 0.006))
    phase = (time.time() - _start.value) / _duration
    if _rng.random() < (FAILING if 0.25 <= phase < 0.55 else HEALTHY):
        raise ServiceError(f"job {job}: backend answered 503")
    return job


def run_job(job: int) -> tuple[int, str]:
    """One job: (worker pid, "ok" | "failed" | "rejected")."""
    assert _breaker is not None
    try:
        _breaker.call(flaky_service, job)
        return os.getpid(), "ok"
    except CircuitOpenError:
        time.sleep(0.005)  # a real worker would requeue the job with a delay
        return os.getpid(), "rejected"
    except ServiceError:
        return os.getpid(), "failed"


# -- the parent -------------------------------------------------------------------------------
PROGRESS_EVERY = 2.0  # seconds between progress lines (stderr)
_signal = 0  # SIGTERM or SIGHUP received (exit 128 + it)


def _stop_signal(signum: int, frame: Any) -> None:
    global _signal
    _signal = _signal or signum
    raise KeyboardInterrupt  # stop like Ctrl-C: the pool and the embedded server are stopped


def _progress(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except OSError:  # the terminal is gone (SIGHUP): carry on stopping
        pass


def run(url: str, prefix: str, workers: int, duration: float, mode: str) -> dict[str, Any]:
    """Run the pool for `duration` seconds; return the summary."""
    client = connect(url, timeout=5)
    admin = Admin(client, prefix=prefix)
    sec, usec = client.time()
    since = run_start = int(sec) + int(usec) / 1e6  # the server's clock, as in the events stream
    ctx = multiprocessing.get_context("spawn")
    counts = {"ok": 0, "failed": 0, "rejected": 0}
    per_worker: dict[int, dict[str, int]] = {}
    stopped_by = "--duration"
    start_at, ready = ctx.Value("d", 0.0), ctx.Value("i", 0)
    launched = time.time()
    pool = ctx.Pool(workers, initializer=init_worker, initargs=(url, prefix, mode, start_at, duration, ready))
    procs = multiprocessing.active_children()  # the pool's worker processes (public API)
    _progress(
        f"started {workers} workers (pids {', '.join(str(p.pid) for p in procs)}); "
        f"a progress line every {PROGRESS_EVERY:g}s; Ctrl-C stops them"
    )
    start = time.time()
    try:
        # The run (and the service's failing phase) starts when every worker is ready: starting
        # interpreters takes seconds on a busy machine.
        deadline = time.monotonic() + 60
        while ready.value < workers and time.monotonic() < deadline:
            time.sleep(0.02)
        start = time.time()
        start_at.value = start
        sec, usec = client.time()
        run_start = int(sec) + int(usec) / 1e6  # transitions are shown relative to it
        _progress(f"  workers ready after {start - launched:.1f}s; running for {duration:g}s")
        job = 0
        shown = start
        while time.time() - start < duration:  # bounded: one batch past the deadline at most
            batch = range(job, job + 20 * workers)
            job += len(batch)
            for pid, outcome in pool.imap_unordered(run_job, batch):
                counts[outcome] += 1
                per_worker.setdefault(pid, {"ok": 0, "failed": 0, "rejected": 0})[outcome] += 1
            if time.time() - shown >= PROGRESS_EVERY:
                shown = time.time()
                state = admin.status(SERVICE).state.value if admin.exists(SERVICE) else "closed"
                _progress(
                    f"  +{shown - start:5.1f}s  breaker {state:<9}  jobs: {counts['ok']} ok, "
                    f"{counts['failed']} failed, {counts['rejected']} rejected"
                )
        pool.close()  # workers finish, run their finalizers (breaker.close()) and exit
    except KeyboardInterrupt:
        stopped_by = signal.Signals(_signal).name if _signal else "Ctrl-C"
        pool.terminate()
    finally:
        pool.join()
        for p in procs:  # belt and braces: nothing outlives the example
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
    elapsed = time.time() - start
    moves = [t for t in reversed(admin.history(SERVICE, n=1000)) if t.time >= since and t.from_state != t.to_state]
    state = admin.status(SERVICE).state.value if admin.exists(SERVICE) else "closed"
    client.close()
    return {
        "service": SERVICE,
        "prefix": prefix,
        "mode": mode,
        "workers": workers,
        "seconds": round(elapsed, 1),
        "stopped_by": stopped_by,
        "jobs": {**counts, "run": counts["ok"] + counts["failed"], "total": sum(counts.values())},
        "per_worker": {str(pid): c for pid, c in sorted(per_worker.items())},
        "transitions": [_transition(t, run_start) for t in moves],
        "tripped": any(t.to_state.value == "open" for t in moves),
        "final_state": state,
        "processes": [{"pid": p.pid, "exitcode": p.exitcode, "alive": p.is_alive()} for p in procs],
    }


def _transition(t: Transition, since: float) -> dict[str, Any]:
    return {"at": round(t.time - since, 3), "from": t.from_state.value, "to": t.to_state.value, "cause": t.cause}


def print_summary(s: dict[str, Any]) -> None:
    jobs = s["jobs"]
    print(
        f"worker pool summary: {s['workers']} workers, mode {s['mode']}, {s['seconds']}s (stopped by {s['stopped_by']})"
    )
    print(
        f"jobs: {jobs['total']} = {jobs['run']} run ({jobs['ok']} ok, {jobs['failed']} failed) "
        f"+ {jobs['rejected']} rejected by the breaker without calling the service"
    )
    for pid, c in s["per_worker"].items():
        print(f"  worker {pid}: {c['ok']} ok, {c['failed']} failed, {c['rejected']} rejected")
    print(f"transitions of {s['service']!r} (Admin.history):")
    for t in s["transitions"]:
        print(f"  +{t['at']:6.2f}s  {t['from'] + '>' + t['to']:<17}  {t['cause']}")
    if not s["transitions"]:
        print("  (none: run longer)")
    print(f"tripped: {'yes' if s['tripped'] else 'no'}; state now: {s['final_state']}")
    exited = [p for p in s["processes"] if not p["alive"]]
    print(
        f"worker processes: {len(s['processes'])} started, {len(exited)} exited "
        f"(exit codes {sorted({p['exitcode'] for p in exited})})"
    )


def main(argv: list[str] | None = None) -> int:
    from _embedded import redis_url, status_command

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4, choices=range(1, 33), metavar="N")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds (default 20)")
    parser.add_argument("--mode", choices=("sync", "batched"), default="sync")
    parser.add_argument(
        "--prefix", default=None, help="key prefix (default $DISTBREAKER_PREFIX, else a fresh one per run)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be > 0")
    prefix = args.prefix or os.environ.get("DISTBREAKER_PREFIX") or f"example-pool-{uuid.uuid4().hex[:8]}"
    signal.signal(signal.SIGTERM, _stop_signal)
    signal.signal(signal.SIGHUP, _stop_signal)
    try:
        with redis_url() as url:
            _progress(
                f"service {SERVICE!r}, prefix {prefix!r}; watch its breaker with:\n"
                f"  {status_command(url, prefix)} --watch"
            )
            summary = run(url, prefix, args.workers, args.duration, args.mode)
    except KeyboardInterrupt:  # during start-up or the summary: the pool is already stopped
        return 128 + _signal if _signal else 130
    try:
        if args.json:
            print(json.dumps(summary))
        else:
            print_summary(summary)
        sys.stdout.flush()
    except OSError:  # the terminal is gone (SIGHUP)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the exit's flush goes nowhere
    return 128 + _signal if _signal else 0


if __name__ == "__main__":
    sys.exit(main())
