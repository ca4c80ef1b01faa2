"""At the physical floor: what a protected call costs the worker, against a raw socket round trip.

One run prints, for sync and asyncio, the wall time and the worker's CPU time
(`time.process_time`) per call of: a raw socket round trip of EVALSHA `return 1` (the floor), a
raw round trip of the very record EVALSHA a breaker sends (the floor plus record.lua's server
time), redis-py's `evalsha` of `return 1`, and a protected no-op on the closed path. Each with
hiredis (the default install: a dependency) and without it (a subprocess in which
``import hiredis`` fails, so that one run prints both). Rows are measured in interleaved
rounds; each figure is the median of the rounds; ratios are to the raw `return 1` row of the same
world and install. The goals of issue 19 are printed with PASS/MISS, and beside them the
client-side ratios: the breaker against the raw round trip of its own record EVALSHA, which
takes record.lua's server time out (that cost is the server's, issue 15). When a goal is missed
(or with --profile), a breakdown and a profile of the Python work (top functions by own time per
call, sync and asyncio) show where the µs go.

    PYTHONPATH=$PWD python benchmarks/floor.py [--url redis://127.0.0.1:PORT/0] [-n 10000] [--rounds 5] [--profile]

Without --url it starts a private server from the same binaries the tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.metadata
import json
import os
import platform
import pstats
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _server import server  # noqa: E402  (benchmarks/_server.py)

import distbreaker  # noqa: E402
import distbreaker.asyncio as dba  # noqa: E402
from distbreaker import Breaker, BreakerConfig, connect  # noqa: E402
from distbreaker._breaker import swap_lane  # noqa: E402  (the documented internal hook)
from distbreaker._model import Outcome  # noqa: E402
from distbreaker._resp import HIREDIS  # noqa: E402
from distbreaker._transport import _command, pack  # noqa: E402

TRIVIAL = "return 1"
# issue 19's goals, as ratios of one run
SYNC_WALL, SYNC_CPU, ASYNC_WALL, DEFAULT_VS_BEST = 1.3, 1.5, 1.5, 1.10
ROWS = {
    "raw": "raw socket: `sendall` EVALSHA `return 1`, one `recv` (the floor)",
    "raw_record": "raw socket: the record EVALSHA a breaker sends (floor + record.lua)",
    "redis_py": "redis-py `evalsha` `return 1` (`distbreaker.connect` client)",
    "closed": "distbreaker closed path, no-op function",
    "closed_drive": "the same without the lane (redis-py's connection I/O, as before issue 19)",
    "araw": "raw asyncio stream: `write` EVALSHA `return 1`, one `read` (the floor)",
    "araw_record": "raw asyncio stream: the record EVALSHA a breaker sends",
    "aredis_py": "redis.asyncio `evalsha` `return 1`",
    "aclosed": "distbreaker.asyncio closed path, no-op coroutine",
}


def _address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


def _record_bytes(breaker: Any) -> bytes:
    """The EVALSHA bytes `breaker` sends on its closed path (its next success record)."""
    core = breaker._core
    request = core.record((core.view.generation, ""), Outcome.SUCCESS, 0.0)
    packed = pack(_command(request), "utf-8", "strict")
    assert packed is not None
    return packed


# -- sync ---------------------------------------------------------------------------------------
def sync_rows(url: str, n: int, rounds: int, prefix: str) -> dict[str, list[tuple[float, float]]]:
    host, port = _address(url)
    r = connect(url, timeout=2.0)
    sha = r.script_load(TRIVIAL)
    raw = socket.create_connection((host, port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    trivial = b"*3\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n0\r\n" % sha.encode()
    # redis_timeout as long as the client's: the benchmark's machine may be busy
    breaker = Breaker("floor", r, BreakerConfig(minimum_calls=10**9, redis_timeout=2.0), prefix=prefix, listen=False)
    breaker.call(int)  # loads the script and stores the config
    record = _record_bytes(breaker)
    # the same breaker's calls through redis-py's connection I/O (drive), for comparison
    before = Breaker(
        "floor-drive", r, BreakerConfig(minimum_calls=10**9, redis_timeout=2.0), prefix=prefix, listen=False
    )
    swap_lane(before, None)

    def raw_call() -> None:
        raw.sendall(trivial)
        raw.recv(65536)

    def raw_record() -> None:
        raw.sendall(record)
        raw.recv(65536)

    def noop() -> None:
        return None

    fns: dict[str, Callable[[], Any]] = {
        "raw": raw_call,
        "raw_record": raw_record,
        "redis_py": lambda: r.evalsha(sha, 0),
        "closed": lambda: breaker.call(noop),
        "closed_drive": lambda: before.call(noop),
    }
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for fn in fns.values():  # warm up
        for _ in range(max(10, n // 10)):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            out[name].append(((time.perf_counter() - wall0) / n, (time.process_time() - cpu0) / n))
    assert breaker.snapshot().state is distbreaker.State.CLOSED
    breaker.close()
    before.close()
    raw.close()
    r.close()
    return out


# -- asyncio ------------------------------------------------------------------------------------
async def _async_rows(url: str, n: int, rounds: int, prefix: str) -> dict[str, list[tuple[float, float]]]:
    host, port = _address(url)
    r = dba.connect(url, timeout=2.0)
    sha = await r.script_load(TRIVIAL)
    reader, writer = await asyncio.open_connection(host, port)
    trivial = b"*3\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n0\r\n" % sha.encode()
    breaker = dba.Breaker(
        "afloor", r, BreakerConfig(minimum_calls=10**9, redis_timeout=2.0), prefix=prefix, listen=False
    )

    async def noop() -> None:
        return None

    await breaker.call(noop)
    record = _record_bytes(breaker)

    async def raw_call() -> None:
        writer.write(trivial)
        await reader.read(65536)

    async def raw_record() -> None:
        writer.write(record)
        await reader.read(65536)

    async def redis_py() -> None:
        await r.evalsha(sha, 0)

    async def closed() -> None:
        await breaker.call(noop)

    fns: dict[str, Callable[[], Awaitable[Any]]] = {
        "araw": raw_call,
        "araw_record": raw_record,
        "aredis_py": redis_py,
        "aclosed": closed,
    }
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(max(10, n // 10)):
            await fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                await fn()
            out[name].append(((time.perf_counter() - wall0) / n, (time.process_time() - cpu0) / n))
    await breaker.close()
    writer.close()
    await r.aclose()
    return out


def async_rows(url: str, n: int, rounds: int, prefix: str) -> dict[str, list[tuple[float, float]]]:
    return asyncio.run(_async_rows(url, n, rounds, prefix))


# -- where the µs go ----------------------------------------------------------------------------
def breakdown(url: str, n: int, prefix: str) -> dict[str, Any]:
    """The closed path's Python work without I/O (the lane answers from memory with the reply
    Redis gave), its wall/CPU per call, and a profile of it: the top functions by own time."""
    r = connect(url, timeout=2.0)
    breaker = Breaker(
        "floor-prof", r, BreakerConfig(minimum_calls=10**9, redis_timeout=2.0), prefix=prefix, listen=False
    )
    breaker.call(int)
    record = _record_bytes(breaker)
    host, port = _address(url)
    with socket.create_connection((host, port)) as s:
        s.sendall(record)
        reply_bytes = s.recv(65536)
    from distbreaker._resp import reader as make_reader

    rd = make_reader()

    class Canned:  # the lane, answering from memory: the parse stays, the round trip goes
        on = True

        def run(self, request: Any) -> Any:
            rd.feed(reply_bytes)
            return rd.gets()

    lane = swap_lane(breaker, Canned())

    def noop() -> None:
        return None

    for _ in range(n // 10):
        breaker.call(noop)
    samples = []
    for _ in range(3):
        cpu0 = time.process_time()
        for _ in range(n):
            breaker.call(noop)
        samples.append((time.process_time() - cpu0) / n)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        breaker.call(noop)
    profile.disable()
    swap_lane(breaker, lane)
    breaker.close()
    r.close()
    return {"python_cpu": statistics.median(samples), **_top(profile, n)}


def _top(profile: cProfile.Profile, n: int) -> dict[str, Any]:
    """The functions of a profile of `n` calls by own time per call (µs), the first 12."""
    stats = pstats.Stats(profile)
    rows = []
    total = 0.0
    for (filename, line, func), (_cc, calls, tottime, _cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        rows.append((tottime / n * 1e6, calls / n, f"{Path(filename).name}:{line}({func})"))
    rows.sort(reverse=True)
    return {"profile": rows[:12], "profile_total": total / n * 1e6}


async def _abreakdown(url: str, n: int, prefix: str) -> dict[str, Any]:
    """`breakdown` for asyncio: the lane's request answers with a future already done (the
    reply Redis gave), so the call's Python work runs without I/O or a loop turn."""
    r = dba.connect(url, timeout=2.0)
    breaker = dba.Breaker(
        "afloor-prof", r, BreakerConfig(minimum_calls=10**9, redis_timeout=2.0), prefix=prefix, listen=False
    )

    async def noop() -> None:
        return None

    await breaker.call(noop)
    core = breaker._core
    reply = await breaker._run(core.record((core.view.generation, ""), Outcome.SUCCESS, 0.0))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()

    class Canned:  # the lane, answering from memory
        def request(self, request: Any) -> Any:
            future = loop.create_future()
            future.set_result(reply)
            return future

    lane = swap_lane(breaker, Canned())
    for _ in range(n // 10):
        await breaker.call(noop)
    samples = []
    for _ in range(3):
        cpu0 = time.process_time()
        for _ in range(n):
            await breaker.call(noop)
        samples.append((time.process_time() - cpu0) / n)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        await breaker.call(noop)
    profile.disable()
    swap_lane(breaker, lane)
    await breaker.close()
    await r.aclose()
    return {"python_cpu": statistics.median(samples), **_top(profile, n)}


# -- one install: a process ---------------------------------------------------------------------
def rows_of(url: str, n: int) -> dict[str, list[tuple[float, float]]]:
    """Every row's (wall, cpu) per call, one round, in this process's install."""
    prefix = f"floor-{uuid.uuid4().hex[:8]}"
    rows = sync_rows(url, n, 1, prefix)
    rows.update(async_rows(url, n, 1, prefix))
    _forget(url, prefix)
    return rows


def profiles_of(url: str, n: int) -> dict[str, Any]:
    """The breakdowns (Python work without I/O, and its profile), sync and asyncio."""
    prefix = f"floor-{uuid.uuid4().hex[:8]}"
    out = {
        "hiredis": HIREDIS,
        "breakdown": breakdown(url, n, prefix),
        "abreakdown": asyncio.run(_abreakdown(url, n, prefix)),
    }
    _forget(url, prefix)
    return out


def _forget(url: str, prefix: str) -> None:
    r = connect(url, timeout=2.0)
    keys = r.keys(f"{prefix}:*")
    if keys:
        r.delete(*keys)
    r.close()


_HIDE_HIREDIS = (
    "import sys, runpy; sys.modules['hiredis'] = None; "  # `import hiredis` raises ImportError
    "sys.argv = [sys.argv[1], *sys.argv[2:]]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def without_hiredis(url: str, n: int, what: str) -> Any:
    """`rows_of` (one round) or `profiles_of` (`what`) in a subprocess where hiredis cannot be
    imported."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _HIDE_HIREDIS, __file__, "--child", what, "--url", url, "-n", str(n)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the no-hiredis run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interleaved(url: str, n: int, rounds: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both installs, their rounds interleaved (this process one round, then a subprocess without
    hiredis one round, ...), so that the machine's load hits them alike; each row the median of
    its rounds. Then each install's profiles."""
    mine: dict[str, list[tuple[float, float]]] = {}
    other: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for name, v in rows_of(url, n).items():
            mine.setdefault(name, []).extend(v)
        for name, v in without_hiredis(url, n, "rows").items():
            other.setdefault(name, []).extend(tuple(x) for x in v)

    def medians(rows: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, float]]:
        return {
            name: {"wall": statistics.median(w for w, _ in v), "cpu": statistics.median(c for _, c in v)}
            for name, v in rows.items()
        }

    return (
        {**profiles_of(url, n), "rows": medians(mine)},
        {**without_hiredis(url, n, "profiles"), "rows": medians(other)},
    )


# -- printing -----------------------------------------------------------------------------------
def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def table(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    head = "| path |"
    rule = "|---|"
    for install, _ in runs:
        head += f" wall, {install} | × | worker CPU, {install} | × |"
        rule += "---:|---:|---:|---:|"
    lines = [head, rule]
    for floor_name, names in (
        ("raw", ("raw", "raw_record", "redis_py", "closed", "closed_drive")),
        ("araw", ("araw", "araw_record", "aredis_py", "aclosed")),
    ):
        for name in names:
            line = f"| {ROWS[name]} |"
            for _, result in runs:
                row, floor = result["rows"][name], result["rows"][floor_name]
                line += (
                    f" {_us(row['wall'])} | {row['wall'] / floor['wall']:.2f}× |"
                    f" {_us(row['cpu'])} | {row['cpu'] / floor['cpu']:.2f}× |"
                )
            lines.append(line)
    return lines


def goals(default: dict[str, Any], other: dict[str, Any]) -> tuple[list[str], bool]:
    rows = default["rows"]
    checks = []

    def check(what: str, value: float, limit: float) -> None:
        checks.append((what, value, limit, value <= limit))

    check("sync closed wall ÷ raw socket wall", rows["closed"]["wall"] / rows["raw"]["wall"], SYNC_WALL)
    check("sync closed CPU ÷ raw socket CPU", rows["closed"]["cpu"] / rows["raw"]["cpu"], SYNC_CPU)
    check("asyncio closed wall ÷ raw stream wall", rows["aclosed"]["wall"] / rows["araw"]["wall"], ASYNC_WALL)
    # The two installs' rounds are interleaved (`interleaved`): their figures compare directly.
    for world, name in (("sync", "closed"), ("asyncio", "aclosed")):
        for kind in ("wall", "cpu"):
            mine = rows[name][kind]
            best = min(mine, other["rows"][name][kind])
            check(f"default install ÷ best install, {world} closed {kind}", mine / best, DEFAULT_VS_BEST)
    lines = ["| goal (issue 19) | measured | limit | met |", "|---|---:|---:|---|"]
    lines += [f"| {w} | {v:.2f}× | ≤ {limit:.2f}× | {'PASS' if ok else '**MISS**'} |" for w, v, limit, ok in checks]
    return lines, all(ok for *_, ok in checks)


def client_side(result: dict[str, Any]) -> list[str]:
    """The breaker against the raw round trip of its own record EVALSHA (no goal: record.lua's
    server time, issue 15's, is out of these ratios)."""
    rows = result["rows"]
    lines = ["| client side (no goal of its own) | wall | worker CPU |", "|---|---:|---:|"]
    for label, name, floor in (
        ("sync closed ÷ raw socket, the record script", "closed", "raw_record"),
        ("asyncio closed ÷ raw stream, the record script", "aclosed", "araw_record"),
    ):
        wall, cpu = rows[name]["wall"] / rows[floor]["wall"], rows[name]["cpu"] / rows[floor]["cpu"]
        lines.append(f"| {label} | {wall:.2f}× | {cpu:.2f}× |")
    return lines


def where(install: str, result: dict[str, Any], world: str = "sync") -> list[str]:
    rows = result["rows"]
    raw, record, closed, b = (
        ("raw", "raw_record", "closed", result["breakdown"])
        if world == "sync"
        else ("araw", "araw_record", "aclosed", result["abreakdown"])
    )
    floor = "raw round trip" if world == "sync" else "raw stream round trip"

    def part(label: str, hi: str, lo: str | None) -> str:
        wall = rows[hi]["wall"] - (rows[lo]["wall"] if lo else 0.0)
        cpu = rows[hi]["cpu"] - (rows[lo]["cpu"] if lo else 0.0)
        return f"| {label} | {wall * 1e6:+.1f} µs | {cpu * 1e6:+.1f} µs |"

    lines = [
        f"Where the {world} closed path's µs go ({install}; differences between rows of this run):",
        "",
        "| part | wall | worker CPU |",
        "|---|---:|---:|",
        part(f"{floor} of `return 1` (the floor)", raw, None),
        part("record.lua's server time and bytes (raw record − raw)", record, raw),
        part(f"the breaker over the {floor} of its record (closed − raw record)", closed, record),
        f"| of which the breaker's Python work with no I/O (measured alone) | | {b['python_cpu'] * 1e6:.1f} µs |",
        "",
        f"Profile of that Python work ({world}, {install}; cProfile own time per call, "
        f"{b['profile_total']:.1f} µs in all under the profiler, which inflates it):",
        "",
        "| function | own µs per call | calls per call |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{name}` | {us:.2f} | {calls:.1f} |" for us, calls, name in b["profile"]]
    return lines


def machine() -> str:
    load = "load average %.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return f"{os.cpu_count()} CPUs, {load}; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("-n", type=int, default=10000, help="calls per row per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 calls, 1 round")
    parser.add_argument(
        "--profile", action="store_true", help="print where the µs go and the profiles even when every goal is met"
    )
    parser.add_argument("--child", choices=("rows", "profiles"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.n, args.rounds = 300, 1
    if args.child == "rows":
        print(json.dumps(rows_of(args.url, args.n)))
        return
    if args.child == "profiles":
        print(json.dumps(profiles_of(args.url, args.n)))
        return
    with server(args.url) as url:
        probe = connect(url, timeout=2.0)
        info = probe.info("server")
        probe.close()
        version = f"Valkey {info['valkey_version']}" if info.get("valkey_version") else f"Redis {info['redis_version']}"
        start = machine()
        default, bare = interleaved(url, args.n, args.rounds)
    hiredis_version = importlib.metadata.version("hiredis") if HIREDIS else "not installed"
    print(
        f"Machine: {start} at start; {version} on loopback; redis-py {importlib.metadata.version('redis')}, "
        f"hiredis {hiredis_version}; distbreaker {distbreaker.__version__}; {args.n} calls per row, "
        f"median of {args.rounds} rounds, the two installs' rounds interleaved\n"
    )
    default_name = "default (hiredis)" if default["hiredis"] else "default (no hiredis)"
    runs = [(default_name, default), ("hiredis hidden (our parser)", bare)]
    print("\n".join(table(runs)))
    print()
    lines, met = goals(default, bare)
    print("\n".join(lines))
    print()
    print("\n".join(client_side(default)))
    if not met or args.profile:
        for world in ("sync", "asyncio"):
            for install, result in runs:
                print()
                print("\n".join(where(install, result, world)))


if __name__ == "__main__":
    main()
