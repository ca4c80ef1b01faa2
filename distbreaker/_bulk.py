"""Breakers read with plain pipelined commands, no script: the one decoding of a breaker's
hash fields, shared by the exporter (`distbreaker.exporter`), `Admin.inspect_all` (what
``distbreaker status`` runs over every breaker) and the operator's read of one breaker
(`Admin.status` / `config` / `inspect`, sync and asyncio: ``distbreaker status <svc>``,
``config <svc>``).

Per breaker one ``HMGET`` of `FIELDS` and of the ring slots of its window, in pipelines of a few
hundred keys with one ``TIME`` each; the scripts' lazy steps (docs/state-machine.md, "Steps")
are applied here at that server time, as read.lua would apply them, but nothing is written:

- a forced state past its expiry is ``closed`` (the window kept), an ``open`` breaker past
  ``open_until`` is ``half_open`` (no lease, no success yet), each a transition of the next
  generation at the time of the read;
- window buckets that have expired no longer count (the whole window when it has).

`reply` returns what read.lua would return (the `_reply.FIELDS` layout), so that a breaker read
here decodes through the same `decode_snapshot` as one read by the script.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ._model import Snapshot, State, Transition
from ._reply import FIELDS as REPLY_FIELDS
from ._schema import DEFAULT_ARGV
from ._schema import FIELDS as CONFIG_FIELDS

__all__ = [
    "BreakerRow",
    "Corrupt",
    "FIELDS",
    "Read",
    "expired_slots",
    "show",
    "snapshot",
    "hmget",
    "layout",
    "read_hashes",
    "read_row",
    "reply",
    "run",
    "arun",
    "time_ms",
]

# Hash fields read per breaker (docs/state-machine.md, "Hash fields"), then the ring r0..r<n-1>
FIELDS = (
    "st", "g", "ou", "fu", "fr", "fa", "oc", "be", "tc", "tf", "ts", "c0", "f0", "s0", "cx", "hl", "hs",
    "lt", "lf", "lc", "la", "cfg", "fp", "ov", "cc", "pf", "pt", "qb", "qn", "qr", "qm", "wc", "qc", "qs",
)  # fmt: skip
_INDEX = {f.name: i for i, f in enumerate(CONFIG_FIELDS)}
WINDOW, BUCKETS, HALF_OPEN_MAX = _INDEX["window"], _INDEX["buckets"], _INDEX["half_open_max_calls"]
DEFAULT_BUCKETS = int(DEFAULT_ARGV[BUCKETS])
DEFAULT_BUCKET_MS = int(DEFAULT_ARGV[WINDOW]) // DEFAULT_BUCKETS
DEFAULT_RATE, DEFAULT_MINIMUM = float(DEFAULT_ARGV[_INDEX["failure_rate_threshold"]]), int(DEFAULT_ARGV[1])
# the numeric hot fields a script refuses (CORRUPT) when present but not numbers (_lib.lua, BAD)
_NUMERIC = ("g", "ou", "be", "tc", "tf", "ts", "c0", "f0", "s0", "cx", "fu", "oc")
_READ_NUMBERS = (*_NUMERIC, "lt", "hs", "pt")
_BUCKET = re.compile(r"(\d+):(\d+):(\d+)")
_LEASE = re.compile(r"([^=;]+)=(\d+)")
_STATES = {s.value: s for s in State}
_STATE_NAMES: dict[Any, str] = {**{s.value: s.value for s in State}, **{s.value.encode(): s.value for s in State}}
_READ_TEXTS = ("fr", "fa", "lc", "lf", "la", "hl", "fp", "ov", "cc", "cfg", "pf")
_FORCED = ("forced_open", "disabled")
_HOT_CONFIG = ("qb", "qn", "qr", "qm", "qc", "qs")  # the stored hot config (_lib.lua hot_config)


# A hash field's name as read (bytes, or str from a client that decodes) -> its key in a `Read`:
# the name (str) for a field, the slot (int) for a ring slot r0..r999 (buckets <= 1000)
_KEYS: dict[Any, str | int] = {}
for _name in (*FIELDS, "oa", "hn", "xr"):
    _KEYS[_name.encode()] = _KEYS[_name] = _name
for _i in range(1000):
    _KEYS[f"r{_i}".encode()] = _KEYS[f"r{_i}"] = _i


class Corrupt(ValueError):
    """A breaker hash whose fields no script could have written (the message says which)."""


def show(value: Any) -> str:
    """A reply value as text, whatever bytes it holds."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def _number(fields: Mapping[str, Any], name: str, default: float = 0) -> float:
    value = fields.get(name)
    if value is None:
        return default
    try:
        return int(value)  # the common case: an integer the scripts wrote
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        raise Corrupt(f"{name} is {show(value)!r}, not a number") from None
    if not math.isfinite(number):
        raise Corrupt(f"{name} is {show(value)!r}, not a number")
    return number


def _int(fields: Mapping[str, Any], name: str, default: int = 0) -> int:
    return int(_number(fields, name, default))


def _config(fields: Mapping[str, Any]) -> list[str] | None:
    """The values of the stored config in force (`cfg`: 13 when 0.1 stored it, else one per
    schema field), or None when none is stored."""
    raw = fields.get("cfg")
    return None if raw is None else list(_config_values(raw))


@functools.lru_cache(maxsize=256)
def _config_values(raw: Any) -> tuple[str, ...]:
    """`cfg` split and checked, once per distinct value (a fleet shares a few configs)."""
    values = show(raw).split(",")
    try:
        if len(values) not in (13, len(CONFIG_FIELDS)) or not all(math.isfinite(float(v)) for v in values):
            raise ValueError
    except ValueError:
        raise Corrupt(f"cfg is {show(raw)[:60]!r}, not a config") from None
    return tuple(values)


def layout(fields: Mapping[str, Any]) -> tuple[int, int]:
    """(bucket_ms, buckets) of a breaker's window: the stored hot config (`qb`, `qn`), else the
    stored config (`cfg`), else the defaults' (as the scripts choose)."""
    get = fields.get
    return _layout(get("qb"), get("qn"), get("cfg"))


@functools.lru_cache(maxsize=256)
def _layout(qb: Any, qn: Any, cfg: Any) -> tuple[int, int]:
    """`layout` of these stored values, worked out once per distinct layout (a fleet shares a
    few); a corrupt one raises each time (lru_cache keeps no exception)."""
    fields = {"qb": qb, "qn": qn, "cfg": cfg}
    if qb is not None and qn is not None:
        bucket_ms, buckets = _int(fields, "qb"), _int(fields, "qn")
    else:
        values = _config(fields)
        if values is None:
            return DEFAULT_BUCKET_MS, DEFAULT_BUCKETS
        buckets = int(float(values[BUCKETS]))
        bucket_ms = int(float(values[WINDOW]) // buckets) if buckets >= 1 else 0
    if bucket_ms < 1 or not 1 <= buckets <= 1000:
        raise Corrupt(f"bucket layout {bucket_ms} ms x {buckets}")
    return bucket_ms, buckets


def expired_slots(fields: Mapping[str, Any], now_ms: int) -> list[int] | None:
    """Ring slots whose buckets have expired at `now_ms` and are still counted in the totals,
    or None when the whole window has expired."""
    if fields.get("be") is None:
        return []
    bucket_ms, buckets = layout(fields)
    epoch, be = now_ms // bucket_ms, _int(fields, "be")
    if epoch <= be:
        return []
    if epoch - be >= buckets:
        return None
    return [e % buckets for e in range(be - buckets + 1, epoch - buckets + 1)]


def _window(
    fields: Mapping[str, Any], ring: Mapping[Any, Any], now_ms: int, be: int, calls: int, failures: int, slow: int
) -> tuple[int, int, int]:
    """(calls, failures, slow) in the window at `now_ms`, from the totals of a window whose
    current bucket is `be`: the buckets expired since then no longer count."""
    bucket_ms, buckets = layout(fields)
    epoch = now_ms // bucket_ms
    if epoch <= be:
        return calls, failures, slow
    if epoch - be >= buckets:
        return 0, 0, 0
    for e in range(be - buckets + 1, epoch - buckets + 1):
        value = ring.get(e % buckets)
        if value is not None:
            match = _BUCKET.fullmatch(show(value))
            if match is None:
                raise Corrupt(f"r{e % buckets} is {show(value)!r}, not a bucket")
            c, f, s = match.groups()
            calls, failures, slow = calls - int(c), failures - int(f), slow - int(s)
    return calls, failures, slow


def _failing_clients(fields: Mapping[str, Any], now_ms: int) -> int:
    """Distinct clients with a failed or slow outcome in the window at `now_ms` (`wc`:
    'client=epoch;...'), counted as _lib.lua's failing_clients() does after rotation."""
    raw = fields.get("wc")
    if raw is None:
        return 0
    bucket_ms, buckets = layout(fields)
    epoch = now_ms // bucket_ms
    be = fields.get("be")
    current = epoch if be is None else max(_int(fields, "be"), epoch)
    return sum(1 for _, e in _LEASE.findall(show(raw)) if int(e) > current - buckets)


def _texts(fields: Mapping[Any, Any], names: Sequence[str]) -> list[str]:
    """`show` of each of `names` ("" when absent)."""
    out = []
    for name in names:
        value = fields.get(name)
        if value is None:
            out.append("")
        elif value.__class__ is bytes:
            out.append(value.decode("utf-8", "backslashreplace"))
        else:
            out.append(str(value))
    return out


def _numbers(fields: Mapping[Any, Any]) -> list[int]:
    """`_int` of each of `_READ_NUMBERS` (absent = 0): the common case (integers the scripts
    wrote) costs one int() each; any other value goes through `_int` (its checks, its error)."""
    get = fields.get
    try:
        return [0 if (v := get(name)) is None else int(v) for name in _READ_NUMBERS]
    except ValueError:
        return [_int(fields, name) for name in _READ_NUMBERS]


def _hot_config_ok(fields: Mapping[Any, Any]) -> bool:
    """Whether every field of the stored hot config is present and a number (_lib.lua's
    hot_config()), by the one check of a stored number (`_number`)."""
    if any(fields.get(name) is None for name in _HOT_CONFIG):
        return False
    try:
        for name in _HOT_CONFIG:
            _number(fields, name)
    except Corrupt:
        return False
    return True


def reply(
    fields: Mapping[Any, Any], ring: Mapping[Any, Any], now_ms: int, *, operator: bool = False
) -> list[Any] | None:
    """What read.lua would return for a breaker with these hash `fields` (names of `FIELDS`;
    None = absent) and the `ring` slots `expired_slots` named, at server time `now_ms`; None when
    there is no breaker (no ``st``: read.lua finds none either).

    `operator`: read.lua as an operator runs it (no fingerprint): a hot config (``q*``) that is
    not whole, with no ``cfg`` to fall back on, is corrupt too (a worker would be asked for its
    config instead; the exporter shows such a breaker with the defaults).

    Raises:
        Corrupt: a field that no script could have written (read.lua fails with CORRUPT).
    """
    raw = fields.get("st")
    if raw is None:
        return None
    st = _STATE_NAMES.get(raw)
    if st is None:
        raise Corrupt(f"st is {show(raw)!r}, not a state")
    if (
        operator
        and fields.get("cfg") is None
        and any(fields.get(q) is not None for q in _HOT_CONFIG)
        and not _hot_config_ok(fields)
    ):
        raise Corrupt("q* without cfg")
    # each checked, as the scripts do
    g, ou, be, tc, tf, ts, _, _, _, cx, fu, oc, lt, hs, pt = _numbers(fields)
    fr, fa, lc, lf, la, hl, fp, ov, cc, cfg, pf = _texts(fields, _READ_TEXTS)
    made = ""
    cause = ""
    # lazy expiry (step 2): a transition of the next generation, stored by read.lua at `now_ms`
    if fu > 0 and st in _FORCED and now_ms >= fu:
        made = f"{st}>closed"
        cause = f"{st} expired"
        lf, lc, la, fr, fa = st, cause, "", "", ""
        st, g, fu, lt = "closed", g + 1, 0, now_ms
    if st == "open" and now_ms >= ou:
        made = f"{made};open>half_open" if made else "open>half_open"
        cause = "open_duration elapsed"
        lf, lc, la, hl = "open", cause, "", ""
        st, g, lt, hs = "half_open", g + 1, now_ms, 0
    calls, failures, slow = tc, tf, ts
    if fields.get("be") is not None:  # rotation (step 3)
        calls, failures, slow = _window(fields, ring, now_ms, be, tc, tf, ts)
    reason, actor, live = "", "", 0
    if st in _FORCED:
        reason, actor = fr, fa
    elif st == "open":
        reason = lc
    elif st == "half_open":
        reason = lc
        live = sum(1 for _, exp in _LEASE.findall(hl) if int(exp) > now_ms) if hl else 0
    if st != "half_open":
        hs = 0
    if fields.get("cfg") is not None:
        _config_values(fields["cfg"])  # checked (its text is `cfg`: the values joined again)
    failing = 0 if fields.get("wc") is None else _failing_clients(fields, now_ms)
    return [
        st, g, now_ms, ou if st == "open" else 0, calls, failures, slow, cx, fu, reason, actor, oc,
        made, cause, "", 0, live, hs,
        1, cfg, fp, lt, lf, lc, la, ov, cc or cfg, pf, pt, failing,
    ]  # fmt: skip


# The names `snapshot` unpacks a `reply` into, in its order (checked against `_reply.FIELDS`)
_UNPACKED = (
    "state", "generation", "now", "open_until", "calls", "failures", "slow", "consecutive", "forced_until",
    "reason", "actor", "open_count", "transitions", "cause", "lease", "retry_at", "leases", "half_open_successes",
    "exists", "config", "fingerprint", "last_time", "last_from", "last_cause", "last_actor", "overrides",
    "client_config", "previous_fingerprint", "fingerprint_changed_at", "failing_clients",
)  # fmt: skip
if _UNPACKED != REPLY_FIELDS:
    raise AssertionError(f"_bulk.snapshot unpacks {_UNPACKED}, not the reply layout {REPLY_FIELDS}")


def snapshot(service: str, out: Sequence[Any]) -> Snapshot:
    """`_core.decode_snapshot(service, out)` for a `reply` (its numbers int, its texts str: none
    converted again), built by position: the same Snapshot, for less, for the reads of many
    breakers (`Admin.inspect_all`; tests/unit/test_bulk.py proves the two equal).

    Raises:
        KeyError: a last transition from no state (decode_snapshot's error too).
    """
    (
        st, g, now, ou, calls, failures, slow, cx, fu, reason, actor, oc, _, _, _, _, live, hs,
        _, cfg, _, lt, lf, lc, la, _, _, _, _, failing,
    ) = out  # fmt: skip
    state = _STATES[st]
    return Snapshot(
        service,
        state,
        g,
        calls,
        failures,
        slow,
        cx,
        ou / 1000.0 if ou else None,
        fu / 1000.0 if fu else None,
        reason,
        actor,
        oc,
        live,
        hs,
        now / 1000.0,
        Transition(service, lt / 1000.0, _STATES[lf], state, lc, la, g) if lt else None,
        cfg or None,
        failing,
    )


@dataclass(frozen=True, slots=True)
class BreakerRow:
    """One breaker as the exporter reports it, expiry applied at `now_ms` (server clock)."""

    service: str
    state: State
    calls: int
    failures: int
    slow: int
    open_count: int
    retry_after: float  # seconds; math.inf for a forced state without expiry
    failure_rate_threshold: float
    minimum_calls: int
    last_transition: float  # seconds since the epoch of the stored transition; 0 = never


def read_row(service: str, fields: Mapping[str, Any], ring: Mapping[Any, Any], now_ms: int) -> BreakerRow:
    """The exporter's row of a breaker (`reply`, with the config in force and the time until a
    half-open breaker frees a probe).

    Raises:
        Corrupt: a field that no script could have written, or window counts that cannot be.
    """
    out = reply(fields, ring, now_ms)
    if out is None:
        raise Corrupt("no st")
    state, calls, failures, slow = _STATES[out[0]], out[4], out[5], out[6]
    if min(calls, failures, slow) < 0 or failures > calls or slow > calls:
        raise Corrupt(f"window counts {calls} calls, {failures} failures, {slow} slow")
    retry = 0.0
    if state is State.OPEN:
        retry = max(0.0, (out[3] - now_ms) / 1000.0)
    elif state is State.FORCED_OPEN:
        retry = (out[8] - now_ms) / 1000.0 if out[8] else math.inf
    elif state is State.HALF_OPEN and out[16]:
        values = _config(fields)
        limit = int(float(values[HALF_OPEN_MAX])) if values is not None else 1
        live = [int(exp) for _, exp in _LEASE.findall(show(fields.get("hl") or "")) if int(exp) > now_ms]
        retry = (min(live) - now_ms) / 1000.0 if len(live) >= limit else 0.0
    return BreakerRow(
        service,
        state,
        calls,
        failures,
        slow,
        out[11],
        retry,
        _number(fields, "qr", DEFAULT_RATE),
        _int(fields, "qm", DEFAULT_MINIMUM),
        _int(fields, "lt") / 1000.0,
    )


# -- pipelined reads (sans-IO: the shells run each pipeline) ---------------------------------
Pipeline = list[tuple[Any, ...]]  # commands, run as one pipeline; replies (or errors) in order


def hmget(key: str, buckets: int) -> tuple[Any, ...]:
    """The HMGET of a breaker's fields and its first `buckets` ring slots."""
    return ("HMGET", key, *FIELDS, *(f"r{i}" for i in range(buckets)))


def time_ms(value: Any) -> int:
    """A TIME reply in milliseconds."""
    sec, usec = value
    return int(sec) * 1000 + int(usec) // 1000


@dataclass
class Read:
    """One breaker of a pipelined read: its hash `fields` (by name) and `ring` slots (by number),
    or the `error` that replaced them (a Redis error reply, or `Corrupt`). A hash read whole is
    one dict, both `fields` and `ring` (the names of other fields, if any, under None)."""

    key: str
    fields: dict[Any, Any]
    ring: dict[Any, Any]
    error: Exception | None = None


def read_hashes(
    keys: Sequence[str],
    buckets: Sequence[int] | None = None,
    extra: Sequence[tuple[Any, ...]] = (),
    *,
    whole: bool = False,
) -> Generator[Pipeline, list[Any], tuple[int, list[Read], list[Any]]]:
    """Read `keys` (one pipeline; one more for breakers whose window needs ring slots beyond the
    `buckets` read first, default the defaults' 10): yields each pipeline, receives its replies.

    `whole`: one HGETALL per key instead of the HMGET (a breaker's hash is a few dozen short
    fields: the whole of it costs the server no more than naming 40 of them, and the client
    less; the ACL must allow HGETALL). `extra` commands (the exporter's XRANGE) go in the first
    pipeline, one per key after its read. Returns the server time of the read (ms), a `Read`
    per key, and the extra replies.
    """
    counts = list(buckets) if buckets is not None else [DEFAULT_BUCKETS] * len(keys)
    commands: Pipeline = [("TIME",)]
    for i, key in enumerate(keys):
        commands.append(("HGETALL", key) if whole else hmget(key, counts[i]))
        if extra:
            commands.append(extra[i])
    replies = yield commands
    if isinstance(replies[0], Exception):
        raise replies[0]
    now_ms = time_ms(replies[0])
    step = 2 if extra else 1
    reads: list[Read] = []
    extras: list[Any] = []
    again: list[tuple[Read, list[int]]] = []
    for i, key in enumerate(keys):
        got = replies[1 + step * i]
        if extra:
            extras.append(replies[2 + step * i])
        if isinstance(got, Exception):
            reads.append(Read(key, {}, {}, got))
            continue
        if whole:  # one dict: the fields by name and the ring slots by number (other names: None)
            if got.__class__ is dict:  # (through redis-py's callback)
                whole_hash = dict(zip(map(_KEYS.get, got), got.values()))
            else:  # [name, value, ...] as the server sent it
                pairs = iter(got or ())
                whole_hash = dict(zip(map(_KEYS.get, pairs), pairs))
            reads.append(Read(key, whole_hash, whole_hash))
            continue
        read = Read(key, dict(zip(FIELDS, got, strict=False)), {})
        read.ring = {j: v for j, v in enumerate(got[len(FIELDS) :]) if v is not None}
        reads.append(read)
        if read.fields.get("st") is None:
            continue
        try:
            missing = [s for s in expired_slots(read.fields, now_ms) or () if s >= counts[i]]
        except Corrupt as exc:
            read.error = exc
            continue
        if missing:
            again.append((read, missing))
    if again:  # a window of more buckets than read: the slots not read yet
        replies = yield [("HMGET", read.key, *(f"r{s}" for s in missing)) for read, missing in again]
        for (read, missing), got in zip(again, replies, strict=True):
            if isinstance(got, Exception):
                read.error = got
            else:
                read.ring.update((s, v) for s, v in zip(missing, got, strict=True) if v is not None)
    return now_ms, reads, extras


Steps = Generator[Pipeline, list[Any], Any]


def client_pipeline(client: Any, commands: Pipeline) -> list[Any]:
    """`commands` through the client's own pipeline, without a transaction, errors as replies."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return cast("list[Any]", pipe.execute(raise_on_error=False))


def run(client: Any, steps: Steps, execute: Callable[[Any, Pipeline], list[Any]] = client_pipeline) -> tuple[Any, int]:
    """Run `steps` on a sync client: each pipeline yielded, without a transaction, errors as
    replies (a Cluster client's pipeline sends each key to its node); `execute` runs one
    (default: the client's own pipeline; `_transport.pipeline` for raw replies on a plain
    client). Returns what the steps return and the number of pipelines run."""
    pipelines = 0
    try:
        commands = next(steps)
        while True:
            pipelines += 1
            commands = steps.send(execute(client, commands))
    except StopIteration as stop:
        return stop.value, pipelines


async def aclient_pipeline(client: Any, commands: Pipeline) -> list[Any]:
    """`client_pipeline` on an asyncio client."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return cast("list[Any]", await pipe.execute(raise_on_error=False))


async def arun(
    client: Any, steps: Steps, execute: Callable[[Any, Pipeline], Awaitable[list[Any]]] = aclient_pipeline
) -> tuple[Any, int]:
    """`run` on an asyncio client (`execute`: `_transport.apipeline` for raw replies)."""
    pipelines = 0
    try:
        commands = next(steps)
        while True:
            pipelines += 1
            commands = steps.send(await execute(client, commands))
    except StopIteration as stop:
        return stop.value, pipelines
