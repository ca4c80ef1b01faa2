"""The documentation site builds strictly, and the configuration page covers BreakerConfig."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from distbreaker import BreakerConfig

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PAGE = ROOT / "docs" / "configuration.md"

pytestmark = pytest.mark.docs


def _shown(value: object) -> str:
    """A default as the page writes it: its repr, exception classes by name."""
    if isinstance(value, tuple):
        names = [t.__name__ for t in value]
        return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"
    return repr(value)


def _init_fields() -> list[dataclasses.Field[object]]:
    return [f for f in dataclasses.fields(BreakerConfig) if f.init]


def test_mkdocs_build_is_strict_and_clean(tmp_path: Path) -> None:
    """`mkdocs build --strict` (API reference from the docstrings included) succeeds without warnings."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner, not a build warning
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    page = (site / "configuration" / "index.html").read_text()
    missing = [f.name for f in _init_fields() if f.name not in page]
    assert not missing, f"built configuration page lacks {missing}"
    api = (site / "api" / "index.html").read_text()
    for name in ("Breaker", "BreakerConfig", "State", "Snapshot", "Transition", "CircuitOpenError",
                 "ConfigError", "Admin", "connect", "FrozenClock", "make_breaker"):
        assert f'id="distbreaker.{name}"' in api or f'id="distbreaker.testing.{name}"' in api, name


def test_configuration_page_lists_every_field_with_its_default() -> None:
    """Every BreakerConfig field has a row in docs/configuration.md with its real default and a unit."""
    text = CONFIG_PAGE.read_text()
    rows = {m["name"]: m for m in re.finditer(
        r"^\| `(?P<name>\w+)` \| `(?P<default>[^`]*)` \| (?P<unit>[^|]+?) \| (?P<meaning>[^|]+?) \|", text, re.M)}
    fields = _init_fields()
    missing = [f.name for f in fields if f.name not in rows]
    assert not missing, f"docs/configuration.md has no row for {missing}"
    wrong = {f.name: (rows[f.name]["default"], _shown(f.default)) for f in fields
             if rows[f.name]["default"] != _shown(f.default)}
    assert not wrong, f"documented vs real defaults: {wrong}"
    assert all(rows[f.name]["unit"].strip() for f in fields)
    extra = set(rows) - {f.name for f in fields}
    assert not extra, f"docs/configuration.md documents fields BreakerConfig does not have: {extra}"
