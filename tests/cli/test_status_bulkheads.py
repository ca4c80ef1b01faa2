"""`distbreaker status` (the fleet view) says that bulkheads exist, cheaply, against a real server."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner, Result

from distbreaker import Breaker, BreakerConfig, Bulkhead
from distbreaker_cli.app import cli

Run = Callable[..., Result]
READS = {"zcount", "zscore", "zrangebyscore", "eval", "evalsha", "fcall", "eval_ro", "evalsha_ro", "fcall_ro"}


@pytest.fixture
def run(redis_url: str, prefix: str) -> Run:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix, *args])

    return invoke


def breaker(client: redis.Redis, prefix: str, service: str) -> None:
    b = Breaker(service, client, BreakerConfig(redis_timeout=2), prefix=prefix, listen=False)
    try:
        b.call(lambda: None)
    finally:
        b.close()


def commandstats(r: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in r.info("commandstats").items()}


def test_fleet_view_names_how_many_bulkheads_exist(run: Run, client: redis.Redis, r: redis.Redis, prefix: str) -> None:
    """Two bulkheads: the table of breakers on stdout, then one line on stderr pointing to
    `distbreaker bulkheads`; found with one SCAN pattern and no read of the bulkheads."""
    breaker(client, prefix, "payments")
    for name in ("pay", "search"):
        Bulkhead(name, client, max_concurrent=3, prefix=prefix).call(lambda: None)
    r.config_resetstat()
    result = run("status")
    stats = commandstats(r)
    assert result.exit_code == 0, result.stderr
    assert "payments" in result.stdout and "bulkhead" not in result.stdout
    assert result.stderr == "2 bulkheads: see `distbreaker bulkheads`\n"
    assert not READS & set(stats)  # the bulkheads are counted, not read


def test_one_bulkhead_and_no_breaker(run: Run, client: redis.Redis, prefix: str) -> None:
    """No breaker, one bulkhead: the empty-prefix note, then the bulkhead line (singular)."""
    Bulkhead("pay", client, max_concurrent=1, prefix=prefix).call(lambda: None)
    result = run("status")
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr.splitlines() == [
        f"no breakers under prefix {prefix!r}",
        "1 bulkhead: see `distbreaker bulkheads`",
    ]


def test_no_line_without_bulkheads_with_json_or_for_named_services(run: Run, client: redis.Redis, prefix: str) -> None:
    """Without bulkheads nothing is added; -o json keeps its one list of breakers (no line on
    stderr either); naming services is not the fleet view (no line)."""
    breaker(client, prefix, "payments")
    assert run("status").stderr == ""
    Bulkhead("pay", client, max_concurrent=1, prefix=prefix).call(lambda: None)
    for args in (("--json", "status"), ("status", "-o", "json")):
        result = run(*args)
        assert result.exit_code == 0, result.stderr
        assert [doc["service"] for doc in json.loads(result.stdout)] == ["payments"]
        assert result.stderr == ""
    named = run("status", "payments")
    assert named.exit_code == 0 and named.stderr == ""
    plain = run("status", "-o", "plain", "--no-headers")
    assert plain.stdout.splitlines()[0].split("\t")[0] == "payments" and len(plain.stdout.splitlines()) == 1
    assert plain.stderr == "1 bulkhead: see `distbreaker bulkheads`\n"  # stdout stays parseable
