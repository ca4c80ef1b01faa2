"""The CLI on a Redis Cluster (--cluster): breakers live in different slots on different masters,
and status finds them all (SCAN on every master)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from _servers import Binary, Server, ServerFactory, free_port
from click.testing import CliRunner, Result
from redis.cluster import key_slot

from distbreaker_cli.app import cli

pytestmark = pytest.mark.slow  # a cluster takes ~2 s to form (CLUSTER_WRITABLE_DELAY)

RANGES = ((0, 5460), (5461, 10922), (10923, 16383))


@pytest.fixture
def cluster(redis_binary: Binary, redis_server_factory: ServerFactory) -> Iterator[list[Server]]:
    """Three masters on 127.0.0.1 (no replicas), slots split evenly; stopped by the factory."""
    if redis_binary.version < (7, 0, 0):
        pytest.skip("CLUSTER ADDSLOTSRANGE and cluster-port need a 7.0+ server")
    nodes = []
    for _ in RANGES:
        bus = free_port()
        nodes.append(
            (
                redis_server_factory(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    str(bus),
                ),
                bus,
            )
        )
    for (server, _), (lo, hi) in zip(nodes, RANGES):
        server.client().execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
    for server, _ in nodes:
        for other, bus in nodes:
            if other is not server:
                server.client().execute_command("CLUSTER", "MEET", "127.0.0.1", other.port, bus)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [s.client().execute_command("CLUSTER", "INFO") for s, _ in nodes]
        if all(b"cluster_state:ok" in (st if isinstance(st, bytes) else str(st).encode()) for st in states):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the cluster did not form: {states}")
    yield [s for s, _ in nodes]


def test_status_finds_breakers_on_every_master(cluster: list[Server], prefix: str) -> None:
    """Breakers whose slots sit on all three masters are tripped, listed and shown with --cluster."""
    services = []
    owners = set()
    for n in range(200):  # pick services until every master owns one
        service = f"svc-{n}"
        owner = next(i for i, (lo, hi) in enumerate(RANGES) if lo <= key_slot(f"{prefix}:{{{service}}}".encode()) <= hi)
        if owner not in owners:
            owners.add(owner)
            services.append(service)
    assert len(services) == 3
    url = cluster[0].url

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--cluster", "--url", url, "--prefix", prefix, *args])

    for service in services:
        result = run("trip", service, "--for", "5m", "--reason", "cluster test", "--actor", "alice", "--create")
        assert result.exit_code == 0, result.stderr
    result = run("status")
    assert result.exit_code == 0, result.stderr
    assert sorted(line.split()[0] for line in result.stdout.splitlines()[1:]) == sorted(services)
    docs = json.loads(run("--json", "status").stdout)
    assert {d["service"]: d["state"] for d in docs} == dict.fromkeys(services, "forced_open")
    result = run("history", services[1])
    assert "manual trip by alice: cluster test" in result.stdout
    result = run("config", services[2], "--set", "minimum_calls=7")
    assert result.exit_code == 0, result.stderr
    result = run("doctor", "--pings", "3")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "cluster" in result.stdout.splitlines()[0]

    # Without --cluster: the CLI asks the node (INFO cluster: cluster_enabled:1) and lists every
    # master's breakers all the same (it listed only the node's own before).
    plain = CliRunner().invoke(cli, ["--url", url, "--prefix", prefix, "-o", "plain", "--no-headers", "status"])
    assert plain.exit_code == 0, plain.stderr
    assert sorted(line.split("\t")[0] for line in plain.stdout.splitlines()) == sorted(services)
    globbed = CliRunner().invoke(
        cli, ["--url", url, "--prefix", prefix, "status", "svc-*", "--state", "forced_open", "-o", "json"]
    )
    assert sorted(d["service"] for d in json.loads(globbed.stdout)) == sorted(services)
