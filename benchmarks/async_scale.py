"""asyncio at high concurrency: throughput and p99 latency at 1, 10, 100 and 1000 concurrent tasks.

Prints the machine, then ONE markdown table: for each path and number of concurrent tasks on one
event loop, calls per second, p50 and p99 latency of one call, the throughput ratio to the bare
redis.asyncio EVALSHA round trip at the same concurrency, and the connections the path opened
to the server (INFO stats, total_connections_received). Then a cold burst: 1000 concurrent calls
on a fresh `distbreaker.asyncio.connect()` client with the default 50 ms budget, counted in Redis.

    python benchmarks/async_scale.py [--url redis://127.0.0.1:PORT/0] [--calls 10000] [--repeats 3] [--quick]

Paths:
- bare redis.asyncio `EVALSHA` of `return 1` on a plain `redis.asyncio.from_url` client (the
  floor a caller of redis-py pays; one pooled connection per concurrent task);
- distbreaker.asyncio's own send path, the same bare `EVALSHA` (one pipelined connection);
- distbreaker.asyncio closed path (a no-op protected call: one record script per call);
- purgatory 3 with its Redis unit of work, closed (the `bench` extra);
- aiobreaker-redis 0.1.0, closed (over the plain redis.asyncio client).

Every task makes `calls / tasks` calls back to back (at least one). The paths of one repeat
run in turn, and each figure is the median over the repeats, so load from other processes hits
every path alike. Each path is warmed up at its concurrency first (connections set up; not
measured). Counts are bounded (`--calls`) and every cell has a wall-time limit (60 s).
`--quick` (the test suite's smoke run): 1000 calls per cell, one repeat, the peers up to 100
tasks. Compare ratios of one run, not absolute times; "worker CPU per call" (the process's CPU
time over the cell) holds better than wall times on a loaded machine. Without --url it starts a
private server (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from _server import server  # benchmarks/_server.py

import distbreaker
import distbreaker.asyncio as adb
from distbreaker import BreakerConfig
from distbreaker._core import Command
from distbreaker._scripts import adrive

TASKS = (1, 10, 100, 1000)
TIMEOUT = 1.0  # socket timeout / redis_timeout of every client here: no timeouts under load
CELL_LIMIT = 60.0  # seconds: a cell that takes longer is reported as such (a bound, not a target)
PEERS = ("purgatory", "aiobreaker-redis")


def _one(command: tuple[Any, ...]) -> Generator[Command, Any, Any]:
    """Steps of one command (for `adrive`, the step driver every Breaker call runs)."""
    return (yield Command(command))


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(admin: redis.Redis) -> str:
    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "load unknown"
    info = admin.info("server")
    srv = f"{info.get('server_name') or 'redis'} {info.get('valkey_version') or info.get('redis_version')}"
    peers = ", ".join(f"{p} {version_of(p) or 'not installed'}" for p in PEERS)
    return (
        f"Machine: {os.cpu_count()} CPUs, {load} at start; {srv} on loopback; "
        f"Python {platform.python_version()}, redis-py {version_of('redis')}, "
        f"hiredis {version_of('hiredis') or 'no'}; distbreaker {distbreaker.__version__}; {peers}"
    )


@dataclass
class Path:
    key: str
    label: str
    fn: Callable[[], Awaitable[Any]] | None = None
    na: str = ""  # why the path could not be measured
    opened: int = 0  # connections the server accepted during this path's cells (all tasks counts)
    cells: dict[int, list[Cell]] = field(default_factory=dict)  # tasks -> runs
    warmup_errors: int = 0
    max_tasks: int = TASKS[-1]  # --quick runs the peers up to 100 tasks only


Cell = tuple[float, float, float, int, float]  # calls/s, p50 s, p99 s, errors, CPU s per call


async def cell(fn: Callable[[], Awaitable[Any]], tasks: int, calls: int) -> Cell:
    """`tasks` concurrent tasks, `calls // tasks` calls each: (calls/s, p50 s, p99 s, errors,
    process CPU s per call).

    A call that raises counts as an error (its time is not in the latencies, nor in calls/s)."""
    per_task = max(1, calls // tasks)
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter
    deadline = clock() + CELL_LIMIT

    async def worker() -> None:
        nonlocal errors
        for _ in range(per_task):
            t0 = clock()
            try:
                await fn()
            except Exception:
                errors += 1
            else:
                latencies.append(clock() - t0)
            if t0 > deadline:
                break

    t0, cpu0 = clock(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    wall, cpu = clock() - t0, time.process_time() - cpu0
    latencies.sort()
    n = len(latencies)
    if not n:
        return 0.0, math.nan, math.nan, errors, math.nan
    return n / wall, latencies[n // 2], latencies[min(n - 1, round(0.99 * (n - 1)))], errors, cpu / n


async def anoop() -> None:
    return None


async def measure(
    url: str, calls: int, repeats: int, admin: redis.Redis, peer_tasks: int
) -> tuple[list[Path], dict[str, int]]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    # redis-py 8's asyncio pool allows 100 connections by default: 1000 concurrent tasks would
    # fail with MaxConnectionsError (one connection per task in flight); 2000 lets them all run
    plain = redis.asyncio.from_url(url, socket_timeout=TIMEOUT, max_connections=2000)
    client = adb.connect(url, timeout=TIMEOUT)
    closers: list[Callable[[], Awaitable[Any]]] = [plain.aclose, client.aclose]
    sha = await plain.script_load("return 1")
    # a window of a day: no bucket expires while the run counts (the counted figure is a delta)
    config = BreakerConfig(minimum_calls=10**9, redis_timeout=TIMEOUT, window=86_400)
    breaker = adb.Breaker("scale", client, config, prefix=prefix, listen=False)
    await breaker.call(anoop)
    made = {"closed": 0}
    counts = [0, 0]  # closed-path calls made and counted in Redis, over the measured cells

    async def closed() -> None:
        made["closed"] += 1
        await breaker.call(anoop)

    paths = [
        Path("bare", "bare redis.asyncio EVALSHA (`return 1`), plain `from_url` client", lambda: plain.evalsha(sha, 0)),
        Path(
            "pipe",
            "bare EVALSHA (`return 1`) on distbreaker.asyncio's send path (pipelined)",
            lambda: adrive(client, _one(("EVALSHA", sha, 0))),
        ),
        Path("closed", "distbreaker.asyncio, closed (1 record per call)", closed),
    ]
    for peer in await peer_paths(url, prefix, plain, closers):
        peer.max_tasks = peer_tasks
        paths.append(peer)
    try:
        for tasks in TASKS:
            for path in paths:  # warm-up at this concurrency (connections), not measured
                if path.fn is not None and tasks <= path.max_tasks:
                    before = int(admin.info("stats")["total_connections_received"])
                    path.warmup_errors += (await cell(path.fn, tasks, tasks))[3]
                    path.opened += int(admin.info("stats")["total_connections_received"]) - before
            for _ in range(repeats):
                for path in paths:
                    if path.fn is None or tasks > path.max_tasks:
                        continue
                    before = int(admin.info("stats")["total_connections_received"])
                    if path.key == "closed":
                        made["closed"], counted_before = 0, (await breaker.snapshot()).calls
                    path.cells.setdefault(tasks, []).append(await cell(path.fn, tasks, calls))
                    if path.key == "closed":
                        counts[0] += made["closed"]
                        counts[1] += (await breaker.snapshot()).calls - counted_before
                    path.opened += int(admin.info("stats")["total_connections_received"]) - before
    finally:
        for close in closers:
            with contextlib.suppress(Exception):
                await close()
    return paths, {"made": counts[0], "counted": counts[1]}


async def peer_paths(url: str, prefix: str, plain: Any, closers: list[Callable[[], Awaitable[Any]]]) -> list[Path]:
    pg = Path("purgatory", "purgatory + Redis (AsyncRedisUnitOfWork), closed")
    try:
        from purgatory import AsyncCircuitBreakerFactory, AsyncRedisUnitOfWork

        uow = AsyncRedisUnitOfWork(url)
        closers.append(uow.contexts.redis.aclose)  # type: ignore[attr-defined]
        # its own from_url client: redis-py 8's asyncio pool allows 100 connections by default,
        # and 1000 tasks then fail with MaxConnectionsError; given the same 2000 as the bare row
        uow.contexts.redis.connection_pool.max_connections = 2000  # type: ignore[attr-defined]
        factory = AsyncCircuitBreakerFactory(default_threshold=10**9, default_ttl=3600, uow=uow)
        await factory.initialize()
        pg.fn = factory(f"{prefix}-pg")(anoop)
    except Exception as exc:
        pg.na = f"n/a ({type(exc).__name__}: {exc})"[:80]
    ar = Path("aiobreaker-redis", "aiobreaker-redis + Redis (plain `from_url` client), closed")
    try:
        from aiobreaker_redis import CircuitBreaker as ARBreaker

        arb = ARBreaker(
            "closed", failure_threshold=10**9, recovery_timeout=3600, redis_client=plain, redis_prefix=f"{prefix}:ar"
        )
        ar.fn = lambda: arb.call(anoop)
    except Exception as exc:
        ar.na = f"n/a ({type(exc).__name__}: {exc})"[:80]
    return [pg, ar]


async def cold_burst(url: str, admin: redis.Redis, n: int = 1000) -> str:
    """`n` concurrent calls on a fresh default `connect()` client (50 ms budget): counted in Redis?"""
    prefix = f"cold-{uuid.uuid4().hex[:8]}"
    before = int(admin.info("stats")["total_connections_received"])
    client = adb.connect(url)
    breaker = adb.Breaker("cold", client, BreakerConfig(minimum_calls=10**9), prefix=prefix, listen=False)
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(breaker.call(anoop) for _ in range(n)))
        took = time.perf_counter() - t0
        opened = int(admin.info("stats")["total_connections_received"]) - before
        counted = (await breaker.snapshot()).calls
    finally:
        await client.aclose()
    return (
        f"Cold burst: {n} concurrent calls on a fresh `distbreaker.asyncio.connect()` client (50 ms budget): "
        f"{counted}/{n} counted in {took * 1000:.0f} ms over {opened} connection(s)."
    )


def table(paths: list[Path]) -> str:
    bare = next(p for p in paths if p.key == "bare")
    lines = [
        "| path | tasks | calls/s | p50 | p99 | calls/s vs bare redis.asyncio | worker CPU per call "
        "| errors | connections opened |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        for tasks in TASKS:
            if path.fn is None or tasks not in path.cells:
                why = path.na or "not run (--quick)"
                lines.append(f"| {path.label} | {tasks} | {why} | | | | | | |")
                continue
            runs = path.cells[tasks]
            rate = statistics.median(r[0] for r in runs)
            p50 = statistics.median(r[1] for r in runs)
            p99 = statistics.median(r[2] for r in runs)
            base = statistics.median(r[0] for r in bare.cells[tasks])
            errors = sum(r[3] for r in runs)
            cpu = statistics.median(r[4] for r in runs)
            conns = str(path.opened) if tasks == max(path.cells) else ""
            lines.append(
                f"| {path.label} | {tasks} | {rate:,.0f} | {p50 * 1e6:,.0f} µs | {p99 * 1e6:,.0f} µs | "
                f"{rate / base:.2f}× | {cpu * 1e6:,.0f} µs | {errors} | {conns} |"
            )
    return "\n".join(lines)


async def run(url: str, calls: int, repeats: int, peer_tasks: int) -> None:
    admin = redis.Redis.from_url(url, socket_timeout=10)
    try:
        print(machine(admin))
        print(f"{calls} calls per cell (at least one per task), median of {repeats} repeat(s).")
        print()
        paths, counts = await measure(url, calls, repeats, admin, peer_tasks)
        print(table(paths))
        print()
        print(
            "Connections opened: all a path's cells together (warm-up included), shown on its last row; "
            "a pool keeps what it opened, so each path opens about its highest concurrency."
        )
        print(f"distbreaker closed path, measured cells: {counts['counted']}/{counts['made']} calls counted in Redis.")
        warm = ", ".join(f"{p.key} {p.warmup_errors}" for p in paths if p.fn is not None)
        print(f"Errors during the warm-ups (cold connections, not in the table): {warm}.")
        print(await cold_burst(url, admin))
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--url", help="an existing server (loopback); default: a private one")
    ap.add_argument("--calls", type=int, default=10_000, help="calls per cell (each task makes calls/tasks)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per cell, median reported")
    ap.add_argument("--quick", action="store_true", help="few calls: a smoke run of a few seconds")
    args = ap.parse_args(argv)
    calls, repeats = (1000, 1) if args.quick else (args.calls, args.repeats)
    with server(args.url) as url:
        asyncio.run(run(url, calls, repeats, 100 if args.quick else TASKS[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
