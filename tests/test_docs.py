"""The documentation: the site builds strictly, the configuration page covers BreakerConfig, the
README's quickstart runs on a real server, every `pip install` line works from a checkout, and
every link of the README resolves."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from distbreaker import BreakerConfig

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIG_PAGE = ROOT / "docs" / "configuration.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "examples" / "README.md"]
TEST_COMMAND = "python -m pip install -e '.[test]' && python -m pytest"  # .ci/run runs exactly this

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
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    page = (site / "configuration" / "index.html").read_text()
    missing = [f.name for f in _init_fields() if f.name not in page]
    assert not missing, f"built configuration page lacks {missing}"
    api = (site / "api" / "index.html").read_text()
    for name in (
        "Breaker",
        "BreakerConfig",
        "State",
        "Snapshot",
        "Transition",
        "CircuitOpenError",
        "ConfigError",
        "Admin",
        "connect",
        "FrozenClock",
        "make_breaker",
    ):
        assert f'id="distbreaker.{name}"' in api or f'id="distbreaker.testing.{name}"' in api, name
    for name in (
        "connect_cluster",
        "connect_sentinel",
        "asyncio.connect_cluster",
        "asyncio.connect_sentinel",
        "toolkit.failover.Failover",
        "toolkit.health.HealthChecker",
        "toolkit.degradation.DegradationMonitor",
        "toolkit.httpx.BreakerTransport",
    ):
        assert f'id="distbreaker.{name}"' in api, name
    assert (site / "cluster-sentinel" / "index.html").is_file() and (site / "benchmarks" / "index.html").is_file()


def test_configuration_page_lists_every_field_with_its_default() -> None:
    """Every BreakerConfig field has a row in docs/configuration.md with its real default and a unit."""
    text = CONFIG_PAGE.read_text()
    rows = {
        m["name"]: m
        for m in re.finditer(
            r"^\| `(?P<name>\w+)` \| `(?P<default>[^`]*)` \| (?P<unit>[^|]+?) \| (?P<meaning>[^|]+?) \|", text, re.M
        )
    }
    fields = _init_fields()
    missing = [f.name for f in fields if f.name not in rows]
    assert not missing, f"docs/configuration.md has no row for {missing}"
    wrong = {
        f.name: (rows[f.name]["default"], _shown(f.default))
        for f in fields
        if rows[f.name]["default"] != _shown(f.default)
    }
    assert not wrong, f"documented vs real defaults: {wrong}"
    assert all(rows[f.name]["unit"].strip() for f in fields)
    extra = set(rows) - {f.name for f in fields}
    assert not extra, f"docs/configuration.md documents fields BreakerConfig does not have: {extra}"


# -- the README and the pages a newcomer reads ---------------------------------------------------
def _project() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(ROOT / "pyproject.toml", "rb") as f:
        project: dict[str, Any] = tomllib.load(f)["project"]
    return project


def _extras() -> set[str]:
    return set(_project()["optional-dependencies"])


def _dependencies() -> set[str]:
    """Names of every package pyproject.toml depends on, in any extra."""
    project = _project()
    specs = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    return {re.split(r"[\[<>=~! ]", spec, maxsplit=1)[0].lower() for spec in specs}


def _pip_installs() -> Iterator[tuple[str, str]]:
    """(page, what follows `pip install`) for every pip install command the pages show."""
    for page in PAGES:
        for m in re.finditer(r"pip install ([^`\n]*)", page.read_text()):
            yield page.name, re.split(r"\s+(?:&&|\||;|#)", m[1])[0].strip()


def test_every_pip_install_line_works_from_a_checkout() -> None:
    """Each `pip install` names the checkout (`.`, `-e '.[x]'`), the repository (`distbreaker[x] @
    git+...`) or a package pyproject depends on, with extras that exist: the package is not on an
    index, so `pip install 'distbreaker[hiredis]'` failed (issue 18.1)."""
    extras = _extras()
    seen = []
    for page, command in _pip_installs():
        for token in shlex.split(command):
            if token.startswith("-"):
                continue
            local = re.fullmatch(r"\.(?:/[\w./-]*)?(?:\[(?P<extras>[\w,-]+)\])?", token)
            git = re.fullmatch(r"distbreaker(?:\[(?P<extras>[\w,-]+)\])? @ git\+\S+", token)
            match = local or git
            if match is None:
                name = re.split(r"[\[<>=~!]", token, maxsplit=1)[0].lower()
                assert name != "distbreaker" and name in _dependencies(), (
                    f"{page}: pip install {command!r}: {token!r} does not work from a checkout"
                )
                continue
            unknown = set((match["extras"] or "").split(",")) - extras - {""}
            assert not unknown, f"{page}: pip install {command!r}: no extra {unknown} in pyproject.toml"
            seen.append(token)
    assert ".[demo]" in seen and ".[hiredis]" in seen and any("@ git+" in t for t in seen), seen


def test_no_registry_hostnames_in_the_docs() -> None:
    """The pages name no package index host (the package is not on one)."""
    for page in PAGES:
        text = page.read_text()
        assert not re.search(r"pypi\.(org|python\.org)|files\.pythonhosted", text), page.name


def test_readme_is_a_newcomers_page() -> None:
    """README keeps what a newcomer needs (the two commands, install, quickstart, CLI, guarantees,
    links, the test command exactly as CI runs it) and leaves reference and benchmarks to docs/."""
    text = README.read_text()
    assert TEST_COMMAND in text.splitlines()
    assert "pip install '.[demo]' && distbreaker demo" in text
    for heading in (
        "## Install",
        "## Quickstart",
        "## CLI in brief",
        "## Guarantees",
        "## Documentation",
        "## Development",
    ):
        assert heading in text.splitlines(), heading
    assert len(text.splitlines()) <= 250
    assert "pybreaker + Redis, closed" not in text and "MEMORY USAGE" not in text  # benchmark tables: docs/
    assert "mkdocs serve" in text
    assert "pybreaker + Redis, closed" in (ROOT / "docs" / "benchmarks.md").read_text()


def _slug(heading: str) -> str:
    """The anchor mkdocs (toc) gives a heading."""
    text = re.sub(r"[`*]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[\s]+", "-", text)


def test_readme_links_resolve() -> None:
    """Every relative link of the README (and the docs' links to other pages) names a file that
    exists and, with `#anchor`, a heading of that file."""
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.is_file(), f"{page.name}: link to {target}"
            if anchor and file.suffix == ".md":
                anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)}
                assert anchor in anchors, f"{page.name}: no heading #{anchor} in {path or page.name}"


def test_snapshot_config_is_not_called_a_fingerprint() -> None:
    """`Snapshot.config` is the comma-joined config, not its fingerprint (issue 18.12)."""
    for page in PAGES:
        for clause in re.split(r"[.;:]\s", page.read_text()):
            if "Snapshot.config" in clause:
                assert "fingerprint" not in clause, f"{page.name}: {clause!r}"


def test_readme_quickstart_runs_and_counts_each_call_once(redis_url: str, prefix: str) -> None:
    """The README's quickstart, run as written against a real server: its three protected calls
    (the with block, call(refund), charge(order)) count 3, and calling the decorated charge
    through payments.call counts one more, not two (issue 18.2: "calls 2 failures 2")."""
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "@payments" in b)
    assert "payments.call(charge" not in block
    code = block
    for old, new in (
        ('connect("redis://localhost:6379/0")', f"connect({redis_url!r}, timeout=2)"),
        ("BreakerConfig(minimum_calls=20))", f"BreakerConfig(minimum_calls=20), prefix={prefix!r}, listen=False)"),
    ):
        assert old in code, old  # the test runs what the README shows: update both together
        code = code.replace(old, new)
    namespace: dict[str, object] = {"order": {"id": 42}, "queued": lambda order: ("queued", order)}
    exec(compile(code, "README.md quickstart", "exec"), namespace)  # noqa: S102 - our own README
    payments = namespace["payments"]
    try:
        snap = payments.snapshot()  # type: ignore[attr-defined]
        assert (snap.calls, snap.failures) == (3, 0), snap
        payments.call(namespace["charge"], namespace["order"])  # type: ignore[attr-defined]
        assert payments.snapshot().calls == 4  # type: ignore[attr-defined]
        assert "," in payments.snapshot().config  # type: ignore[attr-defined]  # the config, comma-joined
    finally:
        payments.close()  # type: ignore[attr-defined]
        namespace["r"].close()  # type: ignore[attr-defined]
