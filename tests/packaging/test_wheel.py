"""The wheel holds the product: every folder of the package, and nothing users don't run (benchmarks, test servers)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("blocks", "tasks", "flows", "deployments")


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    return set(zipfile.ZipFile(wheel).namelist())


@pytest.mark.integration
def test_every_package_folder_is_in_the_wheel(wheel_names: set[str]) -> None:
    packages = {init.parent.relative_to(REPO) for folder in FOLDERS for init in (REPO / folder).rglob("__init__.py")}
    missing = sorted(str(p) for p in packages if f"prefect_restful_etl/{p.as_posix()}/__init__.py" not in wheel_names)
    assert not missing, f"add these to pyproject's packages and package-dir: {missing}"


@pytest.mark.integration
def test_the_wheel_holds_no_benchmark_nor_test_server(wheel_names: set[str]) -> None:
    modules = {name for name in wheel_names if name.endswith(".py")}
    assert all(name.startswith("prefect_restful_etl/") for name in modules)
    stray = sorted(m for m in modules if Path(m).name.startswith(("bench_", "test_")) or m.endswith("_server.py"))
    assert not stray
    assert "prefect_restful_etl/deployments/demo/schemas/crm_customer.json" in wheel_names
    assert {
        "prefect_restful_etl/flows/examples/crm-to-accounting.yaml",
        "prefect_restful_etl/flows/examples/crm-job-types.yaml",
    } <= wheel_names
