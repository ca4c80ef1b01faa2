"""Every command through click's runner against a real server: output, JSON, exit codes."""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from _servers import ServerFactory
from click.testing import CliRunner, Result

from distbreaker import Admin, Breaker, BreakerConfig, CircuitOpenError, State, connect
from distbreaker._scripts import SCRIPTS
from distbreaker_cli.app import cli

Run = Callable[..., Result]


@pytest.fixture
def run(redis_url: str, prefix: str) -> Run:
    """``run(*args, color=False)``: the CLI on the session server under this test's prefix."""

    def invoke(*args: str, color: bool = False, url: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--url", url or redis_url, "--prefix", prefix, *args], color=color)

    return invoke


@pytest.fixture
def make(client: redis.Redis, prefix: str) -> Iterator[Callable[..., Breaker]]:
    """``make(service, **config)``: worker-side breakers (no pub/sub), closed at teardown."""
    made: list[Breaker] = []

    def factory(service: str, **config: Any) -> Breaker:
        b = Breaker(service, client, BreakerConfig(redis_timeout=2, **config), prefix=prefix, listen=False)
        made.append(b)
        return b

    try:
        yield factory
    finally:
        for b in made:
            b.close()


def fail() -> None:
    raise RuntimeError("downstream failed")


def calls(b: Breaker, ok: int = 0, failed: int = 0) -> None:
    for _ in range(ok):
        b.call(lambda: None)
    for _ in range(failed):
        with pytest.raises(RuntimeError):
            b.call(fail)


def one_error_line(result: Result) -> str:
    """The result's stderr, checked to be exactly one ``Error: ...`` line and no traceback."""
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr


# -- status ---------------------------------------------------------------------------------
def test_status_table_shows_every_breaker(
    run: Run, make: Callable[..., Breaker], client: redis.Redis, prefix: str
) -> None:
    """status with no name lists every breaker under the prefix: state, counts, failure rate, slow
    calls, time left open or forced, and when it entered its state and why (for a forced breaker:
    who forced it and why)."""
    calls(make("payments", minimum_calls=100), ok=6, failed=2)
    calls(make("search", minimum_calls=4), failed=4)
    slow = make("slowpoke", minimum_calls=100, slow_call_duration=0.001)
    for _ in range(3):
        slow.call(time.sleep, 0.002)
    calls(make("inventory"), ok=1)
    Admin(client, prefix=prefix).trip("inventory", for_=600, reason="INC-42", actor="alice")
    result = run("status")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "STATE", "CALLS", "FAILED", "SLOW", "LEFT", "LAST", "TRANSITION"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == ["inventory", "payments", "search", "slowpoke"]
    assert rows["payments"].split()[1:6] == ["closed", "8", "2", "(25%)", "0"]
    assert rows["search"].split()[1] == "open" and ": failure_rate 1.00 >= 0.50 over 4 calls" in rows["search"]
    assert rows["search"].split()[5] in ("30s", "29s")
    assert rows["slowpoke"].split()[5] == "3"
    assert "10m" in rows["inventory"] and ": manual trip by alice: INC-42" in rows["inventory"]
    assert result.stderr == ""


def test_status_json_is_one_document_with_snapshot_fields(run: Run, make: Callable[..., Breaker]) -> None:
    """--json (global or after the command) prints one JSON list, Snapshot's field names plus the
    stored config; nothing else on stdout."""
    calls(make("payments", minimum_calls=3), ok=1, failed=2)
    for args in (("--json", "status"), ("status", "--json"), ("status", "payments", "--json")):
        result = run(*args)
        assert result.exit_code == 0, result.stderr
        [doc] = json.loads(result.stdout)
        assert doc["service"] == "payments" and doc["state"] == "open"
        assert doc["last_transition"]["cause"] == "failure_rate 0.67 >= 0.50 over 3 calls"
        assert 29 < doc["retry_after"] <= 30 and doc["open_count"] == 1
        assert doc["config"]["effective"]["minimum_calls"] == 3 and doc["config"]["overrides"] == {}
        assert doc["config"]["workers_disagree"] is False
        assert {"failure_rate", "slow_calls", "forced_until", "reason", "actor", "server_time"} <= set(doc)


def test_status_warns_when_workers_pass_different_configs(run: Run, make: Callable[..., Breaker]) -> None:
    """Workers of one breaker with different configs replace each other's fingerprint: status
    warns on stderr and marks it in --json; a breaker whose workers agree gets no warning."""
    calls(make("payments", minimum_calls=10), ok=1)
    calls(make("payments", minimum_calls=20), ok=1)
    calls(make("search"), ok=1)
    result = run("status")
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: payments: workers' config changed")
    assert "search" not in result.stderr and result.stderr.count("\n") == 1
    docs = {d["service"]: d for d in json.loads(run("--json", "status").stdout)}
    assert docs["payments"]["config"]["workers_disagree"] is True
    assert docs["payments"]["config"]["previous_fingerprint"] != docs["payments"]["config"]["fingerprint"]
    assert docs["search"]["config"]["workers_disagree"] is False


def test_status_of_an_empty_prefix(run: Run) -> None:
    """No breakers: a note on stderr and nothing on stdout; --json prints an empty list."""
    result = run("status")
    assert (result.exit_code, result.stdout) == (0, "")
    assert "no breakers under prefix" in result.stderr
    assert json.loads(run("--json", "status").stdout) == []


def test_state_is_coloured_only_when_asked(run: Run, make: Callable[..., Breaker], redis_url: str, prefix: str) -> None:
    """Colour shows on a terminal (the runner's color=True stands for one), never with --no-color,
    and never when piped."""
    calls(make("payments", minimum_calls=1), failed=1)
    assert "\x1b[31m" in run("status", color=True).stdout  # open: red
    args = ["--no-color", "--url", redis_url, "--prefix", prefix, "status"]
    assert "\x1b[" not in CliRunner().invoke(cli, args, color=True).stdout
    assert "\x1b[" not in run("status").stdout


def test_watch_refreshes_count_times(run: Run, make: Callable[..., Breaker]) -> None:
    """--watch redraws at --interval; --count bounds it; with --json each refresh is one line."""
    calls(make("payments"), ok=1)
    result = run("status", "--watch", "--interval", "0.05", "--count", "3")
    assert result.exit_code == 0
    assert result.stdout.count("distbreaker status") == 3 and result.stdout.count("payments  closed") == 3
    result = run("status", "--watch", "--interval", "0.05", "--count", "2", "--json")
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d[0]["service"] for d in docs] == ["payments", "payments"]


# -- trip / disable / reset -----------------------------------------------------------------
def test_trip_disable_reset_print_what_changed_and_are_recorded(
    run: Run, make: Callable[..., Breaker], client: redis.Redis, prefix: str
) -> None:
    """Operator actions print the change, act fleet-wide and land in the events stream with actor
    and reason; --actor defaults to the OS user."""
    worker = make("payments")
    calls(worker, ok=1)
    result = run("trip", "payments", "--for", "10m", "--reason", "INC-42", "--actor", "alice")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("payments: tripped (closed -> forced_open for 10m (until ")
    assert result.stdout.rstrip().endswith("UTC)), by alice: INC-42") and result.stderr == ""
    admin = Admin(client, prefix=prefix)
    snap = admin.status("payments")
    assert snap.state is State.FORCED_OPEN and snap.forced_until is not None
    assert 599 < snap.forced_until - snap.server_time <= 600
    result = run("disable", "payments", "--for", "1h30m", "--reason", "migration")
    assert result.exit_code == 1 and result.stdout == ""  # alice's trip: replaced only with --force
    assert "payments is already forced_open by alice: INC-42, for " in one_error_line(result)
    result = run("disable", "payments", "--for", "1h30m", "--reason", "migration", "--force")
    assert (
        "forced_open -> disabled for 1h30m" in result.stdout and f"by {getpass.getuser()}: migration" in result.stdout
    )
    assert result.stderr.startswith("warning: payments: replaced forced_open by alice: INC-42, for ")
    result = run("reset", "payments", "--reason", "fixed", "--actor", "bob")
    assert result.stdout == "payments: reset (disabled -> closed), by bob: fixed\n"
    events = admin.history("payments", n=3)
    assert [(e.to_state.value, e.actor, e.cause) for e in events] == [
        ("closed", "bob", "manual reset by bob: fixed"),
        ("disabled", getpass.getuser(), f"manual disable by {getpass.getuser()}: migration"),
        ("forced_open", "alice", "manual trip by alice: INC-42"),
    ]


def test_actions_json(run: Run, make: Callable[..., Breaker]) -> None:
    """--json of an action: the state before, the snapshot after, whether the breaker existed."""
    calls(make("payments"), ok=1)
    doc = json.loads(run("--json", "trip", "payments", "--reason", "INC-1", "--actor", "al").stdout)
    assert (doc["action"], doc["existed"], doc["before"]) == ("trip", True, "closed")
    assert doc["after"]["state"] == "forced_open" and doc["after"]["forced_until"] is None
    assert doc["after"]["reason"] == "INC-1" and doc["after"]["actor"] == "al"


def test_trip_of_an_unused_breaker_is_allowed_and_said(run: Run, make: Callable[..., Breaker]) -> None:
    """Tripping a breaker no worker has used yet works, says so on stderr, and the first worker
    starts rejected."""
    refused = run("trip", "fresh", "--reason", "pre-emptive", "--actor", "alice")
    assert refused.exit_code == 3 and "no breaker named 'fresh'" in one_error_line(refused)
    result = run("trip", "fresh", "--reason", "pre-emptive", "--actor", "alice", "--create")
    assert result.exit_code == 0
    assert "tripped (closed -> forced_open until reset)" in result.stdout
    assert (
        result.stderr == "note: no worker has used 'fresh' yet; the breaker was created (--create) in this "
        "state and workers start with it\n"
    )
    with pytest.raises(CircuitOpenError) as info:
        make("fresh").call(lambda: None)
    assert info.value.state == "forced_open" and info.value.reason == "pre-emptive"


# -- history --------------------------------------------------------------------------------
def test_history_table_json_and_limit(run: Run, make: Callable[..., Breaker]) -> None:
    """history shows the newest transitions first; -n limits; --json is a list of transitions."""
    calls(make("payments", minimum_calls=2), failed=2)
    run("trip", "payments", "--reason", "INC-9", "--actor", "alice")
    run("reset", "payments", "--actor", "bob")
    result = run("history", "payments")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["TIME", "(UTC)", "FROM", "TO"] and len(lines) == 4
    assert "manual reset by bob" in lines[1] and "manual trip by alice: INC-9" in lines[2]
    assert "failure_rate 1.00 >= 0.50 over 2 calls" in lines[3]
    docs = json.loads(run("--json", "history", "payments", "-n", "2").stdout)
    assert [(d["from"], d["to"], d["actor"]) for d in docs] == [
        ("forced_open", "closed", "bob"),
        ("open", "forced_open", "alice"),
    ]


def test_history_of_a_breaker_without_transitions(run: Run, make: Callable[..., Breaker]) -> None:
    """A breaker that never changed state has an empty history (a note, exit 0)."""
    calls(make("quiet"), ok=1)
    result = run("history", "quiet")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "quiet: no transitions recorded\n")


# -- config ---------------------------------------------------------------------------------
def test_config_overrides_win_are_recorded_and_clear(run: Run, make: Callable[..., Breaker]) -> None:
    """--set overrides apply to running workers at their next call (here: minimum_calls 2 instead
    of the worker's 100), are in the history, and --clear gives the workers' config back."""
    worker = make("payments", minimum_calls=100)
    calls(worker, ok=1)
    shown = run("config", "payments")
    assert shown.exit_code == 0
    assert shown.stdout.splitlines()[0].split() == ["FIELD", "IN", "FORCE", "WORKERS", "OVERRIDE"]
    assert ["minimum_calls", "100", "100", "-"] in [line.split() for line in shown.stdout.splitlines()]
    result = run("config", "payments", "--set", "minimum_calls=2", "--set", "open_duration=5s", "--actor", "alice")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "payments: config set (minimum_calls 100 → 2, open_duration 30s → 5s); workers apply it at their next call\n"
    )
    calls(worker, failed=1)  # 2 calls in the window: the override trips it
    assert worker.snapshot().state is State.OPEN
    assert worker.snapshot().open_until == pytest.approx(worker.snapshot().server_time + 5, abs=1)
    docs = json.loads(run("--json", "history", "payments", "-n", "2").stdout)
    assert (docs[0]["from"], docs[0]["to"]) == ("closed", "open")
    assert docs[1] == {
        **docs[1],
        "from": "closed",
        "to": "closed",
        "actor": "alice",
        "cause": "config set by alice: minimum_calls=2, open_duration_ms=5000",
    }
    doc = json.loads(run("--json", "config", "payments").stdout)
    assert doc["overrides"] == {"minimum_calls": 2, "open_duration": 5.0}
    assert doc["effective"]["minimum_calls"] == 2 and doc["workers"]["minimum_calls"] == 100
    cleared = run("config", "payments", "--clear", "--actor", "bob")
    assert "overrides cleared (minimum_calls 2 → 100, open_duration 5s → 30s)" in cleared.stdout
    assert json.loads(run("--json", "config", "payments").stdout)["overrides"] == {}


def test_config_set_keeps_other_overrides_and_clear_set_replaces(run: Run, make: Callable[..., Breaker]) -> None:
    """Successive --set calls add up; --clear --set replaces the whole set."""
    calls(make("payments"), ok=1)
    run("config", "payments", "--set", "minimum_calls=20")
    run("config", "payments", "--set", "window=2m", "--set", "consecutive_failures=5")
    doc = json.loads(run("--json", "config", "payments").stdout)
    assert doc["overrides"] == {"minimum_calls": 20, "window": 120.0, "consecutive_failures": 5}
    run("config", "payments", "--clear", "--set", "failure_rate_threshold=0.4")
    doc = json.loads(run("--json", "config", "payments").stdout)
    assert doc["overrides"] == {"failure_rate_threshold": 0.4}


def test_config_of_an_unused_breaker(run: Run) -> None:
    """Showing the config of an unknown breaker exits 3; setting it is allowed and said."""
    assert run("config", "nobody").exit_code == 3
    refused = run("config", "nobody", "--set", "minimum_calls=5")
    assert refused.exit_code == 3 and "--create sets overrides" in one_error_line(refused)
    result = run("config", "nobody", "--set", "minimum_calls=5", "--create")
    assert result.exit_code == 0 and "no worker has used 'nobody' yet" in result.stderr


def test_config_does_not_turn_the_quorum_on_for_workers_that_have_it_off(
    run: Run, make: Callable[..., Breaker]
) -> None:
    """Workers whose minimum_failing_workers is off do not say who fails: an override turning it
    on would count no failing client and hold every trip back. Refused (exit 2, nothing stored),
    naming the fix; where the workers have it on, an override may change it or turn it off."""
    worker = make("payments", minimum_calls=2)
    calls(worker, ok=1)
    refused = run("config", "payments", "--set", "minimum_failing_workers=2")
    assert refused.exit_code == 2, refused.stdout
    assert "minimum_failing_workers" in one_error_line(refused) and "their BreakerConfig" in refused.stderr
    assert json.loads(run("--json", "config", "payments").stdout)["overrides"] == {}
    calls(worker, failed=1)  # (no override: 1 failure in 2 calls trips it, as configured)
    assert worker.snapshot().state is State.OPEN
    calls(make("quorum", minimum_failing_workers=2), ok=1)
    for value in ("3", "off"):
        assert run("config", "quorum", "--set", f"minimum_failing_workers={value}").exit_code == 0


def test_config_warns_of_a_quorum_override_the_workers_cannot_answer(
    run: Run, make: Callable[..., Breaker], client: redis.Redis, prefix: str
) -> None:
    """An override that turned the quorum on for workers that have it off (stored before
    Admin.set_config refused it, or by a script directly): `config SERVICE` says so, with the fix;
    once cleared, no warning."""
    calls(make("payments"), ok=1)
    key = f"{prefix}:{{payments}}"
    client.eval(
        SCRIPTS["control"].text, 2, key, key + ":events", "", "", "config", "0", "minimum_failing_workers=2", "x"
    )
    shown = run("config", "payments")
    assert shown.exit_code == 0
    assert "warning: minimum_failing_workers 2 is an override" in shown.stderr and "--clear" in shown.stderr
    run("config", "payments", "--clear")
    assert "warning" not in run("config", "payments").stderr


# -- doctor ---------------------------------------------------------------------------------
def test_doctor_passes_on_a_good_server(run: Run, redis_server_factory: ServerFactory, prefix: str) -> None:
    """doctor: PASS lines for server, Lua, ACL, eviction policy and latency; exit 0; --json."""
    server = redis_server_factory()
    result = run("doctor", url=server.url)
    assert result.exit_code == 0, result.stdout + result.stderr
    names = [line.split()[:2] for line in result.stdout.splitlines()]
    assert names == [
        ["PASS", "server"],
        ["PASS", "lua"],
        ["PASS", "acl"],
        ["PASS", "maxmemory-policy"],
        ["PASS", "latency"],
    ]
    assert "p50" in result.stdout and "p99" in result.stdout and "doctor: ok" in result.stderr
    doc = json.loads(run("--json", "doctor", "--pings", "3", url=server.url).stdout)
    assert doc["ok"] is True and {c["name"] for c in doc["checks"]} >= {"server", "lua", "acl"}
    assert server.client().keys(f"{prefix}*") == []  # the throwaway breaker is gone


def test_doctor_warns_about_an_evicting_policy(run: Run, redis_server_factory: ServerFactory) -> None:
    """An allkeys-* or volatile-* policy is a WARN (breaker keys could be evicted), not a failure."""
    for policy in ("allkeys-lru", "volatile-ttl"):
        server = redis_server_factory("--maxmemory-policy", policy, "--maxmemory", "100mb")
        result = run("doctor", url=server.url)
        assert result.exit_code == 0
        [line] = [x for x in result.stdout.splitlines() if "maxmemory-policy" in x]
        assert line.startswith("WARN") and policy in line and "evict" in line


# -- bad input: one line, a documented exit code, never a traceback --------------------------
@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["status", "nope"], 3, "no breaker named 'nope'"),
        (["history", "nope"], 3, "no breaker named 'nope'"),
        (["config", "nope", "--clear"], 3, "no breaker named 'nope'"),
        (["trip", "payments", "--for", "10x", "--reason", "r"], 2, "'10x' is not a duration"),
        (["disable", "payments", "--for", "0s", "--reason", "r"], 2, "must be positive"),
        (["trip", "payments"], 2, "trip needs --reason TEXT"),
        (["trip", "bad{name}", "--reason", "r"], 2, "service: must be 1-128 characters"),
        (["config", "payments", "--set", "bogus=1"], 2, "'bogus' is not a config field"),
        (
            ["config", "payments", "--set", "minimum_calls=0"],
            2,
            "minimum_calls: must be an int from 1 to 1000000000, got 0",
        ),
        (
            ["config", "payments", "--set", "buckets=10000", "--set", "window=10m"],
            2,
            "buckets: must be an int from 1 to 1000",
        ),
        (["trip", "payments", "--for", "1e300", "--reason", "r"], 2, "must be a duration > 0 and at most 366 days"),
        (["config", "payments", "--set", "failure_rate_threshold=1.5"], 2, "failure_rate_threshold: must be"),
        (["config", "payments", "--set", "window=soon"], 2, "'soon' is not a duration"),
        (["history", "payments", "-n", "0"], 2, "-n"),
        (["status", "--interval", "0", "--watch"], 2, "--interval"),
        (["frobnicate"], 2, "No such command 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_with_an_exit_code(
    run: Run, make: Callable[..., Breaker], args: list[str], code: int, fragment: str
) -> None:
    """Unknown services exit 3, bad durations, settings and names exit 2: one line, no traceback."""
    calls(make("payments"), ok=1)
    result = run(*args)
    assert result.exit_code == code, result.stderr
    assert fragment in one_error_line(result) and result.stdout == ""


def test_bad_url_unreachable_wrong_password_and_acl(redis_server_factory: ServerFactory, prefix: str) -> None:
    """A bad URL exits 2, an unreachable Redis 69, a wrong password and a missing ACL permission 77;
    none of them prints the password."""
    runner = CliRunner()
    result = runner.invoke(cli, ["--url", "localhost:6379", "status"])
    assert result.exit_code == 2 and "url: must look like redis://" in one_error_line(result)
    result = runner.invoke(
        cli, ["--url", "redis://:hunter2@127.0.0.1:1/0", "--timeout", "0.5", "trip", "x", "--reason", "r"]
    )
    assert result.exit_code == 69 and "hunter2" not in one_error_line(result)
    server = redis_server_factory("--requirepass", "right-one")
    result = runner.invoke(cli, ["--url", f"redis://:wrong-one@127.0.0.1:{server.port}/0", "status"])
    assert result.exit_code == 77 and "wrong-one" not in one_error_line(result) and "right-one" not in result.stderr
    admin = server.client(password="right-one")
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">s3cret", f"~{prefix}:*", "+@read", "+scan", "+time")
    Admin(connect(f"redis://:right-one@127.0.0.1:{server.port}/0", timeout=2), prefix=prefix).trip(
        "payments", reason="INC-1"
    )
    url = f"redis://reader:s3cret@127.0.0.1:{server.port}/0"
    # reading one breaker is plain commands (TIME, HGETALL), no script: a read-only user may
    # (it ran read.lua before, which such a user may not run: exit 77)
    for args in (["status", "payments"], ["config", "payments"]):
        result = runner.invoke(cli, ["--url", url, "--prefix", prefix, *args])
        assert result.exit_code == 0, (args, result.stderr)
    assert "forced_open" in runner.invoke(cli, ["--url", url, "--prefix", prefix, "status", "payments"]).stdout
    for args in (["trip", "payments", "--reason", "r"], ["config", "payments", "--set", "minimum_calls=3"]):
        result = runner.invoke(cli, ["--url", url, "--prefix", prefix, *args])
        assert result.exit_code == 77, (args, result.stderr)
        line = one_error_line(result)
        assert "no permissions" in line.lower() and "s3cret" not in line and "reader:***@" not in line
    # a user who may not read the hash at all
    admin.execute_command("ACL", "SETUSER", "blind", "on", ">s3cret", f"~{prefix}:*", "+scan", "+time", "+exists")
    url = f"redis://blind:s3cret@127.0.0.1:{server.port}/0"
    for args in (["status", "payments"], ["config", "payments"]):
        result = runner.invoke(cli, ["--url", url, "--prefix", prefix, *args])
        assert result.exit_code == 77, (args, result.stderr)
        line = one_error_line(result)
        assert "no permissions" in line.lower() and "s3cret" not in line and "blind:***@" not in line


def test_doctor_reports_each_denied_command(redis_server_factory: ServerFactory, prefix: str) -> None:
    """doctor names every command the ACL denies (FAIL lines), exits 77, and cleans up."""
    server = redis_server_factory()
    server.client().execute_command(
        "ACL",
        "SETUSER",
        "ops",
        "on",
        ">pw",
        f"~{prefix}:*",
        "resetchannels",
        f"&{prefix}:nothing",
        "+@all",
        "-xadd",
        "-evalsha",
        "-config",
    )
    result = CliRunner().invoke(
        cli, ["--url", f"redis://ops:pw@127.0.0.1:{server.port}/0", "--prefix", prefix, "doctor"]
    )
    assert result.exit_code == 77
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split()[2] for line in fails] == ["EVALSHA:", "XADD:", "PUBLISH:", "SUBSCRIBE:"]
    assert any(
        line.startswith("WARN") and "maxmemory-policy" in line and "cannot read" in line
        for line in result.stdout.splitlines()
    )
    assert one_error_line(result).startswith("Error: doctor: 4 FAIL, 1 WARN") and "pw@" not in result.stderr
    assert server.client().keys("*") == []


def test_non_breaker_key_is_one_line_and_nothing_is_written(r: redis.Redis, run: Run, prefix: str) -> None:
    """A key of another type at the breaker's name: exit 1, one line, and the key is untouched."""
    r.set(f"{prefix}:{{odd}}", "x")
    for args in (["status", "odd"], ["trip", "odd", "--reason", "r"], ["config", "odd", "--set", "minimum_calls=3"]):
        result = run(*args)
        assert result.exit_code == 1 and "WRONGTYPE" in one_error_line(result), args
    assert r.get(f"{prefix}:{{odd}}") == b"x"


def test_status_shows_how_many_clients_are_failing(run: Run, make: Callable[..., Breaker]) -> None:
    """issue 16 item 3: with minimum_failing_workers on, `status` shows the failing clients in the
    FAILED column and `--json` as `failing_clients` (0 for a breaker with the quorum off)."""
    calls(make("quorum", minimum_failing_workers=2), ok=3, failed=12)
    calls(make("plain"), ok=1)
    table = run("status", "quorum")
    assert table.exit_code == 0, table.stderr
    assert "12 (80%) by 1 client" in table.stdout
    docs = json.loads(run("--json", "status", "quorum", "plain").stdout)
    assert [(d["service"], d["state"], d["failing_clients"]) for d in docs] == [
        ("quorum", "closed", 1),
        ("plain", "closed", 0),
    ]
    assert "failure_rate" not in table.stdout, "not tripped: the quorum of 2 is not met"
    set_result = run("config", "quorum", "--set", "minimum_failing_workers=off", "--actor", "alice")
    assert set_result.exit_code == 0, set_result.stderr
    assert "minimum_failing_workers 2 → off" in set_result.stdout
