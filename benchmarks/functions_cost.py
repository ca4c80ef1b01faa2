"""FCALL (Redis Functions, the worker role) against EVALSHA (the default) on the record closed path.

Server side: INFO commandstats usec_per_call of `n` record calls through each, and of `return 1`
as a function and as a script, all in one run (ratios to the matching `return 1`, and FCALL ÷
EVALSHA). Client side: `Breaker.call(noop)` on the closed path through each, interleaved rounds,
median µs per call. Timing is noisy on a shared machine: compare the ratios of one run.

    PYTHONPATH=$PWD python benchmarks/functions_cost.py [--url redis://...] [-n 10000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _server import server

from distbreaker import Breaker, BreakerConfig, connect
from distbreaker._functions import LIBRARY_NAME

ONE_LIB = "#!lua name=distbreaker_bench_one\nredis.register_function('distbreaker_bench_one', function() return 1 end)"


def usec(r: Any, command: str) -> float:
    stats = r.info("commandstats").get(f"cmdstat_{command}")
    return float(stats["usec_per_call"]) if stats else float("nan")


def server_side(url: str, n: int) -> dict[str, float]:
    r = connect(url, timeout=2)
    r.execute_command("FUNCTION", "LOAD", "REPLACE", ONE_LIB)
    sha = r.script_load("return 1")
    out = {}
    for name, functions in (("evalsha", False), ("fcall", True)):
        client = connect(url, timeout=2, functions=functions)
        b = Breaker(f"bench-{name}", client, BreakerConfig(redis_timeout=2), prefix="bench-fn", listen=False)
        b.call(int, 0)  # loads the script / library, sends the config
        r.config_resetstat()
        for _ in range(n):
            b.call(int, 0)
        out[f"record {name}"] = usec(r, name)
        b.close()
        client.close()
    r.config_resetstat()
    for _ in range(n):
        r.execute_command("EVALSHA", sha, 0)
    out["return 1 evalsha"] = usec(r, "evalsha")
    r.config_resetstat()
    for _ in range(n):
        r.execute_command("FCALL", "distbreaker_bench_one", 0)
    out["return 1 fcall"] = usec(r, "fcall")
    r.execute_command("FUNCTION", "DELETE", "distbreaker_bench_one")
    r.delete("bench-fn:{bench-evalsha}", "bench-fn:{bench-fcall}")
    r.close()
    return out


def client_side(url: str, n: int, rounds: int) -> dict[str, float]:
    breakers = {}
    for name, functions in (("evalsha", False), ("fcall", True)):
        client = connect(url, timeout=2, functions=functions)
        breakers[name] = Breaker(
            f"bench-c-{name}", client, BreakerConfig(redis_timeout=2), prefix="bench-fn", listen=False
        )
        breakers[name].call(int, 0)
    samples: dict[str, list[float]] = {name: [] for name in breakers}
    for _ in range(rounds):
        for name, b in breakers.items():
            start = time.perf_counter()
            for _ in range(n):
                b.call(int, 0)
            samples[name].append((time.perf_counter() - start) / n * 1e6)
    for b in breakers.values():
        b.close()
    return {name: statistics.median(v) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("-n", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 500 calls, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.n, args.rounds = 500, 1
    with server(args.url) as url:
        probe = connect(url, timeout=2)
        info = probe.info("server")
        probe.close()
        version = info.get("valkey_version") and f"Valkey {info['valkey_version']}" or f"Redis {info['redis_version']}"
        s = server_side(url, args.n)
        c = client_side(url, args.n // 5, args.rounds)
    print(f"{version}, library {LIBRARY_NAME}, {args.n} calls each")
    print("| server µs per call (INFO commandstats) | EVALSHA | FCALL | FCALL ÷ EVALSHA |")
    print("|---|---|---|---|")
    print(
        f"| `return 1` | {s['return 1 evalsha']:.2f} | {s['return 1 fcall']:.2f} | "
        f"{s['return 1 fcall'] / s['return 1 evalsha']:.2f}× |"
    )
    print(
        f"| record, closed path | {s['record evalsha']:.2f} | {s['record fcall']:.2f} | "
        f"{s['record fcall'] / s['record evalsha']:.2f}× |"
    )
    print(
        f"| record ÷ its `return 1` | {s['record evalsha'] / s['return 1 evalsha']:.1f}× | "
        f"{s['record fcall'] / s['return 1 fcall']:.1f}× | |"
    )
    print(
        f"| client: Breaker.call(noop), median of {args.rounds} rounds, µs | {c['evalsha']:.1f} | "
        f"{c['fcall']:.1f} | {c['fcall'] / c['evalsha']:.2f}× |"
    )


if __name__ == "__main__":
    main()
