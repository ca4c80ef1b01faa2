"""How cost grows with the fleet: throughput and Redis CPU per call as worker processes grow.

Part 1, one hot breaker on one Redis (standalone, loopback): 1, 2, 4, 8, 16 worker processes,
each calling a no-op through the same breaker as fast as it can for a fixed time, in each mode:

- ``sync``: one record script (EVALSHA) per call;
- ``batched``: outcomes summed locally, one flush per breaker and process every 0.1 s;
- ``asyncio``: `distbreaker.asyncio.Breaker`, `--tasks` concurrent tasks per process.

Per cell: protected calls/s (sum over the processes), Redis CPU (INFO ``used_cpu_sys`` +
``used_cpu_user``, delta) per protected call and as a share of one core (1.0 = the Redis core
is saturated), scripts run per protected call and their server time (INFO commandstats), and
the client processes' CPU per call.

Part 2, 1,000 breakers on a Redis Cluster of 1, 2 and 3 masters (formed locally as the test
harness does, no replicas): the same number of sync workers spread their calls over the 1,000
breakers (every script touches one slot, so each master serves its share); calls/s and
calls/s per master as masters are added.

Then the extrapolation for batched mode toward 1,000,000 protected calls/s on one breaker,
from the costs measured per core in this run.

Bounded: the default run takes about two minutes (1.5 s per cell); ``--quick`` is a smoke test
(seconds); ``--full`` measures 5 s per cell. A table is printed; a plot is written to
docs/img/scale.png (``--plot PATH``; needs matplotlib, the ``bench`` extra).

    python benchmarks/scale.py [--quick | --full] [--plot PATH] [--no-cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test harness starts the servers

import redis  # noqa: E402

from distbreaker import Breaker, BreakerConfig, connect, connect_cluster  # noqa: E402
from distbreaker import asyncio as adb  # noqa: E402

SCRIPT_COMMANDS = ("evalsha", "eval", "fcall")
CONFIG = dict(redis_timeout=5.0, minimum_calls=1_000_000)  # generous budget: measure, never degrade
TARGET = 1_000_000  # protected calls/s fleet-wide on one breaker (issue 15 item 3)


# -- workers (child processes) ---------------------------------------------------------------
def _noop() -> None:
    return None


async def _anoop() -> None:
    return None


def _sync_worker(
    mode: str, url: str, cluster: bool, services: list[str], duration: float, ready: Any, go: Any
) -> tuple[int, float, float]:
    client = connect_cluster(url, timeout=5) if cluster else connect(url, timeout=5)
    breakers = [Breaker(s, client, BreakerConfig(**CONFIG), prefix="scale", listen=False, mode=mode) for s in services]
    for b in breakers:  # warm up: scripts loaded, config stored, snapshot cached
        b.call(_noop)
    ready.release()
    go.wait()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    deadline = start + duration
    if len(breakers) == 1:
        call = breakers[0].call
        while time.perf_counter() < deadline:
            for _ in range(100):
                call(_noop)
            n += 100
    else:
        while time.perf_counter() < deadline:
            for b in breakers[n % len(breakers) :][:100]:
                b.call(_noop)
            n += 100 if len(breakers) - n % len(breakers) >= 100 else len(breakers) - n % len(breakers)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    for b in breakers:
        b.close()  # batched: the last flush
    client.close()
    return n, elapsed, cpu


def _async_worker(
    url: str, services: list[str], duration: float, tasks: int, ready: Any, go: Any
) -> tuple[int, float, float]:
    async def main() -> tuple[int, float, float]:
        client = adb.connect(url, timeout=5)
        b = adb.Breaker(services[0], client, BreakerConfig(**CONFIG), prefix="scale", listen=False)
        await b.call(_anoop)
        ready.release()
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        counts = [0] * tasks
        start, cpu = time.perf_counter(), time.process_time()
        deadline = start + duration

        async def loop(i: int) -> None:
            while time.perf_counter() < deadline:
                for _ in range(20):
                    await b.call(_anoop)
                counts[i] += 20

        await asyncio.gather(*(loop(i) for i in range(tasks)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await b.close()
        await client.aclose()
        return sum(counts), elapsed, cpu

    return asyncio.run(main())


def _child(kind: str, args: tuple[Any, ...], out: Any) -> None:
    try:
        result = _async_worker(*args) if kind == "asyncio" else _sync_worker(kind, *args)
        out.put(result)
    except BaseException as exc:  # reported to the parent, which fails the cell
        out.put(exc)


# -- measuring ------------------------------------------------------------------------------
@dataclass
class Cell:
    label: str
    procs: int
    calls: int = 0
    wall: float = 0.0
    rate: float = 0.0  # protected calls/s (sum over processes)
    redis_cpu: float = 0.0  # seconds, summed over nodes
    scripts: int = 0
    script_usec: float = 0.0
    client_cpu: float = 0.0
    nodes: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def redis_us_per_call(self) -> float:
        return self.redis_cpu / self.calls * 1e6 if self.calls else float("nan")

    @property
    def redis_share(self) -> float:  # of one core, per node (1.0: that Redis core is saturated)
        return self.redis_cpu / self.wall / self.nodes if self.wall else float("nan")

    @property
    def client_us_per_call(self) -> float:
        return self.client_cpu / self.calls * 1e6 if self.calls else float("nan")


def _stats(clients: list[redis.Redis]) -> tuple[float, int, float]:
    cpu, scripts, usec = 0.0, 0, 0.0
    for c in clients:
        info = c.info("cpu")
        cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        stats = c.info("commandstats")
        for name in SCRIPT_COMMANDS:
            s = stats.get(f"cmdstat_{name}")
            if s:
                scripts += int(s["calls"])
                usec += float(s["usec"])
    return cpu, scripts, usec


def measure(cell: Cell, kind: str, args: tuple[Any, ...], nodes: list[redis.Redis], timeout: float) -> Cell:
    ctx = mp.get_context("fork")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(kind, (*args, ready, go), out), daemon=True) for _ in range(cell.procs)]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + timeout
        for _ in procs:
            if not ready.acquire(timeout=max(0.1, deadline - time.monotonic())):
                raise RuntimeError(f"{cell.label}: the workers did not start in {timeout:.0f} s")
        before = _stats(nodes)
        start = time.perf_counter()
        go.set()
        results = [out.get(timeout=timeout) for _ in procs]
        cell.wall = time.perf_counter() - start
        after = _stats(nodes)
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"{cell.label}: a worker failed: {errors[0]!r}")
    cell.calls = sum(n for n, _, _ in results)
    cell.rate = sum(n / elapsed for n, elapsed, _ in results)
    cell.client_cpu = sum(cpu for _, _, cpu in results)
    cell.redis_cpu = after[0] - before[0]
    cell.scripts = after[1] - before[1]
    cell.script_usec = after[2] - before[2]
    cell.nodes = len(nodes)
    return cell


# -- servers ---------------------------------------------------------------------------------
def _binary() -> Any:
    from _servers import find_binary

    return find_binary()


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke test: 1-2 processes, 0.5 s per cell")
    ap.add_argument("--full", action="store_true", help="5 s per cell")
    ap.add_argument("--procs", default=None, help="worker process counts (default 1,2,4,8,16)")
    ap.add_argument("--tasks", type=int, default=8, help="asyncio tasks per process (default 8)")
    ap.add_argument("--breakers", type=int, default=1000, help="breakers on the Cluster (default 1000)")
    ap.add_argument("--cluster-procs", type=int, default=None, help="sync workers on the Cluster (default 4)")
    ap.add_argument("--no-cluster", action="store_true", help="skip part 2")
    ap.add_argument("--plot", default=None, help="PNG to write (default docs/img/scale.png; none with --quick)")
    args = ap.parse_args()
    duration = 0.5 if args.quick else 5.0 if args.full else 1.5
    procs = [int(p) for p in args.procs.split(",")] if args.procs else [1, 2] if args.quick else [1, 2, 4, 8, 16]
    breakers = 50 if args.quick else args.breakers
    cluster_procs = args.cluster_procs or (2 if args.quick else 4)
    masters_list = [1, 3] if args.quick else [1, 2, 3]
    plot = args.plot if args.plot is not None else (None if args.quick else str(ROOT / "docs" / "img" / "scale.png"))
    timeout = 120.0
    started = time.monotonic()

    from _servers import Cluster, Server

    binary = _binary()
    single: list[Cell] = []
    srv = Server(binary)
    srv.start()
    try:
        r = redis.Redis.from_url(srv.url)
        info = r.info("server")
        server_name = f"{info.get('server_name') or 'redis'} {info.get('valkey_version') or info['redis_version']}"
        for kind in ("sync", "batched", "asyncio"):
            for n in procs:
                label = f"{kind} x{n}"
                cell = Cell(label, n)
                cell.extra["kind"] = kind
                if kind == "asyncio":
                    a = (srv.url, ["hot"], duration, args.tasks)
                else:
                    a = (srv.url, False, ["hot"], duration)
                single.append(measure(cell, kind, a, [r], timeout))
                print(f"  measured {label}: {_fmt(cell.rate)} calls/s", file=sys.stderr)
        r.close()
    finally:
        srv.close()

    clustered: list[Cell] = []
    if not args.no_cluster:
        services = [f"svc-{i:04d}" for i in range(breakers)]
        for masters in masters_list:
            with tempfile.TemporaryDirectory(prefix="scale-cluster-") as tmp:
                cluster = Cluster(binary, Path(tmp), masters=masters, replicas=0)
                cluster.start()
                try:
                    url = f"redis://127.0.0.1:{cluster.masters[0].port}/0"
                    nodes = [cluster.admin(m) for m in cluster.masters]
                    cell = Cell(f"cluster {masters} master(s)", cluster_procs)
                    cell.extra["masters"] = masters
                    measure(cell, "sync", (url, True, services, duration), nodes, timeout)
                    clustered.append(cell)
                    print(f"  measured {cell.label}: {_fmt(cell.rate)} calls/s", file=sys.stderr)
                finally:
                    cluster.close()

    report(single, clustered, duration, args.tasks, breakers, cluster_procs, server_name, time.monotonic() - started)
    if plot:
        draw(single, clustered, plot, server_name)


def report(
    single: list[Cell],
    clustered: list[Cell],
    duration: float,
    tasks: int,
    breakers: int,
    cluster_procs: int,
    server_name: str,
    took: float,
) -> None:
    print(f"Machine: {os.cpu_count()} cores; {server_name} on loopback; {duration:g} s per cell; run took {took:.0f} s")
    print()
    print(
        "| mode | processes | protected calls/s | Redis CPU µs / call | Redis core busy | "
        "scripts / call | server µs / script | client CPU µs / call |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for c in single:
        per_script = c.script_usec / c.scripts if c.scripts else float("nan")
        kind = c.extra["kind"] + (f" ({tasks} tasks/process)" if c.extra["kind"] == "asyncio" else "")
        print(
            f"| {kind} | {c.procs} | {_fmt(c.rate)} | {c.redis_us_per_call:.2f} | {c.redis_share:.0%} | "
            f"{c.scripts / c.calls:.4f} | {per_script:.2f} | {c.client_us_per_call:.1f} |"
        )
    print()
    for kind in ("sync", "batched", "asyncio"):
        cells = [c for c in single if c.extra["kind"] == kind]
        if not cells:
            continue
        best = max(cells, key=lambda c: c.rate)
        busy = max(cells, key=lambda c: c.redis_share)
        print(
            f"{kind}: peak {_fmt(best.rate)} calls/s at {best.procs} processes; the Redis core was at most "
            f"{busy.redis_share:.0%} busy ({busy.procs} processes)"
        )
    if clustered:
        print()
        print(f"{breakers:,} breakers on a Redis Cluster, {cluster_procs} sync worker processes:")
        print()
        print(
            "| masters | protected calls/s | calls/s per master | Redis CPU µs / call | "
            "Redis core busy (mean per master) |"
        )
        print("|---|---|---|---|---|")
        for c in clustered:
            m = c.extra["masters"]
            print(f"| {m} | {_fmt(c.rate)} | {_fmt(c.rate / m)} | {c.redis_us_per_call:.2f} | {c.redis_share:.0%} |")
        base = clustered[0].rate
        added = [f"{c.extra['masters']}: {c.rate / base:.2f}x" for c in clustered[1:]]
        if added:
            print()
            print(f"Calls/s against 1 master: {', '.join(added)}.")
    # the extrapolation of batched mode
    batched = [c for c in single if c.extra["kind"] == "batched"]
    if batched:
        top = max(batched, key=lambda c: c.rate)
        client_us = statistics.median(c.client_us_per_call for c in batched)
        flush_us = top.script_usec / top.scripts if top.scripts else float("nan")
        per_core = 1e6 / client_us
        procs_needed = TARGET / per_core
        flushes = procs_needed / 0.1  # one flush per process and breaker every flush_interval
        redis_load = flushes * flush_us / 1e6
        print()
        print(
            f"Batched, toward {TARGET:,} protected calls/s on one breaker: measured {_fmt(top.rate)} calls/s "
            f"here ({top.procs} processes on {os.cpu_count()} cores); one client core runs {_fmt(per_core)} calls/s "
            f"(median {client_us:.2f} µs CPU per call), so {TARGET:,} calls/s needs ~{procs_needed:.0f} busy "
            f"worker cores. Their flushes ({flushes:,.0f}/s at flush_interval 0.1 s, {flush_us:.1f} µs of "
            f"server time each) keep {redis_load:.0%} of one Redis core busy: "
            + ("one Redis core carries it." if redis_load < 1 else "more than one Redis core: a longer flush_interval.")
        )


def draw(single: list[Cell], clustered: list[Cell], path: str, server_name: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\n(no plot: matplotlib is not installed; pip install -e '.[bench]' writes {path})")
        return
    fig, axes = plt.subplots(1, 2 if clustered else 1, figsize=(12 if clustered else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for kind, marker in (("sync", "o"), ("batched", "s"), ("asyncio", "^")):
        cells = [c for c in single if c.extra["kind"] == kind]
        if cells:
            ax.plot([c.procs for c in cells], [c.rate for c in cells], marker=marker, label=kind)
    ax.set_xscale("log", base=2)
    ticks = sorted({c.procs for c in single})
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_yscale("log")
    ax.set_xlabel("worker processes (one breaker)")
    ax.set_ylabel("protected calls/s")
    ax.set_title(f"One breaker, {server_name}, {os.cpu_count()} cores")
    ax.grid(True, which="both", alpha=0.3)
    twin = ax.twinx()
    sync = [c for c in single if c.extra["kind"] == "sync"]
    twin.plot(
        [c.procs for c in sync], [c.redis_share * 100 for c in sync], "k--", alpha=0.5, label="Redis core busy (sync)"
    )
    twin.set_ylabel("Redis core busy, sync (%)")
    twin.set_ylim(0, 110)
    lines = ax.get_legend_handles_labels()
    lines2 = twin.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="best", fontsize=8)
    if clustered:
        bx = axes[0][1]
        masters = [c.extra["masters"] for c in clustered]
        bx.bar([str(m) for m in masters], [c.rate for c in clustered], color="tab:blue", alpha=0.7)
        bx.set_xlabel("Cluster masters (1,000 breakers)")
        bx.set_ylabel("protected calls/s (sync)")
        bx.set_title("Calls/s as masters are added")
        for i, c in enumerate(clustered):
            bx.annotate(f"{c.rate:,.0f}", (i, c.rate), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nPlot: {path}")


if __name__ == "__main__":
    main()
