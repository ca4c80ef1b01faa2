"""Smoke runs of the peer benchmarks (`--quick`): they start, measure every row and print their tables.

They need the peers (``pip install -e '.[bench]'``); without them the tests skip, saying so.
Each script starts its own private server (the `redis_binary` fixture only makes sure one exists).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _servers import Binary

pytestmark = [pytest.mark.slow, pytest.mark.fleet]

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("pybreaker", "purgatory", "aiobreaker", "aiobreaker_redis")
MISSING = [name for name in PEERS if importlib.util.find_spec(name) is None]
needs_peers = pytest.mark.skipif(
    bool(MISSING), reason=f"the bench extra is not installed (missing {', '.join(MISSING)}): pip install -e '.[bench]'"
)


def _run(script: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _rows(out: str, header: str) -> list[str]:
    """The body rows of the markdown table that starts with `header`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@needs_peers
def test_peers_quick(redis_binary: Binary) -> None:
    out = _run("peers.py")
    assert out.startswith("Machine: ")
    rows = _rows(out, "| path | per call |")
    assert len(rows) >= 16, out
    assert not [r for r in rows if "n/a" in r or "pending" in r], out  # every peer measured
    assert "| server-side measure (dedicated server) |" in out
    assert "Targets (issue 4):" in out


@needs_peers
def test_fleet_quick(redis_binary: Binary) -> None:
    out = _run("fleet.py")
    rows = _rows(out, "| library | threshold |")
    assert len(rows) == 6, out
    assert not [r for r in rows if "n/a" in r or "pending" in r], out
    assert all("1/1 runs" in r for r in rows), out  # every worker ended up rejecting
    prop = _rows(out, "| scenario | samples |")
    assert len(prop) == 3 and not [r for r in prop if "n/a" in r], out


def test_functions_cost_quick(redis_binary: Binary) -> None:
    """FCALL against EVALSHA (benchmarks/functions_cost.py): every figure measured."""
    if redis_binary.flavor == "redis" and redis_binary.version < (7, 0, 0):
        pytest.skip("the server has no Redis Functions (Redis < 7.0)")
    out = _run("functions_cost.py")
    rows = _rows(out, "| server µs per call")
    assert len(rows) == 4, out
    assert "nan" not in out, out


def test_floor_quick(redis_binary: Binary) -> None:
    """benchmarks/floor.py: every row measured with hiredis and with it hidden, and the goals."""
    out = _run("floor.py", timeout=600)
    assert out.startswith("Machine: "), out
    rows = _rows(out, "| path |")
    assert len(rows) == 9, out  # 5 sync and 4 asyncio paths
    assert "wall, default (hiredis)" in out and "wall, hiredis hidden (our parser)" in out, out
    assert not re.search(r"\b(nan|inf)\b", out), out  # every figure measured
    goals = _rows(out, "| goal (issue 19) |")
    assert len(goals) == 7, out
    if any("**no**" in g for g in goals):  # a goal not met: where the µs go is printed
        assert "Where the sync closed path's µs go" in out and "Profile of that Python work" in out
