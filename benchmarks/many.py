"""Many breakers: `distbreaker status` and `Admin` over 10,000 breakers, and memory per breaker.

The breakers are made by the scripts (a `Breaker` call each; every tenth one tripped by its
failures, every hundredth forced open by an operator), so their hashes and event streams are
real. Measured on a loopback server, in one run:

- ``distbreaker status`` over every breaker, as an operator types it (a subprocess: Python start,
  imports, SCAN, pipelined HGETALLs, the table or ``-o json`` written to a pipe), median of runs,
  with the bytecode cached as in an installed package (pip compiles it; here one untimed run
  writes it to a private PYTHONPYCACHEPREFIX, even under PYTHONDONTWRITEBYTECODE); its client
  CPU is the subprocess's (user + system);
- `Admin.list` (SCAN), `Admin.inspect_all` (sync and asyncio), and, for the ratio, the read
  path before it: `Admin.inspect` (read.lua) once per breaker;
- memory per breaker: ``MEMORY USAGE`` of the state hash and of the events stream (capped at
  ~1000 entries by the scripts; here a breaker has 0-2 entries), median and max, and the
  server's ``used_memory`` growth divided by the breakers (key overhead included).

With ``--before DIR`` (another checkout, e.g. a worktree of main), the same status commands and
`Admin.inspect_all` also run from DIR's code, in the same run, against the same breakers.

    python benchmarks/many.py [--url redis://...] [--breakers 10000] [--runs 3] [--quick] [--before DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import redis.asyncio  # noqa: E402
from _server import server  # noqa: E402

from distbreaker import Admin, Breaker, BreakerConfig, connect  # noqa: E402
from distbreaker import asyncio as adb  # noqa: E402

TARGET_S = 1.0  # issue 15 item 4: status over 10,000 breakers in <= 1 s
TARGET_BYTES = 1024  # memory per breaker <= 1 KB (its stream capped)


def fill(url: str, prefix: str, n: int) -> None:
    client = connect(url, timeout=5)
    admin = Admin(client, prefix=prefix)
    config = BreakerConfig(minimum_calls=2)

    def boom() -> None:
        raise RuntimeError("down")

    for i in range(n):
        service = f"svc-{i:05d}"
        b = Breaker(service, client, config, prefix=prefix, listen=False)
        b.call(lambda: None)
        if i % 10 == 0:
            for _ in range(2):
                try:
                    b.call(boom)
                except Exception:
                    pass
        if i % 100 == 1:
            admin.trip(service, reason="INC-1", actor="bench")
        b.close()
    client.close()


CPU: dict[str, float] = {}  # label -> median CPU seconds of this process (in-process rows)


def timed(fn: Callable[[], Any], runs: int, label: str = "") -> float:
    """Median wall time of `runs` calls (and, under `label`, their median CPU time here)."""
    times, cpu = [], []
    for _ in range(runs):
        start, used = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - used)
    if label:
        CPU[label] = statistics.median(cpu)
    return statistics.median(times)


PYCACHE = tempfile.mkdtemp(prefix="many-pycache-")  # the subprocesses' bytecode (removed at exit)


def env_for(tree: Path) -> dict[str, str]:
    """The environment of a subprocess running `tree`'s code, its bytecode cached in PYCACHE.
    (The subprocesses run in PYCACHE: ``python -c`` puts its working directory first on
    sys.path, before PYTHONPATH, and a checkout there would be imported instead of `tree`.)"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "cli"), os.environ.get("PYTHONPATH", "")])
    env["PYTHONPYCACHEPREFIX"] = os.path.join(PYCACHE, tree.name or "root")
    return env


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def interleaved(runs: int, *fns: Callable[[], Any]) -> list[float]:
    """Median wall time of each of `fns` (or the time it returns), called in turn `runs` times
    (A B A B ...: a load that drifts during the runs weighs on each alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            own = fn()  # a float: the time the call measured itself (of a part of it)
            times[i].append(own if isinstance(own, float) else time.perf_counter() - start)
    return [statistics.median(t) for t in times]


# The console script `distbreaker` as pip writes it (run by its path: sys.argv[0] is its name)
CONSOLE_SCRIPT = """import sys
from distbreaker_cli.app import main
if __name__ == "__main__":
    sys.exit(main())
"""


def console_script() -> str:
    """The path of a `distbreaker` console script (in PYCACHE, a directory of its own: the
    script's directory comes first on sys.path)."""
    path = Path(PYCACHE, "bin", "distbreaker")
    if not path.exists():
        path.parent.mkdir()
        path.write_text(CONSOLE_SCRIPT)
    return str(path)


def cli(url: str, prefix: str, *extra: str, tree: Path = ROOT, label: str = "") -> Callable[[], None]:
    """A run of ``distbreaker status`` from `tree`'s code, through the console script (the
    first call, untimed by `timed`'s caller, writes the bytecode); under `label`, the
    subprocess's CPU is recorded in CPU."""
    env = env_for(tree)
    command = [sys.executable, console_script(), "--url", url, "--prefix", prefix, "status", *extra]
    used: list[float] = []

    def run() -> None:
        before = children_cpu()
        proc = subprocess.run(command, env=env, cwd=PYCACHE, capture_output=True, timeout=120, check=False)
        used.append(children_cpu() - before)
        if label:
            CPU[label] = statistics.median(used[1:] or used)
        if proc.returncode != 0:
            raise SystemExit(f"distbreaker status exited {proc.returncode}: {proc.stderr.decode()[-500:]}")

    run()  # warm-up: the bytecode written, untimed
    return run


INSPECT_ALL = """
import json, statistics, sys, time
import distbreaker
from distbreaker import Admin, connect
admin = Admin(connect(sys.argv[1], timeout=30), prefix=sys.argv[2])
wall, cpu = [], []
for _ in range(int(sys.argv[3])):
    start, used = time.perf_counter(), time.process_time()
    admin.inspect_all()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - used)
print(json.dumps([statistics.median(wall), statistics.median(cpu), distbreaker.__file__]))
"""


def inspect_all_from(tree: Path, url: str, prefix: str, label: str) -> Callable[[], float]:
    """A call of `Admin.inspect_all()` by `tree`'s code in a fresh process: returns its wall
    time; its CPU time goes to CPU[label] (the median of the calls so far)."""
    used: list[float] = []

    def run() -> float:
        proc = subprocess.run(
            [sys.executable, "-c", INSPECT_ALL, url, prefix, "1"],
            env=env_for(tree),
            cwd=PYCACHE,
            capture_output=True,
            timeout=600,
            check=True,
        )
        wall, cpu, where = json.loads(proc.stdout.decode().splitlines()[-1])
        if not Path(where).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"{tree}'s inspect_all imported distbreaker from {where}")
        used.append(cpu)
        CPU[label] = statistics.median(used)
        return float(wall)

    return run


def memory(r: redis.Redis, prefix: str, services: list[str]) -> tuple[list[int], list[int]]:
    pipe = r.pipeline(transaction=False)
    for s in services:
        pipe.execute_command("MEMORY", "USAGE", f"{prefix}:{{{s}}}", "SAMPLES", "0")
        pipe.execute_command("MEMORY", "USAGE", f"{prefix}:{{{s}}}:events", "SAMPLES", "0")
    out = pipe.execute()
    return [int(v or 0) for v in out[::2]], [int(v or 0) for v in out[1::2]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="Redis URL (default: a private server)")
    ap.add_argument("--breakers", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1,000 breakers, 1 run (a smoke test)")
    ap.add_argument("--before", type=Path, default=None, help="another checkout: its status and inspect_all too")
    args = ap.parse_args()
    try:
        run_benchmark(args)
    finally:
        import shutil

        shutil.rmtree(PYCACHE, ignore_errors=True)


def run_benchmark(args: argparse.Namespace) -> None:
    n = 1000 if args.quick else args.breakers
    runs = 1 if args.quick else args.runs
    with server(args.url) as url:
        prefix = f"bench-many-{uuid.uuid4().hex[:8]}"
        r = redis.Redis.from_url(url)
        info = r.info("server")
        before = int(r.info("memory")["used_memory"])
        start = time.perf_counter()
        fill(url, prefix, n)
        made = time.perf_counter() - start
        grown = int(r.info("memory")["used_memory"]) - before
        client = connect(url, timeout=30)
        admin = Admin(client, prefix=prefix)
        services = admin.list()
        assert len(services) == n, (len(services), n)
        result = admin.inspect_all()
        assert len(result.breakers) == n and not result.broken, result.broken
        states: dict[str, int] = {}
        for snap, _ in result.breakers:
            states[snap.state.value] = states.get(snap.state.value, 0) + 1

        async def ainspect() -> None:
            aclient = redis.asyncio.Redis.from_url(url)
            try:
                await adb.Admin(aclient, prefix=prefix).inspect_all()
            finally:
                await aclient.aclose()

        table, as_json = "`distbreaker status` (subprocess, table)", "`distbreaker status -o json` (subprocess)"
        rows = [
            (table, timed(cli(url, prefix, label=table), runs)),
            (as_json, timed(cli(url, prefix, "-o", "json", label=as_json), runs)),
            ("`Admin.list()` (SCAN)", timed(admin.list, runs, "`Admin.list()` (SCAN)")),
            ("`Admin.inspect_all()`", timed(admin.inspect_all, runs, "`Admin.inspect_all()`")),
            (
                "`distbreaker.asyncio.Admin.inspect_all()`",
                timed(lambda: asyncio.run(ainspect()), runs, "`distbreaker.asyncio.Admin.inspect_all()`"),
            ),
        ]
        before_rows = []
        if args.before is not None:  # this tree and the other, in turn (fresh processes)
            tree = args.before.resolve()
            fresh = "`Admin.inspect_all()` (a fresh process)"
            for what, ours, theirs in (
                (table, cli(url, prefix, label=f"{table} [A]"), cli(url, prefix, tree=tree, label=f"{table} [B]")),
                (
                    as_json,
                    cli(url, prefix, "-o", "json", label=f"{as_json} [A]"),
                    cli(url, prefix, "-o", "json", tree=tree, label=f"{as_json} [B]"),
                ),
                (
                    fresh,
                    inspect_all_from(ROOT, url, prefix, f"{fresh} [A]"),
                    inspect_all_from(tree, url, prefix, f"{fresh} [B]"),
                ),
            ):
                a, b = interleaved(runs, ours, theirs)
                for side, seconds, name in (
                    ("A", a, f"{what} (in turn with {tree.name})"),
                    ("B", b, f"before ({tree.name}): {what}"),
                ):
                    CPU[name] = CPU[f"{what} [{side}]"]
                    before_rows.append((name, seconds))
        per_key = timed(lambda: [admin.inspect(s) for s in services], 1, "per key")
        hashes, streams = memory(r, prefix, services)
        totals = [h + s for h, s in zip(hashes, streams, strict=True)]
        keys = list(r.scan_iter(match=f"{prefix}:*", count=5000))
        for at in range(0, len(keys), 1000):
            r.delete(*keys[at : at + 1000])
        client.close()
        r.close()
    name = info.get("server_name") or "redis"
    version = info.get("valkey_version") or info.get("redis_version")
    print(f"Machine: {os.cpu_count()} cores; {name} {version} on loopback; {n:,} breakers made in {made:.1f} s")
    print(f"States: {', '.join(f'{k} {v:,}' for k, v in sorted(states.items()))}")
    print()
    try:
        load = "load average %.2f %.2f %.2f at the end" % os.getloadavg()
    except OSError:
        load = "load unknown"
    print(f"({load}: wall times grow with the load, the client CPU column much less)")
    print()
    print(f"| {n:,} breakers | time (median of {runs}) | client CPU | target | check |")
    print("|---|---|---|---|---|")
    scale = 10_000 / n
    for what, seconds in rows + before_rows:
        check = ""
        if "`distbreaker status" in what or "inspect_all" in what or "list" in what:
            ok = seconds * scale <= TARGET_S
            check = ("pass" if ok else "MISS") + ("" if n == 10_000 else f" (x{scale:g} = {seconds * scale:.2f} s)")
        cpu = f"{CPU[what] * 1000:.0f} ms" if what in CPU else "-"
        print(f"| {what} | {seconds * 1000:.0f} ms | {cpu} | <= {TARGET_S:g} s per 10,000 | {check} |")
    print(
        f"| before: `Admin.inspect` (read.lua) per breaker | {per_key * 1000:.0f} ms "
        f"| {CPU['per key'] * 1000:.0f} ms | | |"
    )
    inspect_all = dict(rows)["`Admin.inspect_all()`"]
    print()
    print(f"Pipelined reads vs a script per breaker: {per_key / inspect_all:.1f}x faster (same run).")
    print()
    print("| memory per breaker (MEMORY USAGE) | median | max | target | check |")
    print("|---|---|---|---|---|")
    for what, values in (("state hash", hashes), ("events stream", streams), ("hash + stream", totals)):
        med = statistics.median(values)
        check = ("pass" if med <= TARGET_BYTES else "MISS") if what == "hash + stream" else ""
        target = f"<= {TARGET_BYTES} B" if what == "hash + stream" else ""
        print(f"| {what} | {med:.0f} B | {max(values)} B | {target} | {check} |")
    print(f"| used_memory growth / breaker | {grown / n:.0f} B | | | |")


if __name__ == "__main__":
    main()
