"""A Prometheus exporter of the shared state: every breaker under a prefix, read from Redis.

Per-process OpenTelemetry metrics say what each worker did (calls, rejections, round trips);
this exporter says what the fleet shares: the state of every breaker, its window, its open
count, its transitions, and every fleet-wide bulkhead. One scrape is a SCAN of the keys under the
prefix (every master of a Cluster) and pipelined plain reads, no script: per breaker, one HMGET
of the hash fields (with the ring of window buckets) and one XRANGE of the events appended since
the last scrape, plus one TIME per pipeline; when the SCAN found bulkheads, one TIME and one
pipeline of four sorted-set reads per bulkhead (`distbreaker.bulkhead.read_steps`, the reader of
``distbreaker bulkheads``: leases live at that server time, as bulkhead.lua counts them). The
exporter applies the lazy expiry the scripts would apply at the server's time
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
- ``distbreaker_bulkhead_in_use{bulkhead}``: leases held fleet-wide and not expired at the
  server's time (an expired lease no release removed is not counted, as bulkhead.lua ignores it).
- ``distbreaker_bulkhead_max_concurrent{bulkhead}`` and
  ``distbreaker_bulkhead_lease_timeout_seconds{bulkhead}``: the values of the last grant (each
  process enforces its own: they are what the last granting process was given); absent when not
  recorded (``lease_timeout`` of grants by clients older than 0.3).
- ``distbreaker_bulkhead_next_expiry_seconds{bulkhead}``: until the earliest live lease expires
  (when a full bulkhead frees a slot at the latest); absent without a live lease.
- ``distbreaker_exporter_scrape_errors_total{kind}``: ``corrupt`` (a breaker's fields cannot be
  read), ``foreign`` (a key under the prefix that is not a breaker or a bulkhead), ``redis``
  (a node, or a key, could not be read). An error never hides the other breakers.
- ``distbreaker_exporter_breakers``, ``distbreaker_exporter_bulkheads``,
  ``distbreaker_exporter_scrape_duration_seconds``, ``distbreaker_exporter_redis_up`` (0 when
  some node could not be read).

Use it from the CLI (``distbreaker exporter``), or mount `make_wsgi_app` / `make_asgi_app` in an
existing server. Needs ``prometheus_client`` (the ``exporter`` extra).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

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

from ._bulk import DEFAULT_BUCKETS, BreakerRow, Corrupt, layout, read_hashes, read_row, run, show
from ._core import keys_for, service_of_key, text, validate_prefix
from ._otel import STATE_VALUES
from .bulkhead import BulkheadState, bulkhead_name, read_steps
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
    "distbreaker_bulkhead_in_use",
    "distbreaker_bulkhead_max_concurrent",
    "distbreaker_bulkhead_lease_timeout_seconds",
    "distbreaker_bulkhead_next_expiry_seconds",
    "distbreaker_exporter_scrape_errors_total",
    "distbreaker_exporter_breakers",
    "distbreaker_exporter_bulkheads",
    "distbreaker_exporter_redis_up",
    "distbreaker_exporter_scrape_duration_seconds",
)

STATE_CODES = {state.value: code for state, code in STATE_VALUES.items()}

CHUNK = 2000  # breakers per pipeline (one round trip each; bounds the client's memory per reply)
SCAN_COUNT = 1000
EVENTS_COUNT = 1000  # new stream entries read per breaker and scrape (the stream keeps ~1000)


@dataclass
class _Seen:
    """What the exporter remembers of one breaker between scrapes."""

    buckets: int = DEFAULT_BUCKETS  # ring slots to read with the hash (its layout last time)
    last_id: str = "-"  # last events-stream entry counted
    to: Counter[str] = field(default_factory=Counter)


@dataclass
class _Scrape:
    rows: list[BreakerRow] = field(default_factory=list)
    bulkheads: list[BulkheadState] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    nodes_down: int = 0


def _nodes(redis: Any) -> list[Any]:
    """The clients to scan: every primary of a Cluster, else `redis` itself."""
    get_primaries = getattr(redis, "get_primaries", None)
    if get_primaries is None:
        return [redis]
    return [redis.get_redis_connection(node) for node in get_primaries()]


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
        out.bulkheads.sort(key=lambda state: state.name)
        return out

    def _error(self, out: _Scrape, kind: str, message: str) -> None:
        out.errors[kind] += 1
        if self.on_error is not None:
            self.on_error(message)

    def _scan(self, node: Any, out: _Scrape) -> tuple[list[tuple[str, str]], list[str]]:
        """The (key, service) of each breaker and the name of each bulkhead on `node`: one SCAN
        pass of ``<prefix>:{*[}d]``, which matches both."""
        found = []
        bulkheads = []
        cursor: Any = 0
        # <prefix>:{x} ends with '}', <prefix>:{x}:bulkhead with 'd'; the breakers' other keys
        # (:events, :ids, :op) end otherwise and are not returned
        match = f"{self.prefix}:{{*[}}d]"
        while True:
            cursor, keys = node.scan(cursor, match=match, count=SCAN_COUNT)
            self.round_trips += 1
            for raw in keys:
                try:
                    key = text(raw)
                except UnicodeDecodeError:  # not a name distbreaker makes
                    self._error(out, "foreign", f"{show(raw)}: a key name that is not UTF-8")
                    continue
                service = service_of_key(self.prefix, key)
                if service is not None:
                    found.append((key, service))
                elif (name := bulkhead_name(self.prefix, key)) is not None:
                    bulkheads.append(name)
            if not int(cursor):
                return found, sorted(set(bulkheads))

    def _scrape_node(self, node: Any, out: _Scrape, present: set[str]) -> None:
        found, bulkheads = self._scan(node, out)
        for at in range(0, len(found), CHUNK):
            self._read_chunk(node, found[at : at + CHUNK], out, present)
        for at in range(0, len(bulkheads), CHUNK):
            self._read_bulkheads(node, bulkheads[at : at + CHUNK], out)

    def _read_bulkheads(self, node: Any, names: Sequence[str], out: _Scrape) -> None:
        states, pipelines = run(node, read_steps(self.prefix, names))
        self.round_trips += pipelines
        for name, state in zip(names, states, strict=True):
            if isinstance(state, BulkheadState):
                out.bulkheads.append(state)
            else:
                kind = "foreign" if "WRONGTYPE" in str(state) or not isinstance(state, RedisError) else "redis"
                self._error(out, kind, f"bulkhead {name}: {redact(str(state))}")

    def _read_chunk(self, node: Any, chunk: Sequence[tuple[str, str]], out: _Scrape, present: set[str]) -> None:
        memos = []
        events = []
        for key, service in chunk:
            memo = self._seen.get(key)
            if memo is None:
                memo = self._seen[key] = _Seen()
            memos.append(memo)
            present.add(key)
            start = "-" if memo.last_id == "-" else "(" + memo.last_id
            events.append(("XRANGE", keys_for(self.prefix, service).events, start, "+", "COUNT", EVENTS_COUNT))
        steps = read_hashes([key for key, _ in chunk], [memo.buckets for memo in memos], events)
        (now_ms, reads, extras), pipelines = run(node, steps)
        self.round_trips += pipelines
        for (key, service), memo, read, stream in zip(chunk, memos, reads, extras, strict=True):
            if isinstance(read.error, RedisError):
                kind = "foreign" if "WRONGTYPE" in str(read.error) else "redis"
                self._error(out, kind, f"{key}: {redact(str(read.error))}")
                continue
            if all(v is None for v in read.fields.values()):
                self._error(out, "foreign", f"{key}: a hash without any breaker field")
                continue
            self._count_events(key, memo, stream, out)
            try:
                if read.error is not None:
                    raise read.error
                memo.buckets = layout(read.fields)[1]
                out.rows.append(read_row(service, read.fields, read.ring, now_ms))
            except Corrupt as exc:
                self._error(out, "corrupt", f"{key}: {exc}")

    def _count_events(self, key: str, memo: _Seen, events: Any, out: _Scrape) -> None:
        if isinstance(events, Exception):
            kind = "foreign" if "WRONGTYPE" in str(events) else "redis"
            self._error(out, kind, f"{key}:events: {redact(str(events))}")
            return
        for entry_id, fields in events or ():
            memo.last_id = show(entry_id)
            if not isinstance(fields, dict):
                fields = dict(zip(fields[::2], fields[1::2], strict=False))
            f = {show(k): show(v) for k, v in fields.items()}
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
        yield from self._bulkhead_families(scrape)
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
            "distbreaker_exporter_bulkheads", "Bulkheads reported by the last scrape", value=len(scrape.bulkheads)
        )
        yield GaugeMetricFamily(
            "distbreaker_exporter_redis_up",
            "1 when every Redis node could be read",
            value=0 if scrape.nodes_down else 1,
        )
        yield GaugeMetricFamily(
            "distbreaker_exporter_scrape_duration_seconds", "Duration of the last scrape", value=duration
        )

    def _bulkhead_families(self, scrape: _Scrape) -> Iterator[Metric]:
        def gauge(
            name: str, doc: str, value: Callable[[BulkheadState], float | None], unit: str = ""
        ) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=["bulkhead"], unit=unit)
            for state in scrape.bulkheads:
                v = value(state)
                if v is not None:  # not recorded: no sample rather than a made-up value
                    family.add_metric([state.name], v)
            return family

        yield gauge(
            "distbreaker_bulkhead_in_use",
            "Bulkhead leases held fleet-wide and not expired (server time)",
            lambda state: state.in_use,
        )
        yield gauge(
            "distbreaker_bulkhead_max_concurrent",
            "max_concurrent of the bulkhead's last grant",
            lambda state: state.max_concurrent,
        )
        yield gauge(
            "distbreaker_bulkhead_lease_timeout_seconds",
            "lease_timeout of the bulkhead's last grant",
            lambda state: state.lease_timeout,
        )
        yield gauge(
            "distbreaker_bulkhead_next_expiry_seconds",
            "Until the earliest live lease of the bulkhead expires",
            lambda state: state.next_expiry,
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
