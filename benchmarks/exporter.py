"""Scrape time of `distbreaker.exporter` for fleets of 1,000 and 10,000 breakers.

Each breaker is made by the scripts (a `Breaker` call; every tenth one tripped, then its
failures keep it open), so the hashes, rings and event streams are real. Measured: one full
scrape (SCAN + pipelined HMGET/XRANGE + building the Prometheus text), median of the runs,
and, in the same run, reading every breaker with `Admin.status` (read.lua, one script per
breaker) as the ratio the pipelined plain reads save.

    python benchmarks/exporter.py [--url redis://...] [--sizes 1000,10000] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _server import server  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from distbreaker import Admin, Breaker, BreakerConfig, connect  # noqa: E402
from distbreaker.exporter import ExporterCollector, make_registry  # noqa: E402


def fill(url: str, prefix: str, n: int) -> None:
    client = connect(url)
    config = BreakerConfig(minimum_calls=2)
    for i in range(n):
        b = Breaker(f"svc-{i:05d}", client, config, prefix=prefix, listen=False)
        b.call(lambda: None)
        if i % 10 == 0:
            for _ in range(2):
                try:
                    b.call(lambda: 1 / 0)
                except Exception:
                    pass
        b.close()
    client.close()


def timed(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="Redis URL (default: a private server)")
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="100 breakers, 2 runs (a smoke test)")
    args = ap.parse_args()
    sizes = [100] if args.quick else [int(s) for s in args.sizes.split(",")]
    runs = 2 if args.quick else args.runs
    rows = []
    with server(args.url) as url:
        for n in sizes:
            prefix = f"bench-exp-{uuid.uuid4().hex[:8]}"
            fill(url, prefix, n)
            client = connect(url, timeout=30)
            registry = make_registry(client, prefix=prefix)
            page = generate_latest(registry)
            collector = ExporterCollector(client, prefix=prefix)
            before = collector.round_trips
            collector.scrape()
            trips = collector.round_trips - before
            scrape = timed(lambda: generate_latest(registry), runs)
            admin = Admin(client, prefix=prefix)
            per_breaker = timed(lambda: [admin.status(s) for s in admin.list()], 1 if n > 1000 else runs)
            rows.append((n, scrape, trips, len(page), per_breaker))
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for at in range(0, len(keys), 1000):
                client.delete(*keys[at : at + 1000])
            client.close()
    print(
        "| breakers | scrape (median) | round trips (SCAN pages + pipelines) | page size | "
        "Admin.status per breaker (read.lua each) | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for n, scrape, trips, size, per in rows:
        print(
            f"| {n:,} | {scrape * 1000:.0f} ms | {trips} | {size / 1024:.0f} KiB | {per * 1000:.0f} ms | "
            f"{per / scrape:.1f}x |"
        )


if __name__ == "__main__":
    main()
