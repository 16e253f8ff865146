"""The product as a user gets it: the wheel built from this tree, installed with its dependencies into a fresh
virtual environment (one per session: it takes a minute), and its console script run there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from product_support import REPO, Product


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree (`pip wheel`, no dependencies)."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(out)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (found,) = out.glob("*.whl")
    return found


@pytest.fixture(scope="session")
def product(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Product:
    """A fresh virtual environment with the wheel and its declared dependencies, from the package index."""
    root = tmp_path_factory.mktemp("product")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    (root / "home").mkdir()
    return Product(venv, root / "home")
