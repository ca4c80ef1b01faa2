"""A Prometheus exporter of the shared state: every breaker under a prefix, read from Redis.

Per-process OpenTelemetry metrics say what each worker did (calls, rejections, round trips);
this exporter says what the fleet shares: the state of every breaker, its window, its open
count, its transitions. One scrape is a SCAN of the state keys (every master of a Cluster) and
pipelined plain reads, no script: per breaker, one HMGET of the hash fields (with the ring of
window buckets) and one XRANGE of the events appended since the last scrape, plus one TIME per
pipeline. The exporter applies the lazy expiry the scripts would apply at the server's time
(docs/state-machine.md): an ``open`` breaker past ``open_until`` reports ``half_open``, a forced
state past its expiry reports ``closed``, and window buckets that have expired no longer count.
It writes nothing.

Series (every breaker series has the label ``service``):

- ``distbreaker_breaker_state``: 0 closed, 1 half_open, 2 open, 3 forced_open, 4 disabled (the
  encoding of the per-process ``distbreaker_state`` gauge, `_otel.STATE_VALUES`).
- ``distbreaker_breaker_window_calls``, ``_window_failures``, ``_window_slow_calls``: the
  sliding window's counts; ``distbreaker_breaker_failure_rate`` (failures / calls, 0 without
  calls); ``distbreaker_breaker_failure_rate_threshold`` and ``_minimum_calls``, the config in
  force (so that alerts can compare the rate with the threshold before it trips).
- ``distbreaker_breaker_open_count``: automatic opens since the breaker last closed (backoff).
- ``distbreaker_breaker_retry_after_seconds``: until an ``open`` breaker probes again, a forced
  state expires (``+Inf`` without expiry), or a full half-open breaker frees a probe; 0 otherwise.
- ``distbreaker_breaker_last_transition_timestamp_seconds``: when the state last changed
  (server clock; the expiry applied by the exporter is not a stored transition).
- ``distbreaker_breaker_transitions_total{service, to}``: transitions read from the events
  stream (config changes excluded); counted by this exporter from the stream's content when it
  first sees the breaker, then from the new entries of each scrape.
- ``distbreaker_exporter_scrape_errors_total{kind}``: ``corrupt`` (a breaker's fields cannot be
  read), ``foreign`` (a key under the prefix that is not a breaker), ``redis`` (a node could
  not be read). An error never hides the other breakers.
- ``distbreaker_exporter_breakers``, ``distbreaker_exporter_scrape_duration_seconds``,
  ``distbreaker_exporter_redis_up`` (0 when some node could not be read).

Use it from the CLI (``distbreaker exporter``), or mount `make_wsgi_app` / `make_asgi_app` in an
existing server. Needs ``prometheus_client`` (the ``exporter`` extra).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from ._core import keys_for, service_of_key, text, validate_prefix
from ._model import State
from ._otel import STATE_VALUES
from .errors import redact

__all__ = [
    "BreakerRow",
    "ExporterCollector",
    "SERIES",
    "STATE_CODES",
    "make_asgi_app",
    "make_registry",
    "make_wsgi_app",
    "read_row",
]

# Every series name the exporter serves (as Prometheus sees them: counters end in _total)
SERIES = (
    "distbreaker_breaker_state",
    "distbreaker_breaker_window_calls",
    "distbreaker_breaker_window_failures",
    "distbreaker_breaker_window_slow_calls",
    "distbreaker_breaker_failure_rate",
    "distbreaker_breaker_failure_rate_threshold",
    "distbreaker_breaker_minimum_calls",
    "distbreaker_breaker_open_count",
    "distbreaker_breaker_retry_after_seconds",
    "distbreaker_breaker_last_transition_timestamp_seconds",
    "distbreaker_breaker_transitions_total",
    "distbreaker_exporter_scrape_errors_total",
    "distbreaker_exporter_breakers",
    "distbreaker_exporter_redis_up",
    "distbreaker_exporter_scrape_duration_seconds",
)

STATE_CODES = {state.value: code for state, code in STATE_VALUES.items()}

# Hash fields read per breaker (docs/state-machine.md, "Hash fields"), then the ring r0..r<n-1>
FIELDS = ("st", "g", "ou", "fu", "oc", "tc", "tf", "ts", "be", "qb", "qn", "qr", "qm", "cfg", "hl", "lt")
DEFAULT_BUCKET_MS, DEFAULT_BUCKETS = 6000, 10  # the defaults' layout: 60000 ms in 10 buckets
DEFAULT_RATE, DEFAULT_MINIMUM = 0.5, 10
HALF_OPEN_MAX_CALLS = 9  # index of half_open_max_calls in `cfg` (13 or 15 comma-joined values)
CHUNK = 2000  # breakers per pipeline (one round trip each; bounds the client's memory per reply)
SCAN_COUNT = 1000
EVENTS_COUNT = 1000  # new stream entries read per breaker and scrape (the stream keeps ~1000)


class Corrupt(ValueError):
    """A breaker hash whose fields cannot be read."""


def _show(value: Any) -> str:
    """A reply value for a message, whatever bytes it holds."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


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
    last_transition: float  # seconds since the epoch; 0 = never


def _int(fields: dict[str, Any], name: str, default: int = 0) -> int:
    value = fields.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        try:
            number = float(value)
        except ValueError:
            raise Corrupt(f"{name}={_show(value)!r}") from None
        if not math.isfinite(number):
            raise Corrupt(f"{name}={_show(value)!r}") from None
        return int(number)


def _float(fields: dict[str, Any], name: str, default: float) -> float:
    value = fields.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise Corrupt(f"{name}={_show(value)!r}") from None
    if not math.isfinite(number):
        raise Corrupt(f"{name}={_show(value)!r}")
    return number


def _bucket(value: Any) -> tuple[int, int, int]:
    parts = _show(value).split(":")
    if len(parts) != 3:
        raise Corrupt(f"ring bucket {_show(value)!r}")
    try:
        c, f, s = (int(p) for p in parts)
    except ValueError:
        raise Corrupt(f"ring bucket {_show(value)!r}") from None
    return c, f, s


def layout(fields: dict[str, Any]) -> tuple[int, int]:
    """(bucket_ms, buckets) in force for a breaker's hash fields (the defaults' when none stored)."""
    bucket_ms, buckets = _int(fields, "qb", DEFAULT_BUCKET_MS), _int(fields, "qn", DEFAULT_BUCKETS)
    if bucket_ms < 1 or not 1 <= buckets <= 1000:
        raise Corrupt(f"bucket layout {bucket_ms} ms x {buckets}")
    return bucket_ms, buckets


def expired_slots(fields: dict[str, Any], now_ms: int) -> list[int] | None:
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


def read_row(service: str, fields: dict[str, Any], ring: dict[int, Any], now_ms: int) -> BreakerRow:
    """A breaker's series from its hash `fields` (names of `FIELDS`; None = missing) and the
    `ring` slots `expired_slots` named, as the scripts would see them at `now_ms`.

    Raises:
        Corrupt: a field that no script could have written.
    """
    raw = fields.get("st")
    try:
        state = State(_show(raw)) if raw is not None else State.CLOSED
    except ValueError:
        raise Corrupt(f"st={_show(raw)!r}") from None
    open_until, forced_until = _int(fields, "ou"), _int(fields, "fu")
    # lazy expiry (docs/state-machine.md, step 2)
    if state in (State.FORCED_OPEN, State.DISABLED) and forced_until > 0 and now_ms >= forced_until:
        state = State.CLOSED
    elif state is State.OPEN and now_ms >= open_until:
        state = State.HALF_OPEN
    # rotation (step 3): the totals less the buckets that have expired
    calls, failures, slow = _int(fields, "tc"), _int(fields, "tf"), _int(fields, "ts")
    slots = expired_slots(fields, now_ms)
    if slots is None:
        calls = failures = slow = 0
    else:
        for slot in slots:
            value = ring.get(slot)
            if value is not None:
                c, f, s = _bucket(value)
                calls, failures, slow = calls - c, failures - f, slow - s
    if min(calls, failures, slow) < 0 or failures > calls or slow > calls:
        raise Corrupt(f"window counts {calls} calls, {failures} failures, {slow} slow")
    retry = 0.0
    if state is State.OPEN:
        retry = max(0.0, (open_until - now_ms) / 1000.0)
    elif state is State.FORCED_OPEN:
        retry = (forced_until - now_ms) / 1000.0 if forced_until else math.inf
    elif state is State.HALF_OPEN and raw is not None and _show(raw) == "half_open":  # (not just expired)
        retry = _half_open_retry(fields, now_ms)
    return BreakerRow(
        service,
        state,
        calls,
        failures,
        slow,
        _int(fields, "oc"),
        retry,
        _float(fields, "qr", DEFAULT_RATE),
        _int(fields, "qm", DEFAULT_MINIMUM),
        _int(fields, "lt") / 1000.0,
    )


def _half_open_retry(fields: dict[str, Any], now_ms: int) -> float:
    """Seconds until a probe is free when every half-open lease is taken, else 0."""
    leases = _show(fields.get("hl") or "")
    live = []
    for part in leases.split(";") if leases else ():
        _, _, exp = part.partition("=")
        try:
            at = int(exp)
        except ValueError:
            raise Corrupt(f"hl={leases!r}") from None
        if at > now_ms:
            live.append(at)
    cfg = _show(fields.get("cfg") or "").split(",")
    try:
        limit = int(float(cfg[HALF_OPEN_MAX_CALLS])) if len(cfg) >= 13 else 1  # 13 (0.1) or 15 values
    except ValueError:
        raise Corrupt(f"cfg={','.join(cfg)!r}") from None
    return (min(live) - now_ms) / 1000.0 if live and len(live) >= limit else 0.0


@dataclass
class _Seen:
    """What the exporter remembers of one breaker between scrapes."""

    buckets: int = DEFAULT_BUCKETS  # ring slots to read with the hash (its layout last time)
    last_id: str = "-"  # last events-stream entry counted
    to: Counter[str] = field(default_factory=Counter)


@dataclass
class _Scrape:
    rows: list[BreakerRow] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    nodes_down: int = 0


def _nodes(redis: Any) -> list[Any]:
    """The clients to scan: every primary of a Cluster, else `redis` itself."""
    get_primaries = getattr(redis, "get_primaries", None)
    if get_primaries is None:
        return [redis]
    return [redis.get_redis_connection(node) for node in get_primaries()]


def _now_ms(reply: Any) -> int:
    sec, usec = reply
    return int(sec) * 1000 + int(usec) // 1000


class ExporterCollector(Collector):
    """A `prometheus_client` collector that reads every breaker under `prefix` on each collect.

    Args:
        redis: a `redis.Redis` (or a `redis.cluster.RedisCluster`: every primary is scanned).
        prefix: key prefix of the breakers. Default ``"distbreaker"``.
        on_error: called with a one-line description of each scrape error (URL redacted).
    """

    def __init__(
        self, redis: Any, *, prefix: str = "distbreaker", on_error: Callable[[str], None] | None = None
    ) -> None:
        self.redis = redis
        self.prefix = validate_prefix(prefix)
        self.on_error = on_error
        self._lock = threading.Lock()  # one scrape at a time (the memory of the streams is shared)
        self._seen: dict[str, _Seen] = {}
        self._errors: Counter[str] = Counter({"corrupt": 0, "foreign": 0, "redis": 0})
        self.round_trips = 0  # pipelines executed and SCAN calls, since the start (tests, benchmarks)

    def describe(self) -> Iterable[Metric]:
        return self._families(_Scrape(), 0.0)

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            start = time.perf_counter()
            scrape = self.scrape()
            return self._families(scrape, time.perf_counter() - start)

    # -- reading ------------------------------------------------------------------------------
    def scrape(self) -> _Scrape:
        """Read every breaker once (callers hold the lock)."""
        out = _Scrape()
        present: set[str] = set()
        try:
            nodes = _nodes(self.redis)
        except RedisError as exc:
            self._error(out, "redis", f"cannot list the nodes: {redact(str(exc))}")
            out.nodes_down += 1
            nodes = []
        for node in nodes:
            try:
                self._scrape_node(node, out, present)
            except RedisError as exc:
                self._error(out, "redis", f"a node could not be read: {redact(str(exc))}")
                out.nodes_down += 1
        if not out.nodes_down:  # forget breakers that are gone (not those of an unreachable node)
            for key in set(self._seen) - present:
                del self._seen[key]
        for kind, n in out.errors.items():
            self._errors[kind] += n
        out.rows.sort(key=lambda row: row.service)
        return out

    def _error(self, out: _Scrape, kind: str, message: str) -> None:
        out.errors[kind] += 1
        if self.on_error is not None:
            self.on_error(message)

    def _scan(self, node: Any, out: _Scrape) -> list[tuple[str, str]]:
        found = []
        cursor: Any = 0
        match = f"{self.prefix}:{{*}}"
        while True:
            cursor, keys = node.scan(cursor, match=match, count=SCAN_COUNT)
            self.round_trips += 1
            for raw in keys:
                try:
                    key = text(raw)
                except UnicodeDecodeError:  # not a name distbreaker makes
                    self._error(out, "foreign", f"{_show(raw)}: a key name that is not UTF-8")
                    continue
                service = service_of_key(self.prefix, key)
                if service is not None:
                    found.append((key, service))
            if not int(cursor):
                return found

    def _scrape_node(self, node: Any, out: _Scrape, present: set[str]) -> None:
        found = self._scan(node, out)
        for at in range(0, len(found), CHUNK):
            self._read_chunk(node, found[at : at + CHUNK], out, present)

    def _read_chunk(self, node: Any, chunk: Sequence[tuple[str, str]], out: _Scrape, present: set[str]) -> None:
        pipe = node.pipeline(transaction=False)
        pipe.execute_command("TIME")
        seen = []
        for key, service in chunk:
            memo = self._seen.get(key)
            if memo is None:
                memo = self._seen[key] = _Seen()
            seen.append(memo)
            present.add(key)
            pipe.execute_command("HMGET", key, *FIELDS, *(f"r{i}" for i in range(memo.buckets)))
            start = "-" if memo.last_id == "-" else "(" + memo.last_id
            pipe.execute_command("XRANGE", keys_for(self.prefix, service).events, start, "+", "COUNT", EVENTS_COUNT)
        replies = pipe.execute(raise_on_error=False)
        self.round_trips += 1
        if isinstance(replies[0], Exception):
            raise replies[0]
        now_ms = _now_ms(replies[0])
        again: list[tuple[int, dict[str, Any], dict[int, Any], list[int]]] = []  # ring slots not read
        rows: dict[int, tuple[dict[str, Any], dict[int, Any]]] = {}
        for i, ((key, _service), memo) in enumerate(zip(chunk, seen, strict=True)):
            hash_reply, events = replies[1 + 2 * i], replies[2 + 2 * i]
            if isinstance(hash_reply, Exception):
                kind = "foreign" if "WRONGTYPE" in str(hash_reply) else "redis"
                self._error(out, kind, f"{key}: {redact(str(hash_reply))}")
                continue
            values = dict(zip(FIELDS, hash_reply, strict=False))
            if all(v is None for v in values.values()):
                self._error(out, "foreign", f"{key}: a hash without any breaker field")
                continue
            read = memo.buckets
            ring = {j: v for j, v in enumerate(hash_reply[len(FIELDS) :]) if v is not None}
            try:
                memo.buckets = layout(values)[1]
                slots = expired_slots(values, now_ms) or []
            except Corrupt as exc:
                self._error(out, "corrupt", f"{key}: {exc}")
                continue
            missing = [s for s in slots if s >= read]
            if missing:
                again.append((i, values, ring, missing))
            rows[i] = (values, ring)
            self._count_events(key, memo, events, out)
        if again:  # the bucket layout changed since the last scrape: read the slots not read yet
            pipe = node.pipeline(transaction=False)
            for i, _, _, missing in again:
                pipe.execute_command("HMGET", chunk[i][0], *(f"r{s}" for s in missing))
            for (i, _, ring, missing), reply in zip(again, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(reply, Exception):
                    self._error(out, "redis", f"{chunk[i][0]}: {redact(str(reply))}")
                    rows.pop(i, None)
                    continue
                ring.update((s, v) for s, v in zip(missing, reply, strict=True) if v is not None)
            self.round_trips += 1
        for i, (values, ring) in rows.items():
            key, service = chunk[i]
            try:
                out.rows.append(read_row(service, values, ring, now_ms))
            except Corrupt as exc:
                self._error(out, "corrupt", f"{key}: {exc}")

    def _count_events(self, key: str, memo: _Seen, events: Any, out: _Scrape) -> None:
        if isinstance(events, Exception):
            kind = "foreign" if "WRONGTYPE" in str(events) else "redis"
            self._error(out, kind, f"{key}:events: {redact(str(events))}")
            return
        for entry_id, fields in events or ():
            memo.last_id = _show(entry_id)
            if not isinstance(fields, dict):
                fields = dict(zip(fields[::2], fields[1::2], strict=False))
            f = {_show(k): _show(v) for k, v in fields.items()}
            frm, to, cause = f.get("from"), f.get("to"), f.get("cause", "")
            if to not in STATE_CODES or frm not in STATE_CODES:
                continue  # not a distbreaker event (another writer's): never counted
            if frm == to and not cause.startswith("manual "):
                continue  # a fleet config change, not a transition (a re-trip says "manual trip")
            memo.to[to] += 1

    # -- series -------------------------------------------------------------------------------
    def _families(self, scrape: _Scrape, duration: float) -> Iterator[Metric]:
        def gauge(name: str, doc: str, value: Callable[[BreakerRow], float], unit: str = "") -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["service"], unit=unit)
            for row in scrape.rows:
                family.add_metric([row.service], value(row))
            return family

        yield gauge(
            "distbreaker_breaker_state",
            "Breaker state in Redis, expiry applied: 0 closed, 1 half_open, 2 open, 3 forced_open, 4 disabled",
            lambda row: STATE_CODES[row.state.value],
        )
        yield gauge("distbreaker_breaker_window_calls", "Calls in the sliding window", lambda row: row.calls)
        yield gauge("distbreaker_breaker_window_failures", "Failures in the sliding window", lambda row: row.failures)
        yield gauge("distbreaker_breaker_window_slow_calls", "Slow calls in the sliding window", lambda row: row.slow)
        yield gauge(
            "distbreaker_breaker_failure_rate",
            "Failures / calls in the window (0 without calls)",
            lambda row: row.failures / row.calls if row.calls else 0.0,
        )
        yield gauge(
            "distbreaker_breaker_failure_rate_threshold",
            "failure_rate_threshold in force",
            lambda row: row.failure_rate_threshold,
        )
        yield gauge("distbreaker_breaker_minimum_calls", "minimum_calls in force", lambda row: row.minimum_calls)
        yield gauge(
            "distbreaker_breaker_open_count",
            "Automatic opens since the breaker last closed",
            lambda row: row.open_count,
        )
        yield gauge(
            "distbreaker_breaker_retry_after_seconds",
            "Until an open breaker probes, a forced state expires (+Inf: never) or a probe is free",
            lambda row: row.retry_after,
        )
        yield gauge(
            "distbreaker_breaker_last_transition_timestamp_seconds",
            "When the stored state last changed (server clock; 0: never)",
            lambda row: row.last_transition,
        )
        transitions = CounterMetricFamily(
            "distbreaker_breaker_transitions",
            "Transitions in the events stream, by new state",
            labels=["service", "to"],
        )
        live = {row.service for row in scrape.rows}
        for key, memo in sorted(self._seen.items()):
            service = service_of_key(self.prefix, key)
            if service in live:
                for to in sorted(memo.to):
                    transitions.add_metric([service, to], memo.to[to])
        yield transitions
        errors = CounterMetricFamily(
            "distbreaker_exporter_scrape_errors",
            "Keys or nodes that could not be read, by kind (corrupt, foreign, redis)",
            labels=["kind"],
        )
        for kind in sorted(self._errors):
            errors.add_metric([kind], self._errors[kind])
        yield errors
        yield GaugeMetricFamily(
            "distbreaker_exporter_breakers", "Breakers reported by the last scrape", value=len(scrape.rows)
        )
        yield GaugeMetricFamily(
            "distbreaker_exporter_redis_up",
            "1 when every Redis node could be read",
            value=0 if scrape.nodes_down else 1,
        )
        yield GaugeMetricFamily(
            "distbreaker_exporter_scrape_duration_seconds", "Duration of the last scrape", value=duration
        )


def make_registry(
    redis: Any, *, prefix: str = "distbreaker", on_error: Callable[[str], None] | None = None
) -> CollectorRegistry:
    """A `CollectorRegistry` holding only an `ExporterCollector` of `redis` and `prefix`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(redis, prefix=prefix, on_error=on_error))
    return registry


def make_wsgi_app(redis: Any, *, prefix: str = "distbreaker") -> Any:
    """A WSGI app serving the breakers of `redis` under `prefix` in Prometheus text format
    (mount it at ``/metrics``)."""
    from prometheus_client import make_wsgi_app as wsgi

    return wsgi(make_registry(redis, prefix=prefix))


def make_asgi_app(redis: Any, *, prefix: str = "distbreaker") -> Any:
    """An ASGI app serving the same. prometheus_client collects on the event loop: each scrape
    blocks it for its duration (docs/observability.md has figures); prefer the WSGI app or the
    CLI for large fleets."""
    from prometheus_client import make_asgi_app as asgi

    return asgi(make_registry(redis, prefix=prefix))
