"""Every distribution the package imports is one it declares: none comes in only because another needs it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("blocks", "tasks", "flows", "deployments")


def imported_modules() -> set[str]:
    """The top-level names the package's modules import (every absolute import, wherever it stands)."""
    found: set[str] = set()
    for folder in FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "prefect_restful_etl"}


def declared() -> set[str]:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_normal(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]) for requirement in dependencies}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_distribution_the_package_imports_is_declared() -> None:
    distributions = packages_distributions()
    needed = {module: {_normal(d) for d in distributions.get(module, [])} for module in imported_modules()}
    unknown = sorted(module for module, names in needed.items() if not names)
    assert not unknown, f"imported but installed by no distribution: {unknown}"
    undeclared = sorted(module for module, names in needed.items() if not names & declared())
    assert not undeclared, f"declare these in pyproject.toml's dependencies: {undeclared}"
