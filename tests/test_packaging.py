"""The wheel holds the package, the Lua scripts, the CLI and py.typed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.packaging
def test_wheel_contents(tmp_path: Path) -> None:
    """`pip wheel .` puts lua/*.lua under distbreaker/lua unchanged, plus distbreaker_cli and py.typed."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("distbreaker-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for lua in (ROOT / "lua").glob("*.lua"):
            assert z.read(f"distbreaker/lua/{lua.name}") == lua.read_bytes()
        assert "distbreaker/py.typed" in names
        package = ROOT / "distbreaker"  # every module, the toolkit subpackage's too
        assert {f"distbreaker/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")} <= names
        assert "distbreaker_cli/app.py" in names
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "distbreaker = distbreaker_cli.app:main" in z.read(entry).decode()
