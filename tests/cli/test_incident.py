"""The CLI as an on-call engineer meets it (issue 18 items 4, 6-9): typos, deleting a breaker,
a second operator's trip, reasons, --for beyond idle_ttl, connection conventions, completion,
output formats, and terminals of 120, 100, 80 and 60 columns (real ptys).

Every server is real; processes are waited for with deadlines and killed by pid.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from _servers import ServerFactory
from click.shell_completion import BashComplete
from click.testing import CliRunner, Result

import distbreaker.asyncio as dba
from distbreaker import Admin, Breaker, BreakerConfig, State
from distbreaker._core import keys_for
from distbreaker_cli.app import cli

CLI = [sys.executable, "-m", "distbreaker_cli.app"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REASON = "INC-4242 partner API timeouts after the 14:00 deploy, paging the partner's on-call"

Run = Callable[..., Result]


@pytest.fixture
def run(redis_url: str, prefix: str) -> Run:
    def invoke(*args: str, **kw: Any) -> Result:
        return CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix, *args], **kw)

    return invoke


@pytest.fixture
def used(client: redis.Redis, prefix: str) -> Callable[..., None]:
    """``used(*services)``: one successful call through each, as a worker would make."""

    def make(*services: str) -> None:
        for service in services:
            b = Breaker(service, client, BreakerConfig(redis_timeout=2), prefix=prefix, listen=False)
            try:
                b.call(lambda: None)
            finally:
                b.close()

    return make


def one_error_line(result: Result | subprocess.CompletedProcess[str]) -> str:
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return result.stderr


def cli_process(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISTBREAKER_URL", "REDIS_URL", "DISTBREAKER_PASSWORD", "REDISCLI_AUTH")
    }
    full_env.update(env or {})
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        stdin=subprocess.DEVNULL if input is None else None,
        input=input,
    )


def on_terminal(
    args: list[str], columns: int, rows: int = 24, answer: bytes | None = None, timeout: float = 60
) -> tuple[int, str]:
    """Run the CLI on a pty of `columns` x `rows` (stdin and stdout a terminal): exit code, output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([*CLI, *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                if answer is not None and b"[y/N]" in seen:
                    os.write(master, answer)
                    answer = None
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    return code, seen.decode(errors="replace").replace("\r\n", "\n")


# -- item 4: a typo is not a new breaker; delete -------------------------------------------
def test_a_typo_is_unknown_with_a_suggestion_and_creates_nothing(
    run: Run, used: Callable[..., None], client: redis.Redis, prefix: str
) -> None:
    """trip/disable/reset/config --set of a breaker no worker has used exit 3 and suggest the
    closest name (it used to exit 0, create 'paymnets' and leave 'payments' untouched)."""
    used("payments", "partner-billing")
    for args in (
        ["trip", "paymnets", "--reason", "INC-9"],
        ["disable", "paymnets", "--reason", "INC-9"],
        ["reset", "paymnets"],
        ["config", "paymnets", "--set", "minimum_calls=5"],
    ):
        result = run(*args)
        assert result.exit_code == 3, (args, result.stderr)
        line = one_error_line(result)
        assert "no breaker named 'paymnets'; did you mean 'payments'?" in line and "--create" in line
    assert not Admin(client, prefix=prefix).exists("paymnets")
    assert Admin(client, prefix=prefix).status("payments").state is State.CLOSED
    result = run("reset", "nosuch")
    assert result.exit_code == 3 and "did you mean" not in result.stderr
    assert Admin(client, prefix=prefix).list() == ["partner-billing", "payments"]
    assert Admin(client, prefix=prefix).similar("partner-biling") == ["partner-billing"]


def test_delete_removes_state_events_and_ids(
    run: Run, used: Callable[..., None], client: redis.Redis, prefix: str
) -> None:
    """delete --yes removes the breaker's three keys (state with config, events stream, batch ids)
    and nothing else; a second delete is unknown (3); without --yes and no terminal: exit 2."""
    used("payments", "search")
    keys = keys_for(prefix, "payments")
    client.hset(keys.ids, "client-1", "7")
    assert run("trip", "payments", "--reason", "INC-1").exit_code == 0
    assert client.exists(keys.state, keys.events, keys.ids) == 3
    refused = run("delete", "payments")
    assert refused.exit_code == 2 and "--yes" in one_error_line(refused)
    assert client.exists(keys.state) == 1
    result = run("delete", "payments", "--yes")
    assert result.exit_code == 0 and result.stdout == "payments: deleted\n"
    assert client.exists(keys.state, keys.events, keys.ids) == 0
    assert Admin(client, prefix=prefix).list() == ["search"]
    again = run("delete", "payments", "-y")
    assert again.exit_code == 3 and "no breaker named 'payments'" in one_error_line(again)


def test_delete_asks_on_a_terminal(redis_url: str, used: Callable[..., None], client: redis.Redis, prefix: str) -> None:
    """On a terminal delete asks first: 'n' keeps the breaker (exit 1), 'y' deletes it."""
    used("payments")
    base = ["--url", redis_url, "--prefix", prefix, "delete", "payments"]
    code, out = on_terminal(base, 100, answer=b"n\n")
    assert code == 1 and "Delete breaker 'payments'" in out and "not deleted" in out
    assert Admin(client, prefix=prefix).exists("payments")
    code, out = on_terminal(base, 100, answer=b"y\n")
    assert code == 0 and "payments: deleted" in out
    assert not Admin(client, prefix=prefix).exists("payments")


def test_admin_delete_sync_and_async(
    redis_url: str, used: Callable[..., None], client: redis.Redis, prefix: str
) -> None:
    """Admin.delete and distbreaker.asyncio.Admin.delete: True when something was deleted, False
    after; the asyncio similar() suggests like the sync one."""
    used("payments", "refunds")
    assert Admin(client, prefix=prefix).delete("payments") is True
    assert Admin(client, prefix=prefix).delete("payments") is False

    async def main() -> tuple[bool, bool, list[str]]:
        aclient = dba.connect(redis_url, timeout=2.0)
        try:
            admin = dba.Admin(aclient, prefix=prefix)
            similar = await admin.similar("refund")
            return await admin.delete("refunds"), await admin.delete("refunds"), similar
        finally:
            await aclient.aclose()

    assert asyncio.run(main()) == (True, False, ["refunds"])
    assert Admin(client, prefix=prefix).list() == []


# -- item 6: status filters and partial answers --------------------------------------------
def test_status_globs_states_and_unknown_names(run: Run, used: Callable[..., None]) -> None:
    """status 'partner-*' lists the matching breakers; --state keeps those in the states given;
    named services that do not exist are named on stderr (exit 3) while the known are shown."""
    used("partner-a", "partner-b", "payments")
    assert run("trip", "partner-b", "--reason", "INC-2").exit_code == 0
    result = run("-o", "plain", "--no-headers", "status", "partner-*")
    assert result.exit_code == 0 and [r.split("\t")[0] for r in result.stdout.splitlines()] == [
        "partner-a",
        "partner-b",
    ]
    result = run("status", "--state", "open,forced_open", "-o", "json")
    assert [d["service"] for d in json.loads(result.stdout)] == ["partner-b"]
    result = run("status", "payments", "paymnts", "partner-*", "nomatch-*")
    assert result.exit_code == 3
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["payments", "partner-a", "partner-b"]
    line = one_error_line(result)
    assert "no breakers named 'paymnts', 'nomatch-*'; did you mean 'payments'?" in line
    bad = run("status", "--state", "tripped")
    assert bad.exit_code == 2 and "states are closed, open" in one_error_line(bad)


# -- item 7: a second operator, reasons, --for beyond idle_ttl ------------------------------
def test_a_second_trip_shows_what_it_replaces(run: Run, used: Callable[..., None]) -> None:
    """Re-tripping your own trip replaces it with a warning naming the old reason and expiry;
    another operator's needs --force (exit 1 without, nothing changed); JSON carries it."""
    used("payments")
    assert run("trip", "payments", "--for", "1h", "--reason", "INC-1", "--actor", "alice").exit_code == 0
    mine = run("trip", "payments", "--for", "2h", "--reason", "INC-1 longer", "--actor", "alice")
    assert mine.exit_code == 0
    assert re.match(
        r"warning: payments: replaced forced_open by alice: INC-1, for (1h|59m\d+s) \(until .* UTC\)\n$", mine.stderr
    ), mine.stderr
    theirs = run("trip", "payments", "--for", "10m", "--reason", "INC-2", "--actor", "bob")
    assert theirs.exit_code == 1 and theirs.stdout == ""
    assert re.search(
        r"payments is already forced_open by alice: INC-1 longer, for (2h|1h59m) \(until ", one_error_line(theirs)
    )
    assert "--force" in theirs.stderr
    forced = run("-o", "json", "trip", "payments", "--for", "10m", "--reason", "INC-2", "--actor", "bob", "--force")
    doc = json.loads(forced.stdout)
    assert doc["replaced"]["actor"] == "alice" and doc["replaced"]["reason"] == "INC-1 longer"
    assert doc["after"]["actor"] == "bob" and "replaced forced_open by alice" in forced.stderr
    reset = run("reset", "payments", "--reason", "fixed", "--actor", "carol")
    assert reset.exit_code == 0 and "warning: payments: cleared forced_open by bob: INC-2" in reset.stderr


@pytest.mark.parametrize("action", ["trip", "disable"])
def test_a_reason_is_required_unless_no_reason(run: Run, used: Callable[..., None], action: str) -> None:
    """trip and disable refuse a missing or empty (or blank) --reason with exit 2 before
    anything is sent; --no-reason allows none; both at once is a usage error."""
    used("payments")
    for args in ([], ["--reason", ""], ["--reason", "   "]):
        result = run(action, "payments", *args)
        assert result.exit_code == 2 and "--no-reason" in one_error_line(result), args
    assert run(action, "payments", "--reason", "x", "--no-reason").exit_code == 2
    ok = run(action, "payments", "--no-reason")
    assert ok.exit_code == 0 and ok.stdout.rstrip().endswith("by " + ok.stdout.rsplit("by ", 1)[1].strip())


def test_for_longer_than_idle_ttl_is_said(run: Run, used: Callable[..., None]) -> None:
    """trip --for longer than the breaker's idle_ttl warns when the keys expire before the trip
    ends (it says when, and how to raise idle_ttl); a --for within it says nothing."""
    used("payments")
    assert run("config", "payments", "--set", "window=1s", "--set", "buckets=1", "--set", "idle_ttl=30s").exit_code == 0
    short = run("trip", "payments", "--for", "20s", "--reason", "INC-1")
    assert short.exit_code == 0 and "idle_ttl" not in short.stderr
    result = run("trip", "payments", "--for", "1h", "--reason", "INC-1")
    assert result.exit_code == 0
    if "idle_ttl" in result.stderr:  # the scripts keep idle_ttl as the keys' TTL (see the next test)
        assert "keys expire in 30s (its idle_ttl), before the forced_open ends in 1h" in result.stderr
        assert "config payments --set idle_ttl=" in result.stderr


def test_a_forced_state_keeps_its_keys_until_it_ends(
    run: Run, used: Callable[..., None], client: redis.Redis, prefix: str
) -> None:
    """On a real server: after trip --for 1h with idle_ttl 30s, the state key's TTL covers the
    remaining forced time (else the trip would vanish with the key after 30 s)."""
    used("payments")
    assert run("config", "payments", "--set", "window=1s", "--set", "buckets=1", "--set", "idle_ttl=30s").exit_code == 0
    assert run("trip", "payments", "--for", "1h", "--reason", "INC-1").exit_code == 0
    snap = Admin(client, prefix=prefix).status("payments")
    assert snap.forced_until is not None
    assert client.pttl(keys_for(prefix, "payments").state) / 1000 >= snap.forced_until - snap.server_time - 1


# -- item 8: connection conventions ---------------------------------------------------------
def test_redis_url_is_the_fallback_and_a_bad_database_is_refused(
    redis_url: str, prefix: str, used: Callable[..., None]
) -> None:
    """Without DISTBREAKER_URL, REDIS_URL is used; DISTBREAKER_URL wins over it; /abc (and ?db=x)
    exits 2 instead of meaning db 0."""
    used("payments")
    result = cli_process("--prefix", prefix, "status", env={"REDIS_URL": redis_url})
    assert result.returncode == 0 and "payments" in result.stdout, result.stderr
    result = cli_process(
        "--prefix",
        prefix,
        "--timeout",
        "0.5",
        "status",
        env={"REDIS_URL": redis_url, "DISTBREAKER_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.returncode == 69
    for url in (redis_url.rsplit("/", 1)[0] + "/abc", redis_url.rsplit("/", 1)[0] + "/?db=x"):
        result = cli_process("--url", url, "status")
        assert result.returncode == 2 and "the database must be a number" in one_error_line(result)


def test_password_from_env_or_file_and_login_errors_in_our_words(
    redis_server_factory: ServerFactory, prefix: str, tmp_path: Path
) -> None:
    """A password from DISTBREAKER_PASSWORD, REDISCLI_AUTH or --password-file (never on the
    command line); none or a wrong one: one line of ours (not the server's AUTH/HELLO text),
    exit 77, the password never shown."""
    server = redis_server_factory("--requirepass", "pw-right")
    url = f"redis://127.0.0.1:{server.port}/0"
    base = ["--url", url, "--prefix", prefix]
    missing = cli_process(*base, "status")
    assert missing.returncode == 77
    assert one_error_line(missing) == (
        "Error: Redis requires a password and none was given (env DISTBREAKER_PASSWORD "
        "or REDISCLI_AUTH, or --password-file PATH)\n"
    )
    for env in ({"DISTBREAKER_PASSWORD": "pw-right"}, {"REDISCLI_AUTH": "pw-right"}):
        ok = cli_process(*base, "status", env=env)
        assert ok.returncode == 0 and "no breakers" in ok.stderr, (env, ok.stderr)
    secret = tmp_path / "password"
    secret.write_text("pw-right\n")
    assert cli_process("--password-file", str(secret), *base, "status").returncode == 0
    assert cli_process("--password-file", "-", *base, "status", input="pw-right\n").returncode == 0
    wrong = cli_process(*base, "status", env={"DISTBREAKER_PASSWORD": "pw-wrong"})
    assert wrong.returncode == 77 and "Redis refused the password or user name" in one_error_line(wrong)
    assert "pw-" not in wrong.stderr and "WRONGPASS" not in wrong.stderr
    cluster_flag = cli_process("--cluster", *base, "status")  # redis-py's cluster client says HELLO ...
    assert cluster_flag.returncode == 77 and "HELLO" not in one_error_line(cluster_flag)


def test_service_names_complete_from_redis(
    redis_url: str, prefix: str, used: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shell completion (click's, as _DISTBREAKER_COMPLETE=bash_source sets up) completes SERVICE
    from the breakers in Redis: at the URL and prefix of the environment or of the command line;
    a Redis that does not answer completes nothing (no traceback)."""
    used("payments", "partner-a", "search")
    monkeypatch.delenv("DISTBREAKER_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)

    def complete(args: list[str], incomplete: str) -> list[str]:
        comp = BashComplete(cli, {}, "distbreaker", "_DISTBREAKER_COMPLETE")
        return [c.value for c in comp.get_completions(args, incomplete)]

    assert complete(["--url", redis_url, "--prefix", prefix, "trip"], "pa") == ["partner-a", "payments"]
    monkeypatch.setenv("DISTBREAKER_URL", redis_url)
    monkeypatch.setenv("DISTBREAKER_PREFIX", prefix)
    assert complete(["history"], "s") == ["search"]
    assert complete(["status", "search"], "") == ["partner-a", "payments"]  # the ones not given yet
    monkeypatch.setenv("DISTBREAKER_URL", "redis://127.0.0.1:1/0")
    assert complete(["reset"], "") == []
    script = cli_process(env={"_DISTBREAKER_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_DISTBREAKER_COMPLETE=bash_complete" in script.stdout


# -- item 9: output formats and widths ------------------------------------------------------
@pytest.mark.parametrize("columns", [120, 100, 80, 60])
def test_status_fits_the_terminal_and_keeps_the_cause(
    redis_url: str, prefix: str, used: Callable[..., None], columns: int
) -> None:
    """status on a real terminal (a pty) of 120, 100, 80 and 60 columns: no line is wider than
    the terminal, and the last transition's cause is there: the operator's reason, whole at 80
    and 60 (on lines under its row), at least its incident id at 120 and 100."""
    used("payments", "partner-billing-eu-west-1")
    base = ["--url", redis_url, "--prefix", prefix]
    tripped = cli_process(
        *base, "trip", "partner-billing-eu-west-1", "--for", "2h", "--reason", REASON, "--actor", "alice"
    )
    assert tripped.returncode == 0, tripped.stderr
    code, out = on_terminal([*base, "status"], columns)
    assert code == 0, out
    lines = ANSI.sub("", out).splitlines()
    assert lines and all(len(line) <= columns for line in lines), (columns, lines)
    assert any(line.startswith("payments") for line in lines)
    text = " ".join(line.strip() for line in lines)
    assert "manual trip by alice: INC-4242" in text
    if columns <= 80:
        assert f"manual trip by alice: {REASON}" in text


def test_output_options_after_the_command_and_json_alias(run: Run, used: Callable[..., None]) -> None:
    """-o json and --json give the same document, before or after the command; -o wide cuts
    nothing; --no-headers drops the header; a wrong -o is a usage error."""
    used("payments")
    docs = [
        json.loads(run(*args).stdout)
        for args in (["--json", "status"], ["status", "--json"], ["-o", "json", "status"], ["status", "-o", "json"])
    ]
    assert all(d[0]["service"] == "payments" for d in docs)
    wide = run("status", "-o", "wide")
    assert wide.stdout.splitlines()[0].split()[6] == "GEN"
    assert run("status", "--no-headers").stdout.startswith("payments ")
    bad = run("status", "-o", "yaml")
    assert bad.exit_code == 2 and "yaml" in one_error_line(bad)


def test_demo_shows_the_workers_log_lines_in_its_frame(redis_server_factory: ServerFactory) -> None:
    """Redis stalls (CLIENT PAUSE) past the demo's redis_timeout: the workers' warnings (Redis
    unavailable, answering again) are shown on a line of the frame, never printed between frames
    (on a full-height frame they scrolled it out of place: seen at 80x24 on a loaded machine)."""
    server = redis_server_factory()
    admin = server.client()
    workers = 3

    def pause_once_they_call() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the workers and the demo's own client connected
            if int(admin.info("clients")["connected_clients"]) >= workers + 2:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # (let a frame or two be drawn before the stall)
        admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")

    pauser = threading.Thread(target=pause_once_they_call, daemon=True)
    pauser.start()
    args = ["demo", "--url", server.url, "--workers", str(workers), "--interval", "0.3", "--duration", "6"]
    code, out = on_terminal(args, 80, 24, timeout=90)
    pauser.join(timeout=60)
    assert code == 0, out
    frames = [ANSI.sub("", frame).split("\n") for frame in out.split("\x1b[H")[1:]]
    stray = [line for lines in frames for line in lines if line.startswith("breaker 'payments'")]
    assert not stray, stray
    notes = [line for lines in frames for line in lines if line.startswith("worker log (")]
    assert any("Redis" in line for line in notes), out
    assert all(len(line) <= 80 for line in notes), notes


def test_demo_redraws_in_place_at_80_by_24() -> None:
    """The demo on an 80x24 terminal: every frame is drawn from the top-left corner (no clear
    screen, which tmux and others push into the scrollback), has at most 24 lines, and no line
    wider than 80 columns; the summary replaces the last frame the same way."""
    code, out = on_terminal(["demo", "--workers", "4", "--interval", "0.3", "--duration", "6"], 80, 24, timeout=90)
    assert code == 0, out
    assert "\x1b[2J" not in out
    frames = out.split("\x1b[H")[1:]
    assert len(frames) >= 5, out
    for frame in frames:
        lines = ANSI.sub("", frame).split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        assert "TRANSITIONS" in frame or "demo summary" in frame
        if "demo summary" not in frame:
            assert len(lines) <= 24, lines
        assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "demo summary: 4 workers" in frames[-1]
    assert all(click.unstyle(f).count("TRANSITIONS") == 1 for f in frames[:-1])
