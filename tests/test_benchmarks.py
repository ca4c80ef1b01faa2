"""Smoke runs of the peer benchmarks (`--quick`): they start, measure every row and print their tables.

They need the peers (``pip install -e '.[bench]'``); without them the tests skip, saying so.
Each script starts its own private server (the `redis_binary` fixture only makes sure one exists).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
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
    targets = _rows(out, "| target | measured | check |")
    assert len(targets) == 6, out  # issue 15 item 5: each target with its measured value
    assert all(r.split("|")[3].strip() not in ("", "—") for r in targets), out
    assert all(r.split("|")[2].strip() != "—" for r in targets), out


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


def test_server_cost_quick(redis_binary: Binary) -> None:
    """benchmarks/server_cost.py: every script (with each config), the floor rows, a verdict for each
    target and the encoding of each breaker hash."""
    out = _run("server_cost.py")
    rows = _rows(out, "| workload |")
    assert len(rows) == 14 and sum("floor:" in r for r in rows) == 3, out
    assert sum("64-byte config" in r for r in rows) == 5, out
    verdicts = _rows(out, "| issue 15 target |")
    assert len(verdicts) == 10 and all(("PASS" in r) or ("MISS" in r) for r in verdicts), out
    # the two configs make the two encodings of the breaker hash
    encodings = _rows(out, "| breaker hash encoding")
    assert len(encodings) == 6, out
    assert all(("listpack" in r) == ("64-byte" in r) for r in encodings), out
    # memory with each config: a listpack hash is the smaller one
    memory = {r.split("|")[1].strip(): r for r in _rows(out, "| memory of a breaker")}
    assert len(memory) == 8 and "breaker total, 64-byte config" in memory, out
    assert "nan" not in out, out


@pytest.mark.skipif(
    not shutil.which("callgrind_control"), reason="valgrind is not installed (apt-get install valgrind)"
)
def test_server_instructions_quick(redis_binary: Binary) -> None:
    """benchmarks/server_instructions.py: server_cost's workloads counted in instructions under
    callgrind; `return 1` is the base, every breaker script more."""
    out = _run("server_instructions.py", timeout=600)
    rows = _rows(out, "| workload |")
    assert len(rows) == 14 and rows[0].startswith("| return 1 |") and "1.0×" in rows[0], out
    ratios = [float(x) for r in rows[1:] for x in re.findall(r"\| ([0-9.]+)×", r)]
    assert ratios and all(x > 1.0 for x in ratios), out


def test_layout_cost_quick(redis_binary: Binary) -> None:
    """benchmarks/layout_cost.py: the record, the HMGET of the head's fields and the four
    packed-layout prototypes (each answered the common call, or the run would have failed with
    its error reply), on listpack hashes but for the one whose 105-byte field makes a hashtable;
    then the parts table, every part measured."""
    out = _run("layout_cost.py")
    rows = _rows(out, "| workload |")
    assert len(rows) == 7 and sum("prototype" in r for r in rows) == 4, out
    assert "nan" not in out and out.count("listpack") >= 4, out
    assert out.count("whole1: hashtable") == out.count("hash encodings") >= 1, out
    parts = _rows(out, "| part of a script")
    assert len(parts) == 10 and any("HMGET of the head's 21 fields" in r for r in parts), out


def test_read_cost_quick(redis_binary: Binary) -> None:
    """benchmarks/read_cost.py: `return 1`, read.lua and the plain read of one breaker (each config),
    every figure measured, a verdict for each target row."""
    out = _run("read_cost.py")
    rows = _rows(out, "| workload |")
    assert len(rows) == 7 and sum("read.lua" in r for r in rows) == 2, out
    verdicts = _rows(out, "| issue 15 target: an operator's read")
    assert len(verdicts) == 2 and all(("PASS" in r) or ("MISS" in r) for r in verdicts), out
    split = _rows(out, "| plain read, µs per command")
    assert len(split) == 4 and all("TIME" in r for r in split), out
    assert "nan" not in out and "listpack" in out and "hashtable" in out, out


def test_many_quick(redis_binary: Binary) -> None:
    """benchmarks/many.py: status, Admin.list/inspect_all and memory per breaker, all measured."""
    out = _run("many.py")
    rows = _rows(out, "| 1,000 breakers |")
    assert len(rows) == 6, out
    assert all(" ms |" in r for r in rows), out
    memory = _rows(out, "| memory per breaker (MEMORY USAGE) |")
    assert len(memory) == 4 and "nan" not in out, out


def test_scale_quick(redis_binary: Binary) -> None:
    """benchmarks/scale.py: every mode and process count measured, the Cluster part, the
    extrapolation of batched mode (no plot in quick mode)."""
    if redis_binary.version < (7, 0, 0):
        pytest.skip("the Cluster part needs a 7.0+ server (as the cluster fixture)")
    out = _run("scale.py", timeout=240)
    rows = _rows(out, "| mode | processes |")
    assert len(rows) == 6, out  # sync, batched, asyncio x 1, 2 processes
    assert not [r for r in rows if "nan" in r], out
    cluster = _rows(out, "| masters |")
    assert [r.split("|")[1].strip() for r in cluster] == ["1", "3"], out
    assert "toward 1,000,000 protected calls/s" in out, out


@needs_peers
def test_async_scale_quick(redis_binary: Binary) -> None:
    """benchmarks/async_scale.py: every path measured at 1-1000 tasks (peers to 100 in --quick),
    distbreaker's closed path counted in full, the cold burst counted in full on one connection."""
    out = _run("async_scale.py", timeout=300)
    rows = _rows(out, "| path | tasks |")
    assert len(rows) == 20, out
    assert not [r for r in rows if "n/a" in r], out
    assert len([r for r in rows if "not run (--quick)" in r]) == 2, out
    assert "calls counted in Redis" in out and "1000/1000 counted" in out, out
    measured = out.split("measured cells: ")[1].split(" calls")[0]
    made, counted = measured.split("/")[1], measured.split("/")[0]
    assert made == counted, out


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
    assert all(g.rstrip(" |").endswith(("PASS", "**MISS**")) for g in goals), out
    assert len(_rows(out, "| client side (no goal of its own) |")) == 2, out  # against the raw record rows
    if any("**MISS**" in g for g in goals):  # a goal missed: where the µs go is printed, with profiles
        for world in ("sync", "asyncio"):
            assert f"Where the {world} closed path's µs go" in out, out
            assert f"Profile of that Python work ({world}," in out, out
