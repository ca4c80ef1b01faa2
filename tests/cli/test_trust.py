"""The CLI against bad input, bad data and secrets (issue 14 items 9-12, 15, 16; issue 18 items 5, 10).

Every case runs the CLI as a real process against a real server (or a closed port) and checks
the exit code, that stderr is one ``Error:`` line without a traceback, and what Redis holds
afterwards. Hostile data is written straight into Redis (HSET / XADD), as an older version or
another writer would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from distbreaker import Admin, Breaker, BreakerConfig

CLI = [sys.executable, "-m", "distbreaker_cli.app"]
SECRET = "Zq7Se@cretValueXy"  # a password with an "@" in it


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a process (stdin closed, not a terminal), output captured as text."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.stderr.startswith("Error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc.stderr


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def base(redis_url: str, prefix: str) -> list[str]:
    return ["--url", redis_url, "--prefix", prefix]


def use(client: redis.Redis, prefix: str, *services: str) -> None:
    """A worker made one call through each service."""
    for service in services:
        b = Breaker(service, client, BreakerConfig(redis_timeout=2), prefix=prefix, listen=False)
        try:
            b.call(lambda: None)
        finally:
            b.close()


# -- items 9, 10: bad input gives exit 2 and one line, before anything is sent ----------------
@pytest.mark.parametrize(
    "args",
    [
        ["trip", "svc", "--for", "1e300", "--reason", "r"],
        ["disable", "svc", "--for", "1e300", "--reason", "r"],
        ["trip", "svc", "--for", "inf", "--reason", "r"],
        ["trip", "svc", "--reason", "\x1b[2Jwiped"],
        ["trip", "svc", "--reason", "INC-1\nsvc  closed  0  forged"],
        ["trip", "svc", "--reason", "a\rb"],
        ["trip", "svc", "--reason", "osc \x1b]0;title\x07"],
        ["disable", "svc", "--reason", "c1 \x9b31m"],
        ["reset", "svc", "--reason", "del \x7f"],
        ["trip", "svc", "--reason", "ok", "--actor", "eve\nmallory"],
        ["config", "svc", "--set", "minimum_calls=3", "--reason", "x\x1by"],
        ["config", "svc", "--set", "minimum_calls=3", "--actor", "a\tb"],
        ["config", "svc", "--clear", "--reason", "x\ny"],
    ],
)
def test_bad_operator_input_exits_2_and_writes_nothing(
    base: list[str], client: redis.Redis, prefix: str, args: list[str]
) -> None:
    use(client, prefix, "svc")
    before = client.hgetall(f"{prefix}:{{svc}}")
    events = client.xlen(f"{prefix}:{{svc}}:events")
    proc = cli(*base, *args)
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc)
    assert proc.stdout == ""
    after = client.hgetall(f"{prefix}:{{svc}}")
    assert after[b"st"] == b"closed" and after.get(b"fu") == before.get(b"fu") and after.get(b"ov") == before.get(b"ov")
    assert client.xlen(f"{prefix}:{{svc}}:events") == events


@pytest.mark.parametrize(
    "args",
    [
        ["trip", "svc", "--for", "1e300", "--reason", "r"],
        ["trip", "svc", "--reason", "\x1b[2J"],
        ["--timeout", "1e999", "status"],
        ["--timeout", "nan", "status"],
        ["--timeout", "inf", "status"],
        ["--timeout", "0", "status"],
        ["status", "--watch", "--interval", "nan"],
        ["status", "--watch", "--interval", "1e999"],
        ["status", "--watch", "--interval", "inf"],
    ],
)
def test_bad_input_exits_2_even_with_redis_down(args: list[str]) -> None:
    """Refused before any connection: exit 2 (usage), not 69 (unreachable) or 1 (unexpected)."""
    proc = cli("--url", f"redis://127.0.0.1:{closed_port()}/0", *args)
    assert proc.returncode == 2, proc.stderr
    assert "unexpected" not in one_error_line(proc)


# -- item 16: data from Redis is escaped at output -----------------------------------------------
HOSTILE = "INC-9\x1b[2J\x1b]0;pwned\x07\nsvc-forged  closed  0  0  0  -  forged row\rX\u202e"


def test_status_and_history_escape_stored_text(base: list[str], client: redis.Redis, prefix: str) -> None:
    """A reason, cause or actor written by another writer (or an older version) with ESC, OSC,
    \\n, \\r and a bidi override is printed escaped: no control byte reaches the terminal and no
    line is added to the tables."""
    admin = Admin(client, prefix=prefix)
    use(client, prefix, "svc", "other")
    admin.trip("svc", reason="INC-9", actor="alice")
    key = f"{prefix}:{{svc}}"
    client.hset(
        key, mapping={"fr": HOSTILE, "fa": "eve\x1b[31m", "lc": "manual trip by eve: " + HOSTILE, "la": "eve\r\n"}
    )
    client.xadd(
        f"{key}:events",
        {
            "ts": "1700000000000",
            "from": "closed",
            "to": "forced_open",
            "cause": "manual trip: " + HOSTILE,
            "actor": "eve\n\x1b[1m",
            "gen": "9",
        },
    )
    for args in (["status"], ["status", "svc"], ["history", "svc"], ["status", "--watch", "--count", "1"]):
        proc = cli(*base, *args)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert not any(c in out for c in "\x1b\x07\r\u202e"), (args, out)
        assert "forged" not in "".join(line.split()[0] for line in out.splitlines() if line.split()), out
        assert "\\x1b[2J" in out or "\\x1b" in out, out  # shown, escaped
    status = cli(*base, "status").stdout.splitlines()
    assert len(status) == 3 and status[0].startswith("SERVICE")  # header, other, svc
    history = cli(*base, "history", "svc").stdout.splitlines()
    assert len(history) == 1 + client.xlen(f"{key}:events")
    [doc] = json.loads(cli(*base, "--json", "status", "svc").stdout)
    assert doc["reason"] == HOSTILE  # JSON keeps the text exactly (escaped by JSON itself)


# -- item 11: corrupt data ---------------------------------------------------------------------
def test_corrupt_config_is_a_clear_error(base: list[str], client: redis.Redis, prefix: str) -> None:
    use(client, prefix, "svc")
    client.hset(f"{prefix}:{{svc}}", "cfg", "garbage")
    for args in (["status", "svc"], ["config", "svc"], ["--json", "status", "svc"]):
        proc = cli(*base, *args)
        err = one_error_line(proc)
        assert proc.returncode == 65, err
        assert f"{prefix}:{{svc}}" in err and "distbreaker reset svc" in err and "ValueError" not in err


# (a broken q* field is a cache of cfg: workers get NOCONFIG and send it again; not corrupt)
@pytest.mark.parametrize(("field", "value"), [("st", "garbage"), ("st", ""), ("tc", "garbage")])
def test_corrupt_state_is_a_clear_error(
    base: list[str], client: redis.Redis, prefix: str, field: str, value: str
) -> None:
    """A state no version writes (read by Python, or making the script fail) exits 65."""
    use(client, prefix, "svc")
    client.hset(f"{prefix}:{{svc}}", field, value)
    proc = cli(*base, "status", "svc")
    err = one_error_line(proc)
    assert proc.returncode == 65 and "distbreaker reset svc" in err and "KeyError" not in err


def test_history_skips_foreign_entries_with_a_note(base: list[str], client: redis.Redis, prefix: str) -> None:
    Admin(client, prefix=prefix).trip("svc", reason="INC-1", actor="ops")
    client.xadd(f"{prefix}:{{svc}}:events", {"hello": "world"})
    proc = cli(*base, "history", "svc")
    assert proc.returncode == 0, proc.stderr
    assert "manual trip by ops: INC-1" in proc.stdout and len(proc.stdout.splitlines()) == 2
    assert "skipped 1" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli(*base, "--json", "history", "svc")
    assert proc.returncode == 0 and [e["actor"] for e in json.loads(proc.stdout)] == ["ops"]


# -- item 12: one bad key hides nothing ----------------------------------------------------------
@pytest.mark.parametrize("as_json", [False, True])
def test_status_lists_healthy_breakers_beside_broken_ones(
    base: list[str], client: redis.Redis, prefix: str, as_json: bool
) -> None:
    use(client, prefix, "alpha", "corrupt", "omega", "badcfg")
    client.set(f"{prefix}:{{wrongtype}}", "not a hash")
    client.hset(f"{prefix}:{{corrupt}}", "st", "garbage")
    client.hset(f"{prefix}:{{badcfg}}", "cfg", "1,2")
    proc = cli(*base, *(["--json"] if as_json else []), "status")
    assert proc.returncode == 1, proc.stderr
    err = one_error_line(proc)
    for name in ("wrongtype", "corrupt", "badcfg"):
        assert name in err
    assert "3 of 5 breakers could not be read" in err
    if as_json:
        assert [d["service"] for d in json.loads(proc.stdout)] == ["alpha", "omega"]
    else:
        assert [line.split()[0] for line in proc.stdout.splitlines()] == ["SERVICE", "alpha", "omega"]


# -- item 15: passwords never shown ----------------------------------------------------------------
@pytest.fixture
def at_user(client: redis.Redis, redis_url: str) -> Iterator[str]:
    """A URL of an ACL user whose password holds an "@" (``alice:Zq7Se@cretValueXy@host``)."""
    client.execute_command("ACL", "SETUSER", "alice-at", "on", f">{SECRET}", "~*", "&*", "+@all")
    host = redis_url.split("://", 1)[1].split("/", 1)[0].split("@")[-1]
    try:
        yield f"redis://alice-at:{SECRET}@{host}/0"
    finally:
        client.execute_command("ACL", "DELUSER", "alice-at")


def assert_no_secret(proc: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        for part in (secret, secret.split("@")[-1], secret.split("@")[0]):
            assert part not in proc.stdout + proc.stderr, (secret, proc.stdout, proc.stderr)


def test_doctor_and_watch_hide_a_password_with_an_at(at_user: str, prefix: str, client: redis.Redis) -> None:
    use(client, prefix, "svc")
    doctor = cli("--url", at_user, "--prefix", prefix, "doctor", "--pings", "2")
    assert doctor.returncode == 0, doctor.stderr
    assert "alice-at:***@127.0.0.1" in doctor.stderr
    assert_no_secret(doctor, SECRET)
    as_json = cli("--url", at_user, "--prefix", prefix, "doctor", "--json", "--pings", "2")
    assert json.loads(as_json.stdout)["url"].startswith("redis://alice-at:***@127.0.0.1:")
    assert_no_secret(as_json, SECRET)
    watch = cli("--url", at_user, "--prefix", prefix, "status", "--watch", "--count", "1")
    assert watch.returncode == 0 and "alice-at:***@127.0.0.1" in watch.stdout
    assert_no_secret(watch, SECRET)


def test_doctor_fail_line_hides_a_password_with_an_at(redis_url: str, client: redis.Redis, prefix: str) -> None:
    """A user that may not run scripts: doctor FAILs, and its Error line names the URL redacted."""
    client.execute_command("ACL", "SETUSER", "ro-at", "on", f">{SECRET}", "~*", "&*", "+@all", "-@scripting")
    host = redis_url.split("://", 1)[1].split("/", 1)[0].split("@")[-1]
    try:
        proc = cli("--url", f"redis://ro-at:{SECRET}@{host}/0", "--prefix", prefix, "doctor", "--pings", "1")
    finally:
        client.execute_command("ACL", "DELUSER", "ro-at")
    assert proc.returncode in (1, 77), proc.stderr
    assert "ro-at:***@" in proc.stderr.splitlines()[-1]
    assert_no_secret(proc, SECRET)


BARE = "bob:s3cr3tpw@localhost:{port}/0"
AT_DOWN = "redis://alice:Zq7Se@cretValueXy@127.0.0.1:{port}/0"


@pytest.mark.parametrize("url", [BARE, AT_DOWN])
@pytest.mark.parametrize("via_env", [False, True])
@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "svc"],
        ["status", "--watch", "--count", "1"],
        ["trip", "svc", "--reason", "r"],
        ["disable", "svc", "--reason", "r"],
        ["reset", "svc"],
        ["history", "svc"],
        ["config", "svc"],
        ["doctor"],
        ["--cluster", "status"],
    ],
)
def test_no_command_echoes_a_password(url: str, via_env: bool, args: list[str]) -> None:
    """A URL without a scheme, or with an "@" in its password, never shows the password:
    through --url or DISTBREAKER_URL, in every command, whatever the error."""
    url = url.format(port=closed_port())
    proc = (
        cli("--timeout", "0.5", *args, env={"DISTBREAKER_URL": url})
        if via_env
        else cli("--url", url, "--timeout", "0.5", *args)
    )
    assert proc.returncode in (2, 69), proc.stderr
    one_error_line(proc)
    assert_no_secret(proc, "s3cr3tpw", SECRET)


# -- issue 18 items 5 and 10 ---------------------------------------------------------------------
def test_global_options_after_the_command(redis_url: str, prefix: str, client: redis.Redis) -> None:
    use(client, prefix, "payments")
    proc = cli("status", "payments", "--url", redis_url, "--prefix", prefix, "--json")
    assert proc.returncode == 0, proc.stderr
    assert [d["service"] for d in json.loads(proc.stdout)] == ["payments"]
    proc = cli("--url", "redis://127.0.0.1:1/0", "history", "payments", "--url", redis_url, "--prefix", prefix)
    assert proc.returncode == 0, proc.stderr  # the one after the command wins
    proc = cli("--url", redis_url, "status", "--prefix", "bad prefix")
    assert proc.returncode == 2 and "prefix" in one_error_line(proc)


def test_trip_json_carries_the_transition_and_config_takes_a_reason(
    base: list[str], client: redis.Redis, prefix: str
) -> None:
    use(client, prefix, "payments")
    proc = cli(*base, "trip", "payments", "--reason", "INC-42", "--actor", "alice", "--json")
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout)["after"]["last_transition"]
    assert last is not None and last["cause"] == "manual trip by alice: INC-42" and last["to"] == "forced_open"
    [status] = json.loads(cli(*base, "--json", "status", "payments").stdout)
    assert status["last_transition"] == last
    proc = cli(*base, "config", "payments", "--set", "minimum_calls=7", "--reason", "INC-43", "--actor", "bob")
    assert proc.returncode == 0, proc.stderr
    [event] = Admin(client, prefix=prefix).history("payments", n=1)
    assert event.cause == "config set by bob (INC-43): minimum_calls=7" and event.actor == "bob (INC-43)"


@pytest.mark.parametrize(("field", "value"), [("st", "garbage"), ("cfg", "garbage"), ("tc", "garbage")])
def test_reset_rewrites_a_corrupt_breaker(
    base: list[str], client: redis.Redis, prefix: str, field: str, value: str
) -> None:
    use(client, prefix, "svc")
    client.hset(f"{prefix}:{{svc}}", field, value)
    proc = cli(*base, "reset", "svc", "--reason", "repair")
    assert proc.returncode == 0, proc.stderr
    assert "could not be read before" in proc.stderr
    assert cli(*base, "status", "svc").returncode == 0
