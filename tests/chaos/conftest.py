"""Chaos figures: each test adds rows; the table is printed at the end of the run (README "Guarantees")."""

from __future__ import annotations

from typing import Any

import pytest

FIGURES: list[tuple[str, str, str]] = []  # (guarantee, measured, bound)


@pytest.fixture
def figure() -> Any:
    def add(what: str, measured: str, bound: str) -> None:
        FIGURES.append((what, measured, bound))

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.write_line("")
    terminalreporter.write_line("| guarantee | measured | bound |")
    terminalreporter.write_line("|---|---|---|")
    for row in FIGURES:
        terminalreporter.write_line(f"| {row[0]} | {row[1]} | {row[2]} |")
