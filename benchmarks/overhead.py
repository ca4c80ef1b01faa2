"""Per-call cost of a protected no-op, against a bare EVALSHA round trip, in one run.

Prints a markdown table: closed path (sync, one record per call), rejected (open, cached),
and the bare round trip of a trivial one-key script through the same redis-py client.

    python benchmarks/overhead.py [--url redis://127.0.0.1:PORT/0] [--calls 20000]

Without --url it starts a private server from the same binaries the tests use.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from _server import server  # benchmarks/_server.py

import distbreaker
from distbreaker import Breaker, BreakerConfig, CircuitOpenError, connect

TRIVIAL = "return 1"


def per_call(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Median over `repeats` runs of the mean seconds per call."""
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url")
    ap.add_argument("--calls", type=int, default=20000)
    a = ap.parse_args()
    with server(a.url) as url:
        r = connect(url, timeout=1.0)
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        sha = r.script_load(TRIVIAL)
        key = f"{prefix}:{{raw}}"

        def bare() -> object:
            return r.evalsha(sha, 1, key)

        closed = Breaker("closed", r, BreakerConfig(minimum_calls=10**9), prefix=prefix)
        noop = lambda: None  # noqa: E731
        opened = Breaker("opened", r, BreakerConfig(open_duration=3600, max_open_duration=3600), prefix=prefix)
        opened.trip(for_=3600, reason="benchmark")
        opened.snapshot()

        def rejected() -> None:
            try:
                opened.call(noop)
            except CircuitOpenError:
                pass

        n = a.calls
        per_call(bare, n // 10, 1)  # warm up
        per_call(lambda: closed.call(noop), n // 10, 1)
        t_bare = per_call(bare, n)
        t_closed = per_call(lambda: closed.call(noop), n)
        t_rej = per_call(rejected, n * 5)
        info = r.info("server")
        name = info.get("server_name", "redis")
        version = info.get("valkey_version") or info.get("redis_version")
        print(
            f"distbreaker {distbreaker.__version__}, {name} {version}, loopback, "
            f"{n} calls x 5 runs (median), hiredis={'yes' if _hiredis() else 'no'}\n"
        )
        print("| path | per call | vs bare EVALSHA |")
        print("|---|---:|---:|")
        print(f"| bare EVALSHA round trip (`return 1`) | {t_bare * 1e6:.1f} µs | 1.00× |")
        print(f"| protected no-op, closed (sync, 1 record) | {t_closed * 1e6:.1f} µs | {t_closed / t_bare:.2f}× |")
        print(f"| rejected call, open (cached, no round trip) | {t_rej * 1e6:.2f} µs | {t_rej / t_bare:.3f}× |")
        closed.close()
        opened.close()
        r.close()


def _hiredis() -> bool:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
