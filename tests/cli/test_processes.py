"""The CLI as real processes against a real server: commands, a worker that sees a trip, and the
long-running commands (status --watch, demo) stopping cleanly.

Every wait is bounded by a deadline; processes are stopped by pid in a ``finally``.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from distbreaker import Breaker, BreakerConfig, CircuitOpenError, connect

CLI = [sys.executable, "-m", "distbreaker_cli.app"]
_SPAWN = multiprocessing.get_context("spawn")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a process; stdin closed, output captured as text."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def gone(pid: int) -> bool:
    """No process has this pid (exited and reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def popen() -> Iterator[Any]:
    """``popen(args) -> Popen`` in a session of its own; each one is killed by pid at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(args: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)


def test_commands_as_processes(redis_url: str, prefix: str) -> None:
    """The console entry point runs every operator command: output, JSON and exit codes."""
    base = ["--url", redis_url, "--prefix", prefix]
    client = connect(redis_url, timeout=2)
    b = Breaker("payments", client, BreakerConfig(minimum_calls=2), prefix=prefix, listen=False)
    try:
        b.call(lambda: None)
    finally:
        b.close()
        client.close()
    trip = cli(*base, "trip", "payments", "--for", "90s", "--reason", "INC-42", "--actor", "alice")
    assert trip.returncode == 0 and "payments: tripped (closed -> forced_open for 1m30s" in trip.stdout
    status = cli(*base, "status")
    assert status.returncode == 0 and "forced_open" in status.stdout and "alice: INC-42" in status.stdout
    [doc] = json.loads(cli(*base, "--json", "status").stdout)
    assert doc["state"] == "forced_open" and 80 < doc["retry_after"] <= 90
    history = cli(*base, "history", "payments", "-n", "1")
    assert "manual trip by alice: INC-42" in history.stdout
    config = cli(*base, "config", "payments", "--set", "minimum_calls=5")
    assert config.returncode == 0 and "minimum_calls 2 → 5" in config.stdout
    doctor = cli(*base, "doctor", "--pings", "5")
    assert doctor.returncode == 0 and doctor.stdout.startswith("PASS  server")
    bad = cli(*base, "trip", "payments", "--for", "10x", "--reason", "r")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    unknown = cli(*base, "status", "nope")
    assert unknown.returncode == 3 and unknown.stderr.startswith("Error: no breaker named 'nope'")


# -- a trip from the CLI reaches a worker process ----------------------------------------------
def _worker(url: str, prefix: str, out: Any, deadline: float) -> None:
    """Call through the breaker until it rejects; report when (wall clock) and what it said."""
    client = connect(url, timeout=2)
    breaker = Breaker(
        "payments", client, BreakerConfig(max_staleness=0.2, redis_timeout=2), prefix=prefix, listen=False
    )
    try:
        breaker.call(lambda: None)
        out.put(("ready", time.time(), ""))
        while time.time() < deadline:
            try:
                breaker.call(lambda: None)
            except CircuitOpenError as exc:
                out.put(("rejected", time.time(), f"{exc.state}|{exc.reason}"))
                return
            time.sleep(0.005)
        out.put(("timeout", time.time(), ""))
    finally:
        breaker.close()
        client.close()


def test_a_trip_from_the_cli_is_seen_by_a_worker_process(redis_url: str, prefix: str) -> None:
    """A worker process without pub/sub rejects calls within its max_staleness (0.2 s) of a
    `distbreaker trip` run as a process, with the operator's reason."""
    out = _SPAWN.Queue()
    worker = _SPAWN.Process(target=_worker, args=(redis_url, prefix, out, time.time() + 60))
    worker.start()
    try:
        kind, _, _ = out.get(timeout=30)
        assert kind == "ready"
        trip = cli("--url", redis_url, "--prefix", prefix, "trip", "payments", "--reason", "INC-7")
        tripped_at = time.time()
        assert trip.returncode == 0, trip.stderr
        kind, at, what = out.get(timeout=30)
        assert (kind, what) == ("rejected", "forced_open|INC-7")
        assert at - tripped_at < 0.2 + 1.0  # max_staleness, plus a busy machine's scheduling
    finally:
        worker.join(10)
        if worker.is_alive():
            worker.kill()
            worker.join(10)
        out.close()
        out.join_thread()


# -- long-running commands stop cleanly -----------------------------------------------------------
def _read_until(stream: Any, pattern: str, deadline: float) -> str:
    """Lines from `stream` until one matches `pattern` (or the deadline passes); all of them."""
    seen = ""
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"no line matching {pattern!r} before the deadline; got:\n{seen}")


def test_watch_stops_cleanly_on_ctrl_c(redis_url: str, prefix: str, popen: Any) -> None:
    """status --watch refreshes until SIGINT, then exits 0 with no traceback."""
    client = connect(redis_url, timeout=2)
    Breaker("payments", client, prefix=prefix, listen=False).call(lambda: None)
    client.close()
    proc = popen([*CLI, "--url", redis_url, "--prefix", prefix, "status", "--watch", "--interval", "0.2"])
    seen = _read_until(proc.stdout, r"^payments", time.monotonic() + 30)
    seen += _read_until(proc.stdout, r"^payments", time.monotonic() + 30)  # a second refresh
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert (seen + out).count("distbreaker status") >= 2


def _pids(stderr: str) -> list[int]:
    """The pids the demo says it started: the server's and the workers'."""
    server = re.findall(r"\(pid (\d+)\)", stderr)
    workers = re.search(r"started \d+ workers \(pids ([\d, ]+)\)", stderr)
    assert workers is not None, stderr
    return [int(p) for p in server] + [int(p) for p in workers.group(1).split(", ")]


def test_demo_trips_recovers_and_leaves_no_process(popen: Any) -> None:
    """demo --duration: an embedded server and 3 worker processes; the summary (from the events
    stream) shows the breaker opening, half-opening and closing; exit 0; every process it
    started is gone."""
    proc = popen([*CLI, "demo", "--duration", "8", "--workers", "3", "--interval", "1"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    summary = out.split("demo summary")[1]
    for move in ("closed>open", "open>half_open", "half_open>closed"):
        assert move in summary, out
    entered = re.search(r"entered: (.*)", summary)
    assert entered is not None and {"open", "half_open", "closed"} <= {
        part.split()[0] for part in entered.group(1).split(", ")
    }
    pids = _pids(err)
    assert len(pids) == 4 and "stopped workers" in err
    assert [pid for pid in pids if not gone(pid)] == []


def test_demo_stops_everything_on_ctrl_c(popen: Any) -> None:
    """Ctrl-C (SIGINT to the demo's process group, as a terminal sends it) stops the workers and
    the server, prints the summary and exits 0."""
    proc = popen([*CLI, "demo", "--workers", "2", "--interval", "0.3"])
    err = _read_until(proc.stderr, r"started \d+ workers", time.monotonic() + 60)
    _read_until(proc.stdout, r"service", time.monotonic() + 60)  # the live view is running
    os.killpg(proc.pid, signal.SIGINT)
    out, rest = proc.communicate(timeout=60)
    err += rest
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "demo summary: 2 workers, stopped by Ctrl-C" in out
    pids = _pids(err)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.05)
    assert [pid for pid in pids if not gone(pid)] == []


# -- signals: the terminal closed, a service manager's SIGTERM, SIGKILL -------------------------
def _dead(pid: int) -> bool:
    """Exited (a zombie counts: after its parent died, pid 1 may be slow to reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _all_dead(pids: list[int], seconds: float = 15) -> list[int]:
    """Poll until every pid has exited or the deadline passes; the ones still running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(_dead(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if not _dead(pid)]


def _start_demo(popen: Any) -> tuple[subprocess.Popen[str], str, list[int]]:
    """A running demo (embedded server, 2 workers, the live view drawn once): (proc, stderr so far, pids)."""
    proc = popen([*CLI, "demo", "--workers", "2", "--interval", "0.3"])
    err = _read_until(proc.stderr, r"started \d+ workers", time.monotonic() + 60)
    _read_until(proc.stdout, r"service", time.monotonic() + 60)
    pids = _pids(err)
    assert len(pids) == 3 and all(not _dead(pid) for pid in pids), err
    return proc, err, pids


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_demo_stops_everything_on_sigterm_and_sighup(popen: Any, sig: signal.Signals, code: int) -> None:
    """SIGTERM (kill, a service manager) and SIGHUP (the terminal closed, tmux kill-session) stop
    the workers and the server like Ctrl-C, then exit 128 + the signal (before: SIGTERM exited 0,
    SIGHUP killed the demo and left valkey-server running under pid 1)."""
    proc, err, pids = _start_demo(popen)
    proc.send_signal(sig)
    out, rest = proc.communicate(timeout=60)
    err += rest
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"stopped by {sig.name}" in out, err
    assert "stopped workers" in err
    assert _all_dead(pids) == []


def test_demo_with_its_terminal_gone_stops_everything(popen: Any) -> None:
    """SIGHUP after the terminal is gone (its output pipes closed: every write fails): the demo
    still stops its workers and server and exits 129."""
    proc, _, pids = _start_demo(popen)
    proc.stdout.close()
    proc.stderr.close()
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(60) == 129
    assert _all_dead(pids) == []


def _controlling_terminal() -> None:  # pragma: no cover - runs in the child before exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_demo_on_a_terminal_that_closes_stops_everything() -> None:
    """The demo on a real terminal (a pty it has as controlling terminal, drawing its live view):
    closing the terminal (the master side, as closing a window or `tmux kill-session` does)
    sends it SIGHUP; it stops the workers and the server and exits 129 (before: exit 129 and
    valkey-server left running under pid 1)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "demo", "--workers", "2", "--interval", "0.3"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=_controlling_terminal,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"TRANSITIONS" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        text = seen.decode(errors="replace")
        assert "TRANSITIONS" in text, text  # the live view is on the terminal
        pids = sorted(
            {int(pid) for pid in re.findall(r"\(pid (\d+)\)", text)}
            | {int(pid) for found in re.findall(r"pids ([\d, ]+)", text) for pid in found.split(", ")}
        )
        assert len(pids) == 3, text
        os.close(master)
        master = -1
        assert proc.wait(60) == 128 + signal.SIGHUP
        assert _all_dead(pids) == []
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_demo_killed_leaves_no_server(popen: Any) -> None:
    """SIGKILL of the demo (nothing of it runs again): the kernel kills the embedded server
    (PR_SET_PDEATHSIG) and the workers exit by themselves (they watch their parent)."""
    proc, err, pids = _start_demo(popen)
    server = pids[0]
    assert psutil.Process(server).ppid() == proc.pid, err
    proc.kill()
    proc.wait(30)
    assert _all_dead(pids) == [], err


def test_demo_ctrl_c_during_start_up_is_quiet(popen: Any) -> None:
    """Ctrl-C while the command is still importing its modules: "Interrupted", exit 130, no
    traceback (before: a KeyboardInterrupt traceback). `-X importtime` reports each import as it
    completes: the signal is sent as soon as the `distbreaker_cli` package is imported (the
    interpreter's own start-up, before any line of ours runs, is not ours to handle), while
    click, redis-py and distbreaker are still being imported."""
    proc = popen([sys.executable, "-X", "importtime", "-m", "distbreaker_cli.app", "demo", "--workers", "1"])
    _read_until(proc.stderr, r"\| distbreaker_cli$", time.monotonic() + 60)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "started" not in err, err  # nothing was started yet
    assert proc.returncode == 130 and err.splitlines()[-1] == "Interrupted", (proc.returncode, err[-500:])
