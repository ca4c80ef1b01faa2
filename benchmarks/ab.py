"""This checkout's call path against another checkout's, interleaved in one run.

Each round starts one child process per tree (its `distbreaker` first on PYTHONPATH), which
measures on the same server: a bare redis-py EVALSHA of `return 1` (the round trip), a closed
breaker's call of a no-op (one record), and a rejection by an open breaker (cached state); the
medians over the rounds are printed with the closed path's ratio to the round trip. Issue 13
asks the closed path and the rejection to be no slower than 0.1's (a62a36b):

    git worktree add /tmp/wt-a62 a62a36b
    python benchmarks/ab.py --other /tmp/wt-a62 [--url redis://127.0.0.1:PORT/0] [--rounds 5]

Without --url a private loopback server is started (the binaries the tests use).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, statistics, sys, time, uuid
import distbreaker
from distbreaker import Breaker, BreakerConfig, connect
url, n = sys.argv[1], int(sys.argv[2])
r = connect(url)
prefix = "ab-" + uuid.uuid4().hex[:8]
one = r.script_load("return 1")
closed = Breaker("ab-closed", r, BreakerConfig(minimum_calls=10**9, redis_timeout=2.0), prefix=prefix, listen=False)
tripped = Breaker("ab-open", r, BreakerConfig(), prefix=prefix, listen=False)
closed.call(int)
tripped.trip(reason="ab")
def noop(): return None
def bare():
    for _ in range(n): r.evalsha(one, 0)
def closed_calls():
    for _ in range(n): closed.call(noop)
def rejections():
    for _ in range(n * 10):
        try: tripped.call(noop)
        except distbreaker.CircuitOpenError: pass
out = {"file": distbreaker.__file__}
for name, f, k in (("bare", bare, n), ("closed", closed_calls, n), ("rejected", rejections, n * 10)):
    f()
    times = []
    for _ in range(5):
        t0 = time.perf_counter(); f(); times.append((time.perf_counter() - t0) / k * 1e6)
    out[name] = statistics.median(times)
print(json.dumps(out))
"""


def measure(url: str, trees: dict[str, Path], rounds: int, n: int) -> dict[str, list[dict[str, float]]]:
    """The children's results per tree, the trees taking turns in every round."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, path in trees.items():
            env = dict(os.environ, PYTHONPATH=str(path))
            # cwd outside both checkouts: `python -c` puts the cwd first on sys.path
            done = subprocess.run(
                [sys.executable, "-c", CHILD, url, str(n)],
                env=env,
                cwd="/",
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode:
                raise SystemExit(f"{name}: {done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            if not row.pop("file").startswith(str(path)):
                raise SystemExit(f"{name}: the child did not import {path}'s distbreaker")
            results[name].append(row)
    return results


def table(results: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| tree | bare EVALSHA µs | closed µs | closed ÷ bare | rejected µs |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        bare = statistics.median(r["bare"] for r in rows)
        closed = statistics.median(r["closed"] for r in rows)
        ratio = statistics.median(r["closed"] / r["bare"] for r in rows)
        rejected = statistics.median(r["rejected"] for r in rows)
        lines.append(f"| {name} | {bare:.1f} | {closed:.1f} | {ratio:.2f}× | {rejected:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, type=Path, help="the other checkout (its distbreaker/ at the top)")
    ap.add_argument("--url", help="an existing server (default: a private loopback one)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=2000, help="closed calls per sample (rejections: 10x)")
    args = ap.parse_args()
    trees = {"this checkout": HERE.parent, args.other.name: args.other.resolve()}
    from _server import server

    with server(args.url) as url:
        print(table(measure(url, trees, args.rounds, args.n)))


if __name__ == "__main__":
    main()
