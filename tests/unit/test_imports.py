"""The package has no import cycle: its modules' module-level imports (those under
``if TYPE_CHECKING:`` too: a cycle for the type checker is one in the design) form a DAG."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import distbreaker

PACKAGE = Path(distbreaker.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["distbreaker", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Imports at module level (not inside functions or classes)."""
    out: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If):
            out += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _top_level(node.body) + _top_level(node.orelse) + _top_level(node.finalbody)
            for handler in node.handlers:
                out += _top_level(handler.body)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at module level."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph[name] = set()
        for node in _top_level(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges.update(t for t in targets if t in modules and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (its modules in order, the first repeated at the end), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_finds_a_cycle() -> None:
    """The checker itself sees a cycle when there is one."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_relative_imports() -> None:
    """The graph has the edges the core is known to have (relative imports resolved)."""
    graph = import_graph()
    assert "distbreaker._model" in graph["distbreaker._core"]
    assert "distbreaker._otel" in graph["distbreaker._reporters"]


def test_no_import_cycle() -> None:
    """No module of distbreaker imports, at module level, one that imports it back; the core
    knows no telemetry (`_core` does not import `_otel`)."""
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    assert "distbreaker._otel" not in graph["distbreaker._core"]


# -- layout: the toolkit is a subpackage on top of the core -----------------------------------

TOOLKIT = ["degradation", "failover", "health", "httpx", "retry"]


@pytest.mark.parametrize("name", TOOLKIT)
def test_older_toolkit_paths_are_aliases(name: str) -> None:
    """``distbreaker.<name>`` (the documented path before the toolkit moved) gives the very
    objects of ``distbreaker.toolkit.<name>``, every public name of it."""
    old = importlib.import_module(f"distbreaker.{name}")
    new = importlib.import_module(f"distbreaker.toolkit.{name}")
    assert new.__all__ and old.__all__ == new.__all__
    for attr in new.__all__:
        assert getattr(old, attr) is getattr(new, attr), attr
    assert f"`distbreaker.toolkit.{name}`" in (old.__doc__ or "")


def test_core_does_not_import_the_toolkit() -> None:
    """No module outside ``distbreaker.toolkit`` imports it, anywhere in its body, but the
    one-line aliases of the older paths: the core knows nothing of the toolkit."""
    aliases = {f"distbreaker.{name}" for name in TOOLKIT}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name.startswith("distbreaker.toolkit") or name in aliases:
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            offenders += [f"{name}: {t}" for t in targets if t.startswith("distbreaker.toolkit")]
    assert offenders == []


def test_toolkit_imports_stay_lazy() -> None:
    """Importing the toolkit package, or the older retry path, imports none of the toolkit's
    modules nor its optional packages (tenacity, stamina, httpx; psutil may come with redis):
    tenacity is imported on first use of ``retry_if_not_open``, through either path."""
    code = (
        "import sys, distbreaker.toolkit, distbreaker.retry, distbreaker.toolkit.retry\n"
        "loaded = sorted(m for m in ('tenacity', 'stamina', 'httpx', 'distbreaker.toolkit.failover',"
        " 'distbreaker.toolkit.health', 'distbreaker.toolkit.degradation', 'distbreaker.toolkit.httpx')"
        " if m in sys.modules)\n"
        "assert not loaded, loaded\n"
        "from distbreaker.retry import retry_if_not_open\n"
        "assert 'tenacity' in sys.modules\n"
        "assert retry_if_not_open is distbreaker.toolkit.retry.retry_if_not_open\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


MODULE_MAP = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def module_map() -> dict[str, int]:
    """docs/architecture.md's layers: module -> the index of its ``##`` section (0 = top)."""
    layers: dict[str, int] = {}
    section = -1
    for line in MODULE_MAP.read_text().splitlines():
        if line.startswith("## "):
            section += 1
        elif line.startswith("| `") and section >= 0:
            for file in re.findall(r"`([^`]+)`", line.split("|")[1]):
                if file.endswith(".py"):
                    layers[_module_name(PACKAGE / file)] = section
    return layers


def test_module_map_names_every_module() -> None:
    """docs/architecture.md has a row for every module of the package, and none for a module
    that does not exist."""
    assert set(module_map()) == set(import_graph())


def test_layers_import_only_layers_above_them() -> None:
    """Each module imports (at module level) only modules of its own layer of docs/architecture.md
    or of the layers listed before it: definitions, support, core, Redis, shells, toolkit."""
    layers, graph = module_map(), import_graph()
    wrong = [
        f"{src} ({layers[src]}) imports {dst} ({layers[dst]})"
        for src, dsts in graph.items()
        for dst in dsts
        if src in layers and dst in layers and layers[dst] > layers[src]
    ]
    assert wrong == []


def test_layer_check_sees_a_wrong_way_import() -> None:
    """The layer check reads the page: the core is below the definitions, the toolkit at the bottom."""
    layers = module_map()
    assert layers["distbreaker._model"] < layers["distbreaker._core"] < layers["distbreaker._breaker"]
    assert layers["distbreaker.toolkit.failover"] == max(layers.values())
    assert layers["distbreaker.failover"] == layers["distbreaker.toolkit.failover"]
