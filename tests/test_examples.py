"""examples/ run (briefly): the FastAPI app in-process and as a script, the worker pool as a script."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import psutil
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTBREAKER_")}
    env.update(extra)
    return env


async def test_fastapi_app_serves_the_fallback_trips_and_recovers(redis_url: str, prefix: str) -> None:
    fastapi_app = _load("fastapi_app")
    config = fastapi_app.DEFAULT_CONFIG.replace(open_duration=0.3, max_open_duration=1)
    app = fastapi_app.create_app(redis_url, prefix, config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
            first = (await client.get("/quotes/ACME")).json()
            assert first["source"] == "live" and first["price"] is not None

            put = await client.put("/downstream/quotes", json={"failure_rate": 1.0})
            assert put.status_code == 200
            downstream = app.state.downstream["quotes"]
            answers = [(await client.get("/quotes/ACME")).json() for _ in range(config.minimum_calls + 3)]
            assert all(a["source"] == "fallback" and a["price"] is None for a in answers)
            assert answers[0]["why"].startswith("call failed")
            assert answers[-1]["why"] == "breaker open: not called"
            # minimum_calls=5 with one earlier success: the 4th failure opens it, the rest are not called
            assert downstream.calls == 1 + config.minimum_calls - 1

            shown = (await client.get("/breakers")).json()
            assert shown["quotes"]["state"] == "open"
            assert shown["quotes"]["last_transition"]["to"] == "open"
            assert shown["quotes"]["retry_after"] > 0
            assert shown["recommendations"]["state"] == "closed"  # its own breaker
            assert (await client.get("/recommendations")).json()["source"] == "live"

            await client.put("/downstream/quotes", json={"failure_rate": 0.0})
            deadline = time.monotonic() + 10
            while True:  # open_duration 0.3 s, then a probe closes it
                answer = (await client.get("/quotes/ACME")).json()
                if answer["source"] == "live" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert answer["source"] == "live"
            shown = (await client.get("/breakers")).json()
            assert shown["quotes"]["state"] == "closed"
            assert shown["quotes"]["last_transition"]["from"] == "half_open"

            assert (await client.put("/downstream/nope", json={"failure_rate": 0.5})).status_code == 404
            assert (await client.put("/downstream/quotes", json={"failure_rate": 2})).status_code == 422


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_fastapi_script(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    """examples/fastapi_app.py as a process with no DISTBREAKER_URL, answering on a free port."""
    port = _free_port()
    err = tmp_path / "stderr"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "fastapi_app.py"), "--port", str(port)],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 30
    answer = None
    while answer is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/quotes/ACME", timeout=2).json()
        except httpx.TransportError:
            time.sleep(0.1)
    assert answer is not None, err.read_text()
    assert answer["source"] == "live"
    return proc, err, port


def _server_pid(log: str) -> int:
    started = re.search(r"started \S+ \S+ \(pid (\d+)\)", log)
    assert started, log
    return int(started[1])


def _all_gone(pids: list[int], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(_gone(pid) for pid in pids):
        time.sleep(0.05)
    return all(_gone(pid) for pid in pids)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 0)])
def test_fastapi_app_runs_as_a_script_on_the_embedded_server(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    """No DISTBREAKER_URL: the script starts the demo's embedded server, prints a `distbreaker
    status` command that works as printed, serves, and on SIGTERM, SIGHUP (the terminal closed;
    before: valkey-server stayed, under pid 1) or Ctrl-C shuts down and stops the server."""
    proc, err, port = _start_fastapi_script(tmp_path)
    try:
        shown = httpx.get(f"http://127.0.0.1:{port}/breakers", timeout=5).json()
        assert shown["quotes"]["state"] == "closed"
        command = re.search(r"^  (distbreaker --url \S+ --prefix \S+ status) --watch$", err.read_text(), re.M)
        assert command, err.read_text()
        status = subprocess.run(
            [sys.executable, "-m", "distbreaker_cli.app", *command[1].split()[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert status.returncode == 0 and re.search(r"^quotes +closed", status.stdout, re.M), status
        proc.send_signal(sig)
        assert proc.wait(20) == code, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = err.read_text()
    assert "stopped" in log and "Traceback" not in log, log
    assert _all_gone([_server_pid(log)]), log


@pytest.mark.slow
def test_fastapi_app_killed_leaves_no_server(tmp_path: Path) -> None:
    """SIGKILL of the script: its embedded server dies with it (PR_SET_PDEATHSIG)."""
    proc, err, _ = _start_fastapi_script(tmp_path)
    try:
        server = _server_pid(err.read_text())
        assert psutil.Process(server).ppid() == proc.pid
    finally:
        proc.kill()
        proc.wait(10)
    assert _all_gone([server]), err.read_text()


@pytest.mark.fleet
@pytest.mark.parametrize("mode", ["sync", "batched"])
def test_worker_pool_trips_the_shared_breaker_and_leaves_no_process(redis_url: str, prefix: str, mode: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "worker_pool.py"),
            "--workers",
            "3",
            "--duration",
            "4",
            "--mode",
            mode,
            "--json",
        ],
        env=_env(DISTBREAKER_URL=redis_url, DISTBREAKER_PREFIX=prefix),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["prefix"] == prefix and summary["mode"] == mode
    assert summary["tripped"], summary["transitions"]
    assert summary["transitions"][0]["from"] == "closed" and summary["transitions"][0]["to"] == "open"
    jobs = summary["jobs"]
    assert jobs["failed"] > 0 and jobs["rejected"] > 0 and jobs["ok"] > 0
    assert len(summary["processes"]) == 3
    assert all(p["exitcode"] == 0 and not p["alive"] for p in summary["processes"]), summary["processes"]
    assert set(summary["per_worker"]) <= {str(p["pid"]) for p in summary["processes"]}
    assert all(_gone(p["pid"]) for p in summary["processes"])
    assert not re.search(r"started \S+-server", proc.stderr)  # DISTBREAKER_URL given: no embedded server
    # it says what it does while it runs (before: nothing for --duration seconds)
    assert f"--prefix {prefix} status --watch" in proc.stderr, proc.stderr
    assert re.search(r"^  \+ *\d+\.\ds  breaker \w+ +jobs: \d+ ok", proc.stderr, re.M), proc.stderr
