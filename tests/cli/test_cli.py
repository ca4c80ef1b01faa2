"""The CLI so far (--version, status) through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import redis
from _servers import ServerFactory
from click.testing import CliRunner

from distbreaker import Breaker, BreakerConfig, connect
from distbreaker_cli.app import cli


def test_version() -> None:
    """--version prints the package version."""
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.stdout


def test_status_table_and_json(redis_url: str, prefix: str) -> None:
    """status shows a table for people and one JSON document with --json."""
    b = Breaker("payments", connect(redis_url, timeout=2), BreakerConfig(minimum_calls=1), prefix=prefix)
    b.call(lambda: None)
    b.trip(for_=600, reason="INC-42", actor="alice")
    runner = CliRunner()
    result = runner.invoke(cli, ["--url", redis_url, "--prefix", prefix, "status", "payments"])
    assert result.exit_code == 0, result.stderr
    assert "payments" in result.stdout and "forced_open" in result.stdout and "alice: INC-42" in result.stdout
    result = runner.invoke(cli, ["--url", redis_url, "--prefix", prefix, "--json", "status"])
    assert result.exit_code == 0
    [doc] = json.loads(result.stdout)
    assert doc["service"] == "payments" and doc["state"] == "forced_open" and doc["reason"] == "INC-42"
    assert 590 < doc["retry_after"] <= 600


def test_unknown_service_exits_3(redis_url: str, prefix: str) -> None:
    """An unknown service is one line on stderr and exit code 3."""
    result = CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix, "status", "nope"])
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and "nope" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_redis_exits_69_without_password() -> None:
    """An unreachable Redis exits 69 and never prints the password of the URL."""
    result = CliRunner().invoke(
        cli, ["--url", "redis://:hunter2@127.0.0.1:1/0", "--timeout", "0.5", "status", "payments"]
    )
    assert result.exit_code == 69
    assert "hunter2" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_wrong_password_exits_77_as_subprocess(redis_server_factory: ServerFactory) -> None:
    """As a real process: a wrong password exits 77 with one line on stderr and no secret."""
    server = redis_server_factory("--requirepass", "right-one")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "distbreaker_cli.app",
            "--url",
            f"redis://:wrong-one@127.0.0.1:{server.port}/0",
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 77, proc.stderr
    assert "wrong-one" not in proc.stderr and "right-one" not in proc.stderr
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1


def test_non_breaker_key_is_an_error_not_a_traceback(r: redis.Redis, redis_url: str, prefix: str) -> None:
    """A non-breaker value at the name is a one-line error, exit 1."""
    r.set(f"{prefix}:{{odd}}", "x")
    result = CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix, "status", "odd"])
    assert result.exit_code == 1 and "WRONGTYPE" in result.stderr and "Traceback" not in result.stderr
