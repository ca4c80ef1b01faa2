"""The public API is typed: mypy --strict passes on the package and on tests/typing/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_mypy_strict(tmp_path: Path) -> None:
    """mypy --strict reports nothing on distbreaker/ and tests/typing/api.py (decorators keep signatures)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            "distbreaker",
            "cli/distbreaker_cli",
            "tests/typing/api.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
