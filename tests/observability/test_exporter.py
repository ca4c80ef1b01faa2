"""distbreaker.exporter and `distbreaker exporter` on a real server.

The output is parsed with prometheus_client's own parser. Where the exporter applies the lazy
expiry itself (an open breaker past open_until, a forced state past its expiry, window buckets
that have expired), the oracle is read.lua (`_read_lua.read_lua`): the scripts' expiry and
rotation on the same hash, right after the scrape.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _obs import unique
from _read_lua import read_lua, server_ms
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from distbreaker import Admin, Breaker, BreakerConfig, connect
from distbreaker.exporter import SERIES, STATE_CODES, ExporterCollector, make_registry, make_wsgi_app
from distbreaker_cli.app import cli

ROOT = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(client: Any, prefix: str, collector: ExporterCollector | None = None) -> Samples:
    from prometheus_client import CollectorRegistry, generate_latest

    if collector is None:
        return parse(generate_latest(make_registry(client, prefix=prefix)).decode())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = connect(redis_url, timeout=5)
    yield c
    c.close()


def breaker(client: Any, prefix: str, service: str, clock: Any = None, **config: Any) -> Breaker:
    return Breaker(service, client, BreakerConfig(**config), prefix=prefix, listen=False, clock=clock)


def fail(b: Breaker, n: int = 1) -> None:
    for _ in range(n):
        try:
            b.call(lambda: 1 / 0)
        except Exception:
            pass


def test_states_with_expiry_applied_as_redis_would(client: Any, r: redis.Redis, prefix: str) -> None:
    """Each state has its code; an open breaker past open_until reports half_open and a forced
    state past its expiry reports closed, as read.lua then finds them; retry-after follows."""
    past = (server_ms(r) - 3_600_000) / 1000.0
    names = {k: unique(k) for k in ("closed", "open", "elapsed", "forced", "forced_gone", "disabled")}
    breaker(client, prefix, names["closed"]).call(lambda: None)
    fail(breaker(client, prefix, names["open"], minimum_calls=1, open_duration=600))
    fail(breaker(client, prefix, names["elapsed"], clock=lambda: past, minimum_calls=1, open_duration=30))
    admin = Admin(client, prefix=prefix)
    admin.trip(names["forced"], reason="INC-1")
    admin.trip(names["forced_gone"], for_=3600, reason="INC-2")
    r.hset(f"{prefix}:{{{names['forced_gone']}}}", "fu", server_ms(r) - 1000)  # its hour has passed
    admin.disable(names["disabled"])

    samples = scrape(client, prefix)
    expected = {
        "closed": "closed",
        "open": "open",
        "elapsed": "half_open",
        "forced": "forced_open",
        "forced_gone": "closed",
        "disabled": "disabled",
    }
    for what, state in expected.items():
        service = names[what]
        assert value(samples, "distbreaker_breaker_state", service=service) == STATE_CODES[state], what
        assert read_lua(client, prefix, service)[0].state.value == state, what  # the scripts agree
    assert STATE_CODES == {"closed": 0, "half_open": 1, "open": 2, "forced_open": 3, "disabled": 4}
    retry = value(samples, "distbreaker_breaker_retry_after_seconds", service=names["open"])
    assert 590 < retry <= 600
    assert value(samples, "distbreaker_breaker_retry_after_seconds", service=names["forced"]) == math.inf
    assert value(samples, "distbreaker_breaker_retry_after_seconds", service=names["elapsed"]) == 0
    assert value(samples, "distbreaker_breaker_open_count", service=names["open"]) == 1
    assert value(samples, "distbreaker_breaker_open_count", service=names["closed"]) == 0
    last = value(samples, "distbreaker_breaker_last_transition_timestamp_seconds", service=names["forced"])
    assert abs(last - time.time()) < 60
    assert value(samples, "distbreaker_exporter_breakers") == 6
    assert value(samples, "distbreaker_exporter_redis_up") == 1
    # the names alerts and dashboards may use (no bulkhead here: test_exporter_bulkheads.py has theirs)
    assert {name for name, _ in samples} == {s for s in SERIES if not s.startswith("distbreaker_bulkhead_")}


def test_window_counts_drop_expired_buckets(client: Any, r: redis.Redis, prefix: str) -> None:
    """Calls in buckets older than the window no longer count, newer ones do; the rates and the
    config in force are reported; read.lua's rotation then finds the same counts."""
    bucket_ms = 6000  # window 60 s in 10 buckets
    epoch = server_ms(r) // bucket_ms
    service, gone = unique("window"), unique("gone")
    t = {"now": (epoch - 12) * bucket_ms / 1000.0 + 0.5}
    b = breaker(client, prefix, service, clock=lambda: t["now"], minimum_calls=100, failure_rate_threshold=0.9)
    for _ in range(3):
        b.call(lambda: None)
    fail(b)  # epoch - 12: 4 calls, 1 failure (expired at the scrape)
    t["now"] = (epoch - 5) * bucket_ms / 1000.0 + 0.5
    b.call(lambda: None)
    fail(b, 2)  # epoch - 5: 3 calls, 2 failures (still in the window)
    old = breaker(client, prefix, gone, clock=lambda: (epoch - 30) * bucket_ms / 1000.0)
    old.call(lambda: None)  # its whole window has expired
    assert int(r.hget(f"{prefix}:{{{service}}}", "tc") or 0) == 7  # the hash still counts all 7

    samples = scrape(client, prefix)
    assert value(samples, "distbreaker_breaker_window_calls", service=service) == 3
    assert value(samples, "distbreaker_breaker_window_failures", service=service) == 2
    assert value(samples, "distbreaker_breaker_window_slow_calls", service=service) == 0
    assert value(samples, "distbreaker_breaker_failure_rate", service=service) == pytest.approx(2 / 3)
    assert value(samples, "distbreaker_breaker_failure_rate_threshold", service=service) == 0.9
    assert value(samples, "distbreaker_breaker_minimum_calls", service=service) == 100
    assert value(samples, "distbreaker_breaker_window_calls", service=gone) == 0
    assert value(samples, "distbreaker_breaker_failure_rate", service=gone) == 0
    snap = read_lua(client, prefix, service)[0]
    assert (snap.calls, snap.failures) == (3, 2)


def test_slow_calls_and_layout_change(r: redis.Redis, client: Any, prefix: str) -> None:
    """Slow calls are counted; a breaker whose bucket layout is not the one read last time gets
    the ring slots it needs in a second read (hash fields as the scripts write them)."""
    service = unique("slow")
    key = f"{prefix}:{{{service}}}"
    bucket_ms, buckets = 1000, 20
    epoch = server_ms(r) // bucket_ms
    # be = epoch - 5: epochs be-19 .. epoch-20 expire, i.e. epoch-24 .. epoch-20 (slots below)
    ring = {f"r{(epoch - 24) % buckets}": "5:1:2", f"r{(epoch - 8) % buckets}": "4:0:1"}
    r.hset(
        key,
        mapping={
            "st": "closed",
            "g": 1,
            "be": epoch - 5,
            "qb": bucket_ms,
            "qn": buckets,
            "tc": 12,
            "tf": 2,
            "ts": 4,
            "c0": 3,
            "f0": 1,
            "s0": 1,
            **ring,
        },
    )
    collector = ExporterCollector(client, prefix=prefix)
    samples = scrape(client, prefix, collector)
    assert value(samples, "distbreaker_breaker_window_calls", service=service) == 7
    assert value(samples, "distbreaker_breaker_window_failures", service=service) == 1
    assert value(samples, "distbreaker_breaker_window_slow_calls", service=service) == 2
    trips = collector.round_trips
    scrape(client, prefix, collector)  # the layout is now known: one pass
    assert collector.round_trips - trips == 2  # SCAN + the pipeline


def test_transitions_from_the_events_stream(client: Any, prefix: str) -> None:
    """Transitions are counted by new state from the events stream, config changes are not, and
    each scrape adds only the entries appended since the last one."""
    service = unique("flap")
    admin = Admin(client, prefix=prefix)
    b = breaker(client, prefix, service, minimum_calls=1, open_duration=600)
    fail(b)  # closed -> open
    admin.trip(service, reason="x")  # open -> forced_open
    admin.trip(service, reason="again")  # forced_open -> forced_open (a re-trip)
    admin.set_config(service, minimum_calls=5)  # not a transition
    collector = ExporterCollector(client, prefix=prefix)
    first = scrape(client, prefix, collector)
    name = "distbreaker_breaker_transitions_total"
    assert value(first, name, service=service, to="open") == 1
    assert value(first, name, service=service, to="forced_open") == 2
    assert (name, (("service", service), ("to", "closed"))) not in first
    admin.reset(service)
    admin.disable(service)
    second = scrape(client, prefix, collector)
    assert value(second, name, service=service, to="open") == 1
    assert value(second, name, service=service, to="forced_open") == 2
    assert value(second, name, service=service, to="closed") == 1
    assert value(second, name, service=service, to="disabled") == 1


def test_corrupt_and_foreign_keys_count_errors_and_hide_nothing(r: redis.Redis, client: Any, prefix: str) -> None:
    """A key of another type, a hash with an unknown state, unreadable counts, a damaged ring
    bucket or a foreign stream each count one scrape error; every good breaker is still reported."""
    good = [unique("good") for _ in range(3)]
    for service in good:
        breaker(client, prefix, service).call(lambda: None)
    r.set(f"{prefix}:{{string}}", "x")  # foreign: WRONGTYPE
    r.hset(f"{prefix}:{{other}}", "name", "not a breaker")  # foreign: no breaker field
    r.hset(f"{prefix}:{{state}}", mapping={"st": "sideways"})  # corrupt
    r.hset(f"{prefix}:{{counts}}", mapping={"st": "closed", "tc": "many"})  # corrupt
    epoch = server_ms(r) // 6000
    r.hset(
        f"{prefix}:{{ring}}",
        mapping={"st": "closed", "be": epoch - 3, "tc": 5, "tf": 0, "ts": 0, f"r{(epoch - 12) % 10}": "x:y"},
    )  # corrupt (its slot expires)
    r.hset(f"{prefix}:{{stream}}", "st", "closed")
    r.set(f"{prefix}:{{stream}}:events", "not a stream")  # its stream is foreign; the breaker is fine
    notes: list[str] = []
    collector = ExporterCollector(client, prefix=prefix, on_error=notes.append)
    samples = scrape(client, prefix, collector)
    for service in [*good, "stream"]:
        assert value(samples, "distbreaker_breaker_state", service=service) == 0
    reported = {dict(k[1]).get("service") for k in samples if k[0] == "distbreaker_breaker_state"}
    assert reported == {*good, "stream"}
    assert value(samples, "distbreaker_exporter_scrape_errors_total", kind="foreign") == 3
    assert value(samples, "distbreaker_exporter_scrape_errors_total", kind="corrupt") == 3
    assert value(samples, "distbreaker_exporter_scrape_errors_total", kind="redis") == 0
    assert len(notes) == 6 and all(prefix in n for n in notes)
    again = scrape(client, prefix, collector)  # a counter: it keeps growing
    assert value(again, "distbreaker_exporter_scrape_errors_total", kind="corrupt") == 6


def test_unreachable_redis_is_an_error_not_a_failed_page() -> None:
    """Redis down: the page still answers, with redis_up 0 and a redis scrape error (secrets
    stay out of the notes)."""
    notes: list[str] = []
    dead = connect("redis://user:hunter2@127.0.0.1:1/0", timeout=0.2)
    samples = scrape(dead, "x", ExporterCollector(dead, prefix="x", on_error=notes.append))
    assert value(samples, "distbreaker_exporter_redis_up") == 0
    assert value(samples, "distbreaker_exporter_scrape_errors_total", kind="redis") == 1
    assert value(samples, "distbreaker_exporter_breakers") == 0
    assert notes and not any("hunter2" in n for n in notes)


def commandstats(r: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in r.info("commandstats").items()}


def test_a_thousand_breakers_in_one_pipelined_pass(r: redis.Redis, client: Any, prefix: str) -> None:
    """1,000 breakers: SCAN, then one pipeline of one HMGET and one XRANGE per breaker and a TIME;
    no script runs (INFO commandstats)."""
    n = 1000
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(
            f"{prefix}:{{svc-{i:04d}}}",
            mapping={"st": "open" if i % 10 == 0 else "closed", "ou": 2**52, "g": 1, "tc": i % 7, "tf": 0, "ts": 0},
        )
    pipe.execute()
    collector = ExporterCollector(client, prefix=prefix)
    r.config_resetstat()
    samples = scrape(client, prefix, collector)
    stats = commandstats(r)
    states = [v for (name, _), v in samples.items() if name == "distbreaker_breaker_state"]
    assert len(states) == n and states.count(2) == n // 10
    assert stats["hmget"] == n and stats["xrange"] == n and stats["time"] == 1
    assert not {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "hgetall"} & set(stats)
    assert collector.round_trips == stats["scan"] + 1  # the SCAN pages, then one pipeline
    assert value(samples, "distbreaker_exporter_breakers") == n


def test_wsgi_app_serves_the_page(client: Any, prefix: str) -> None:
    """make_wsgi_app answers a GET with the Prometheus text of the breakers."""
    from wsgiref.util import setup_testing_defaults

    service = unique("wsgi")
    breaker(client, prefix, service).call(lambda: None)
    environ: dict[str, Any] = {"PATH_INFO": "/metrics"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(make_wsgi_app(client, prefix=prefix)(environ, lambda s, h: status.append(s)))
    assert status == ["200 OK"]
    assert value(parse(body.decode()), "distbreaker_breaker_state", service=service) == 0


def test_cli_once_prints_one_scrape(redis_url: str, client: Any, prefix: str) -> None:
    """`distbreaker exporter --once` prints the page on stdout and exits 0."""
    service = unique("cli")
    Admin(client, prefix=prefix).trip(service)
    result = CliRunner().invoke(cli, ["--url", redis_url, "exporter", "--prefix", prefix, "--once"])
    assert result.exit_code == 0, result.stderr
    assert value(parse(result.stdout), "distbreaker_breaker_state", service=service) == 3


def test_cli_serves_metrics_on_loopback_until_interrupted(redis_url: str, client: Any, prefix: str) -> None:
    """`distbreaker exporter --port 0` listens on 127.0.0.1, serves /metrics, prints its URL
    on stderr, and exits 0 on Ctrl-C."""
    service = unique("served")
    breaker(client, prefix, service).call(lambda: None)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'cli'}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distbreaker_cli.app",
            "--url",
            redis_url,
            "--prefix",
            prefix,
            "exporter",
            "--port",
            "0",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # blocks until the server is up (or the process ended)
        assert line.startswith("Serving http://127.0.0.1:"), line
        url = line.split()[1]
        with urllib.request.urlopen(url, timeout=10) as page:
            samples = parse(page.read().decode())
        assert value(samples, "distbreaker_breaker_state", service=service) == 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.slow
@pytest.mark.cluster
def test_cluster_every_master(redis_cluster: Any, prefix: str) -> None:
    """On a Cluster, breakers on every master are reported (the collector, and the CLI with --cluster)."""
    from distbreaker import connect_cluster

    rc = connect_cluster(redis_cluster.url, timeout=5)
    try:
        services = [f"c{i}" for i in range(30)]
        for service in services:
            Admin(rc, prefix=prefix).trip(service)
        nodes = {rc.get_node_from_key(f"{prefix}:{{{s}}}").name for s in services}
        assert len(nodes) == 3
        samples = scrape(rc, prefix)
        for service in services:
            assert value(samples, "distbreaker_breaker_state", service=service) == 3
        assert value(samples, "distbreaker_breaker_transitions_total", service="c0", to="forced_open") == 1
        result = CliRunner().invoke(
            cli, ["--cluster", "--url", redis_cluster.url, "--prefix", prefix, "exporter", "--once"]
        )
        assert result.exit_code == 0, result.stderr
        cli_samples = parse(result.stdout)
        assert all(value(cli_samples, "distbreaker_breaker_state", service=s) == 3 for s in services)
    finally:
        rc.close()


def test_a_read_only_acl_user_is_enough(redis_server_factory: Any) -> None:
    """The exporter needs only SCAN, HMGET, XRANGE and TIME, and for bulkheads ZCOUNT, ZSCORE
    and ZRANGEBYSCORE (plain reads of their sorted sets, no script), on the prefix's keys (the
    ACL line of docs/observability.md): with nothing more, every breaker and bulkhead is read
    without an error."""
    from distbreaker import Bulkhead

    server = redis_server_factory()
    admin_client = server.client()
    prefix, service = "acl", unique("acl")
    ops = connect(server.url, timeout=5)
    Admin(ops, prefix=prefix).trip(service, reason="x")
    bulkhead = Bulkhead("pay", ops, max_concurrent=7, prefix=prefix)
    lease = bulkhead.acquire()
    admin_client.execute_command(
        "ACL",
        "SETUSER",
        "exporter",
        "on",
        ">exporter-pw",
        "resetkeys",
        f"~{prefix}:*",
        "resetchannels",
        "-@all",
        "+scan",
        "+hmget",
        "+xrange",
        "+time",
        "+zcount",
        "+zscore",
        "+zrangebyscore",
    )
    reader = connect(server.url.replace("redis://", "redis://exporter:exporter-pw@"), timeout=5)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.hset(f"{prefix}:{{{service}}}", "st", "closed")  # it cannot write
        notes: list[str] = []
        samples = scrape(reader, prefix, ExporterCollector(reader, prefix=prefix, on_error=notes.append))
        assert not notes
        assert value(samples, "distbreaker_breaker_state", service=service) == 3
        assert value(samples, "distbreaker_breaker_transitions_total", service=service, to="forced_open") == 1
        assert value(samples, "distbreaker_bulkhead_in_use", bulkhead="pay") == 1
        assert value(samples, "distbreaker_bulkhead_max_concurrent", bulkhead="pay") == 7
    finally:
        bulkhead.release(lease)
        reader.close()
        ops.close()


async def test_asgi_app_serves_the_page(client: Any, prefix: str) -> None:
    """make_asgi_app answers an HTTP GET with the Prometheus text of the breakers."""
    from distbreaker.exporter import make_asgi_app

    service = unique("asgi")
    Admin(client, prefix=prefix).disable(service)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": []}
    await make_asgi_app(client, prefix=prefix)(scope, receive, send)
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert value(parse(body), "distbreaker_breaker_state", service=service) == 4


def test_binary_garbage_is_a_scrape_error_not_a_failed_page(r: redis.Redis, client: Any, prefix: str) -> None:
    """Bytes that are not UTF-8 in a key name, a hash field or an event are counted or skipped;
    the page still answers with the other breakers."""
    service = unique("fine")
    Admin(client, prefix=prefix).trip(service)
    r.hset(f"{prefix}:{{bad-st}}", "st", b"\xff\xfe")
    r.hset(f"{prefix}:{{bad-tc}}", mapping={"st": "closed", "tc": b"\xff"})
    r.hset(prefix.encode() + b":{\xff}", "st", "closed")  # a key name that is not UTF-8
    r.xadd(f"{prefix}:{{{service}}}:events", {b"from": b"\xff", b"to": b"\xfe"})
    notes: list[str] = []
    samples = scrape(client, prefix, ExporterCollector(client, prefix=prefix, on_error=notes.append))
    assert value(samples, "distbreaker_breaker_state", service=service) == 3
    assert value(samples, "distbreaker_breaker_transitions_total", service=service, to="forced_open") == 1
    assert value(samples, "distbreaker_exporter_scrape_errors_total", kind="corrupt") == 2
    assert value(samples, "distbreaker_exporter_scrape_errors_total", kind="foreign") == 1
