"""The start of the command line: what ``distbreaker status`` imports before it reads a breaker.

Every command pays for the imports of the CLI before it runs; the commands in modules of their
own (the demo with its worker processes, the dashboard, the exporter, bulkheads) are imported
only when they are used or listed, and redis is imported without OpenTelemetry's SDK (redis-py
imports it, when installed, only to know whether its own metrics could be on). Nothing here is
timed (benchmarks/many.py measures the start with the rest of ``status``);
``python -X importtime -m distbreaker_cli.app status`` shows it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from distbreaker_cli.app import LAZY_COMMANDS, cli

HEAVY = ("multiprocessing", "distbreaker.exporter", "distbreaker.dashboard", "http.server")


def _imported_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_cli_starts_without_the_modules_of_other_commands() -> None:
    """Importing the CLI (what the `distbreaker` script does) imports none of the lazy commands'
    modules, nor what they need (multiprocessing, the exporter, the dashboard)."""
    modules = _imported_by("import distbreaker_cli.app")
    lazy = {f"distbreaker_cli.{module}" for module, _ in LAZY_COMMANDS.values()}
    assert not lazy & modules, lazy & modules
    assert not set(HEAVY) & modules, set(HEAVY) & modules
    assert "distbreaker_cli.commands" in modules  # (status itself is there)


def test_every_command_is_listed_and_runs() -> None:
    """``--help`` lists the lazy commands with the others, and each one is imported when asked for."""
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.stdout.split("Commands:", 1)[1]
    for name in (*LAZY_COMMANDS, "status", "trip", "reset"):
        assert f"\n  {name} " in listed, name
    for name in LAZY_COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert result.stdout.startswith(f"Usage: cli {name}"), result.stdout[:80]


def test_a_lazy_command_is_a_click_command_of_that_name() -> None:
    """Each entry of `LAZY_COMMANDS` names a click command called as its key."""
    import importlib

    for name, (module, attribute) in LAZY_COMMANDS.items():
        command = getattr(importlib.import_module(f"distbreaker_cli.{module}"), attribute)
        assert command.name == name


SDK = "opentelemetry.sdk.metrics"
COMMAND = f"""import json, sys
import distbreaker_cli.app
import redis.observability.providers
seen = {SDK!r} in sys.modules
import {SDK}
print(json.dumps([seen, redis.observability.providers.OTEL_AVAILABLE, sys.modules[{SDK!r}] is not None]))
"""


def test_the_command_starts_without_the_opentelemetry_sdk_and_can_still_import_it(tmp_path: Path) -> None:
    """Run as the `distbreaker` command, redis is imported as where OpenTelemetry's SDK is not
    installed (redis-py does not import it: its own metrics stay off), and the SDK can still be
    imported afterwards; imported as a library, the CLI leaves redis-py to find the SDK."""
    pytest.importorskip(SDK)
    script = tmp_path / "distbreaker"  # (the console script's name: sys.argv[0])
    script.write_text(COMMAND)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [False, False, True]
    out = subprocess.run([sys.executable, "-c", COMMAND], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [True, True, True]
