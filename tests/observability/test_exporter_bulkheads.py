"""The exporter's bulkhead series (`distbreaker_bulkhead_*`) on a real server.

The oracle is bulkhead.lua: `Bulkhead.state()` runs the script's read on the same sorted set
right after the scrape. Leases are made expired by granting them through the script with an
explicit clock in the past (the script takes a `now` override), never by sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _obs import unique
from click.testing import CliRunner
from test_exporter import breaker, commandstats, parse, scrape, server_ms, value

from distbreaker import Bulkhead, _bulkhead_otel, _otel, connect
from distbreaker._scripts import OTHER_SCRIPTS
from distbreaker.bulkhead import bulkhead_key, bulkheads
from distbreaker.exporter import SERIES, ExporterCollector
from distbreaker_cli.app import cli

SCRIPTS = {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = connect(redis_url, timeout=5)
    yield c
    c.close()


def expired_lease(r: redis.Redis, prefix: str, name: str, max_concurrent: int = 5) -> None:
    """A lease granted by bulkhead.lua 10 s ago for 0.5 s and never released (its worker died)."""
    past = server_ms(r) - 10_000
    granted = r.eval(
        OTHER_SCRIPTS["bulkhead"].text, 1, bulkhead_key(prefix, name), "acquire", str(past),
        str(max_concurrent), "500", f"dead:{name}",
    )  # fmt: skip
    assert granted[0] == 1


def test_two_held_leases_show_in_use_2_with_the_limit(client: Any, prefix: str) -> None:
    """Two held leases: in_use 2, max_concurrent and lease_timeout of the grant, the earliest
    expiry; a released lease is no longer counted; `distbreaker exporter --once` says the same."""
    name = unique("pay")
    bh = Bulkhead(name, client, max_concurrent=50, lease_timeout=30, prefix=prefix)
    a, b = bh.acquire(), bh.acquire()
    try:
        samples = scrape(client, prefix)
        assert value(samples, "distbreaker_bulkhead_in_use", bulkhead=name) == 2
        assert value(samples, "distbreaker_bulkhead_max_concurrent", bulkhead=name) == 50
        assert value(samples, "distbreaker_bulkhead_lease_timeout_seconds", bulkhead=name) == 30
        assert 0 < value(samples, "distbreaker_bulkhead_next_expiry_seconds", bulkhead=name) <= 30
        assert value(samples, "distbreaker_exporter_bulkheads") == 1
        assert value(samples, "distbreaker_exporter_breakers") == 0
        bulkhead_series = {s for s in SERIES if s.startswith("distbreaker_bulkhead_")}
        assert {n for n, labels in samples if ("bulkhead", name) in labels} == bulkhead_series
        assert bh.state().in_use == 2  # the script agrees
        bh.release(a)
        assert value(scrape(client, prefix), "distbreaker_bulkhead_in_use", bulkhead=name) == 1
    finally:
        bh.release(b)
    after = scrape(client, prefix)
    assert value(after, "distbreaker_bulkhead_in_use", bulkhead=name) == 0
    assert ("distbreaker_bulkhead_next_expiry_seconds", (("bulkhead", name),)) not in after  # no live lease
    assert value(after, "distbreaker_bulkhead_max_concurrent", bulkhead=name) == 50  # kept after release


def test_cli_once_shows_the_bulkheads(redis_url: str, client: Any, prefix: str) -> None:
    """`distbreaker exporter --once` prints the bulkhead series beside the breakers'."""
    name = unique("pay")
    bh = Bulkhead(name, client, max_concurrent=3, prefix=prefix)
    with bh:
        result = CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix, "exporter", "--once"])
    assert result.exit_code == 0, result.stderr
    samples = parse(result.stdout)
    assert value(samples, "distbreaker_bulkhead_in_use", bulkhead=name) == 1
    assert value(samples, "distbreaker_bulkhead_max_concurrent", bulkhead=name) == 3


def test_an_expired_lease_is_not_counted(r: redis.Redis, client: Any, prefix: str) -> None:
    """A lease past its expiry that no release removed (a dead worker's) is not in use, as
    bulkhead.lua counts at the server's time; the scrape writes nothing (it stays stored)."""
    name = unique("pay")
    expired_lease(r, prefix, name)
    bh = Bulkhead(name, client, max_concurrent=5, lease_timeout=60, prefix=prefix)
    lease = bh.acquire()  # prunes the dead lease: make another one after it
    expired_lease(r, prefix, name)
    try:
        assert r.zscore(bulkhead_key(prefix, name), f"dead:{name}") is not None
        samples = scrape(client, prefix)
        assert value(samples, "distbreaker_bulkhead_in_use", bulkhead=name) == 1
        assert 59 < value(samples, "distbreaker_bulkhead_next_expiry_seconds", bulkhead=name) <= 60
        # the last grant (the script call above) said 0.5 s and 5
        assert value(samples, "distbreaker_bulkhead_lease_timeout_seconds", bulkhead=name) == 0.5
        assert bh.state().in_use == 1  # the script agrees
        assert r.zscore(bulkhead_key(prefix, name), f"dead:{name}") is not None  # nothing pruned
    finally:
        bh.release(lease)


def test_no_script_runs(r: redis.Redis, client: Any, prefix: str) -> None:
    """20 bulkheads and 5 breakers: one SCAN pass, the breakers' pipeline, then TIME and one
    pipeline of ZCOUNT, two ZSCORE and ZRANGEBYSCORE per bulkhead; no script (INFO commandstats)."""
    n = 20
    held = []
    for i in range(n):
        bh = Bulkhead(f"b{i:02d}", client, max_concurrent=2, prefix=prefix)
        held.append((bh, bh.acquire()))
    for i in range(5):
        breaker(client, prefix, f"s{i}").call(lambda: None)
    collector = ExporterCollector(client, prefix=prefix)
    try:
        r.config_resetstat()
        samples = scrape(client, prefix, collector)
        stats = commandstats(r)
    finally:
        for bh, lease in held:
            bh.release(lease)
    assert [value(samples, "distbreaker_bulkhead_in_use", bulkhead=f"b{i:02d}") for i in range(n)] == [1] * n
    assert not SCRIPTS & set(stats)
    assert stats["zcount"] == n and stats["zscore"] == 2 * n and stats["zrangebyscore"] == n
    assert stats["time"] == 2 and stats["hmget"] == 5
    assert collector.round_trips == stats["scan"] + 3  # SCAN pages, breakers, TIME, bulkheads
    assert value(samples, "distbreaker_exporter_bulkheads") == n


def test_a_key_that_is_not_a_bulkhead_is_an_error_that_hides_nothing(r: redis.Redis, client: Any, prefix: str) -> None:
    """A string where a bulkhead's sorted set would be counts one foreign scrape error; the other
    bulkheads and the breakers are still reported."""
    name = unique("pay")
    Bulkhead(name, client, max_concurrent=2, prefix=prefix).call(lambda: None)
    r.set(bulkhead_key(prefix, "fake"), "x")
    service = unique("svc")
    breaker(client, prefix, service).call(lambda: None)
    notes: list[str] = []
    samples = scrape(client, prefix, ExporterCollector(client, prefix=prefix, on_error=notes.append))
    assert value(samples, "distbreaker_bulkhead_in_use", bulkhead=name) == 0
    assert ("distbreaker_bulkhead_in_use", (("bulkhead", "fake"),)) not in samples
    assert value(samples, "distbreaker_breaker_state", service=service) == 0
    assert value(samples, "distbreaker_exporter_scrape_errors_total", kind="foreign") == 1
    assert len(notes) == 1 and "fake" in notes[0]


def test_series_names_do_not_collide_with_the_workers_metrics() -> None:
    """No exporter series has the Prometheus name of a worker's OpenTelemetry metric (a sum
    over both would count every slot twice): the per-process gauge is `..._held`."""
    workers = set(_otel.PROMETHEUS.values()) | set(_bulkhead_otel.PROMETHEUS.values())
    assert not workers & set(SERIES)
    assert "distbreaker_bulkhead_in_use" in SERIES and "distbreaker_bulkhead_held" in workers


@pytest.mark.slow
@pytest.mark.cluster
def test_cluster_bulkheads_of_every_master(redis_cluster: Any, prefix: str) -> None:
    """On a Cluster, the bulkheads of every master are reported, each read on its own node; the
    CLI's `bulkheads()` reads them all through the Cluster client."""
    from distbreaker import connect_cluster

    rc = connect_cluster(redis_cluster.url, timeout=5)
    held = []
    try:
        names = [f"bh{i}" for i in range(30)]
        for name in names:
            bh = Bulkhead(name, rc, max_concurrent=4, prefix=prefix)
            held.append((bh, bh.acquire()))
        assert len({rc.get_node_from_key(bulkhead_key(prefix, n)).name for n in names}) == 3
        samples = scrape(rc, prefix)
        assert all(value(samples, "distbreaker_bulkhead_in_use", bulkhead=n) == 1 for n in names)
        assert all(value(samples, "distbreaker_bulkhead_max_concurrent", bulkhead=n) == 4 for n in names)
        assert value(samples, "distbreaker_exporter_bulkheads") == 30
        assert value(samples, "distbreaker_exporter_redis_up") == 1
        found = bulkheads(rc, prefix)  # the same reader through the Cluster client (the CLI's)
        assert [(s.name, s.in_use, s.max_concurrent) for s in found] == [(n, 1, 4) for n in sorted(names)]
    finally:
        for bh, lease in held:
            bh.release(lease)
        rc.close()
