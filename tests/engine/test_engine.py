"""The engine is plain async Python: no module of tasks/engine/ (nor of its rooms) imports Prefect, and its rooms
form layers: no import arrow runs from a room back to itself through another room or a module at the root."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import prefect_restful_etl.tasks.engine as engine

_PACKAGE = "prefect_restful_etl.tasks.engine"
ROOMS = {"http", "extract", "transform", "load", "stage", "audit", "hooks"}


def _engine_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(engine.__path__, prefix=f"{_PACKAGE}."))


def test_no_engine_module_imports_prefect() -> None:
    modules = _engine_modules()
    short = {m.removeprefix(f"{_PACKAGE}.") for m in modules}
    assert {
        "http.client",
        "http.paginators",
        "stage.base",
        "stage.redis",
        "load.scd",
        "audit.store",
        "transform.screens",
    } <= short
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "leaked = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
        + "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _node(module: str) -> str:
    """A room's modules are one node; a module at the engine's root is a node of its own."""
    parts = module.removeprefix(f"{_PACKAGE}.").split(".")
    return parts[0] if parts[0] in ROOMS else ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(f"{_PACKAGE}."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith(f"{_PACKAGE}."))
    return found


def test_the_rooms_form_layers() -> None:
    root = Path(engine.__path__[0])
    edges: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        module = ".".join((_PACKAGE, *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        source = _node(module)
        edges.setdefault(source, set()).update(_node(t) for t in _imports(path) if _node(t) != source)
    assert set(edges) >= ROOMS

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    return [*trail, nxt]
                if nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(edges)) if c]
    assert not cycles, " -> ".join(cycles[0])
