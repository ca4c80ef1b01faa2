"""What a fleet-wide bulkhead costs: client and server side, against one bare round trip.

Client side: median µs per call over interleaved rounds of a bare ``EVALSHA`` of ``return 1``
(one round trip), ``Breaker.call(noop)`` on the closed path (one round trip: the record),
``Bulkhead.call(noop)`` (two: acquire and release) and a breaker with the bulkhead inside
(``breaker.protect(bulkhead=...)``: three). Server side: INFO commandstats usec_per_call of the
bulkhead script (acquire and release, alternating) and of ``return 1``, in the same run.
Timing is noisy on a shared machine: compare the ratios of one run.

    PYTHONPATH=$PWD python benchmarks/bulkhead.py [--url redis://...] [-n 2000] [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _server import server

from distbreaker import Breaker, BreakerConfig, Bulkhead, connect

PREFIX = f"bench-bulkhead-{os.getpid()}"


def noop() -> None:
    return None


def usec(r: Any, command: str) -> float:
    stats = r.info("commandstats").get(f"cmdstat_{command}")
    return float(stats["usec_per_call"]) if stats else float("nan")


def server_side(url: str, n: int) -> dict[str, float]:
    r = connect(url, timeout=2)
    sha = r.script_load("return 1")
    bh = Bulkhead("server", r, max_concurrent=10, prefix=PREFIX)
    bh.call(noop)  # loads the script
    r.config_resetstat()
    for _ in range(n):
        bh.call(noop)
    out = {"bulkhead script (acquire/release)": usec(r, "evalsha")}
    r.config_resetstat()
    for _ in range(n):
        r.execute_command("EVALSHA", sha, 0)
    out["return 1"] = usec(r, "evalsha")
    r.delete(f"{PREFIX}:{{server}}:bulkhead")
    r.close()
    return out


def client_side(url: str, n: int, rounds: int) -> dict[str, float]:
    r = connect(url, timeout=2)
    sha = r.script_load("return 1")
    breaker = Breaker("client", r, BreakerConfig(redis_timeout=2), prefix=PREFIX, listen=False)
    bh = Bulkhead("client", r, max_concurrent=10, prefix=PREFIX)
    both = breaker.protect(bulkhead=bh)(noop)
    paths: dict[str, Callable[[], Any]] = {
        "EVALSHA return 1 (1 round trip)": lambda: r.execute_command("EVALSHA", sha, 0),
        "Breaker.call(noop) (1)": lambda: breaker.call(noop),
        "Bulkhead.call(noop) (2)": lambda: bh.call(noop),
        "breaker.protect(bulkhead=...)(noop) (3)": both,
    }
    for fn in paths.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n * 1e6)
    breaker.close()
    r.delete(f"{PREFIX}:{{client}}", f"{PREFIX}:{{client}}:events", f"{PREFIX}:{{client}}:bulkhead")
    r.close()
    return {name: statistics.median(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="an existing server (default: a private one)")
    parser.add_argument("-n", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a smoke run (n=200, 3 rounds)")
    args = parser.parse_args()
    n, rounds = (200, 3) if args.quick else (args.n, args.rounds)
    with server(args.url) as url:
        client = client_side(url, n, rounds)
        srv = server_side(url, n * 2)
    base = client["EVALSHA return 1 (1 round trip)"]
    print(f"Client side: median of {rounds} interleaved rounds of {n} calls")
    print()
    print("| path | µs per call | ÷ one round trip |")
    print("|---|---|---|")
    for name, us in client.items():
        print(f"| {name} | {us:.1f} | {us / base:.2f}× |")
    print()
    print(f"Server side: INFO commandstats, {n * 2} calls each")
    print()
    print("| script | µs per call (server) | ÷ return 1 |")
    print("|---|---|---|")
    for name, us in srv.items():
        print(f"| {name} | {us:.2f} | {us / srv['return 1']:.2f}× |")


if __name__ == "__main__":
    main()
