"""The catalog: batch types from the user's folder, entry points and the package, and where each came from; and
prefect.yaml against the package's own: each has its two deployments declared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.exceptions import MissingFlowError
from prefect.flows import load_flow_from_entrypoint

from prefect_restful_etl.flows.catalog import (
    ENTRY_POINT,
    ENTRY_POINT_GROUP,
    FOLDER,
    FOLDER_ENV,
    FULL_RESYNC_SUFFIX,
    GENERIC_ENTRYPOINT,
    PACKAGE,
    batch_flows,
    catalog,
    find,
)
from prefect_restful_etl.flows.hooks import DEPLOYMENT_NAME, ENTRYPOINT, FLOW_NAME
from prefect_restful_etl.flows.janitor import JANITOR
from prefect_restful_etl.tasks.engine.exceptions import ConfigError

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def declared() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}


@pytest.mark.parametrize("batch_type", sorted(batch_flows()))
def test_prefect_yaml_declares_both_deployments_of_every_batch_type(batch_type: str) -> None:
    deployments, entrypoint = declared(), batch_flows()[batch_type].entrypoint
    incremental, resync = deployments.get(batch_type), deployments.get(f"{batch_type}{FULL_RESYNC_SUFFIX}")
    assert incremental is not None and resync is not None, f"prefect.yaml lacks a deployment of {batch_type}"
    assert incremental["entrypoint"] == resync["entrypoint"] == entrypoint
    assert incremental["schedules"] and all(s["parameters"].get("tenant_id") for s in incremental["schedules"])
    assert not incremental.get("parameters", {}).get("full_refresh")
    assert resync["parameters"]["full_refresh"] is True and not resync.get("schedules")
    assert f"batch-type:{batch_type}" in incremental["tags"] and f"batch-type:{batch_type}" in resync["tags"]


def test_prefect_yaml_declares_no_batch_type_the_catalog_does_not_know() -> None:
    known = set(batch_flows()) | {f"{name}{FULL_RESYNC_SUFFIX}" for name in batch_flows()}
    assert set(declared()) - {DEPLOYMENT_NAME, JANITOR} <= known


def test_prefect_yaml_declares_the_hooks_deployment() -> None:
    hooks = declared()[DEPLOYMENT_NAME]
    assert hooks["entrypoint"] == ENTRYPOINT and not hooks.get("schedules")
    assert load_flow_from_entrypoint(ENTRYPOINT).name == FLOW_NAME


def test_prefect_yaml_deploys_the_janitor_on_a_short_schedule_and_no_batch_with_prefects_parameter_check() -> None:
    """Every deployment whose runs take credentials, the hooks' micro-batches too: Prefect's check would answer a
    malformed run with a 409 quoting them."""
    deployments = declared()
    janitor = deployments[JANITOR]
    assert janitor["entrypoint"] == "prefect_restful_etl.flows.janitor.janitor"
    assert [(s["interval"], s["active"]) for s in janitor["schedules"]] == [(300, True)]
    for name in set(deployments) - {JANITOR}:
        assert deployments[name]["enforce_parameter_schema"] is False, name


# --- batch types of the user's own: a folder, entry points -------------------------------------------------------

APIS = {"shop": {"name": "shop", "base_url": "http://127.0.0.1:1", "auth": {"type": "bearer"}}}
EXTRACT = {"kind": "extract", "name": "Extract orders", "api": "shop", "endpoint": {"path": "/orders"},
           "natural_key": ["id"]}  # fmt: skip
MODULE = f"""
from prefect_restful_etl.flows.builder import build_flow
from prefect_restful_etl.tasks.engine.jobtypes import BatchType

CODED = BatchType.model_validate({{"name": "coded-orders", "apis": {APIS!r}, "jobs": [{EXTRACT!r}]}})
coded_orders = build_flow(CODED)
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty batch types folder of the test's own, named by RESTFUL_ETL_BATCH_TYPES."""
    path = tmp_path / "batch_types"
    path.mkdir()
    monkeypatch.setenv(FOLDER_ENV, str(path))
    return path


def batch_type_file(folder: Path, name: str, **extra: Any) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "apis": APIS, "jobs": [EXTRACT], **extra}))
    return path


def test_the_folder_gives_its_files_and_modules_and_the_package_its_example(folder: Path) -> None:
    batch_type_file(folder, "acme-orders")
    (folder / "coded.py").write_text(MODULE)
    found = catalog()
    assert found.problems == [] and found.folder == folder
    acme, coded, example = (found.flows[n] for n in ("acme-orders", "coded-orders", "crm-to-accounting"))
    assert (acme.origin, acme.source) == (FOLDER, str(folder / "acme-orders.yaml"))
    assert (coded.origin, coded.source) == (FOLDER, str(folder / "coded.py"))
    assert acme.entrypoint == f"{GENERIC_ENTRYPOINT}.acme_orders" and coded.entrypoint.endswith(".coded_orders")
    assert example.origin == PACKAGE and example.batch_type.name == "crm-to-accounting"


def test_the_generic_entrypoint_loads_a_batch_type_of_the_folder_by_name(folder: Path) -> None:
    batch_type_file(folder, "acme-orders", description="Orders from the shop")
    loaded = load_flow_from_entrypoint(f"{GENERIC_ENTRYPOINT}.acme_orders")
    assert loaded.name == "acme-orders" and loaded.description == "Orders from the shop"
    assert load_flow_from_entrypoint(f"{GENERIC_ENTRYPOINT}.acme-orders") is loaded
    with pytest.raises(MissingFlowError):
        load_flow_from_entrypoint(f"{GENERIC_ENTRYPOINT}.no_such_batch_type")


def test_a_name_not_found_lists_what_there_is_and_where_it_was_looked_for(folder: Path) -> None:
    batch_type_file(folder, "acme-orders")
    (folder / "broken.yaml").write_text("name: [")
    with pytest.raises(ConfigError) as raised:
        find("acme-order")
    message = str(raised.value)
    assert f"none by that name in {folder} (RESTFUL_ETL_BATCH_TYPES)" in message
    assert "there are 'acme-orders', 'crm-to-accounting'; 1 file(s) did not load" in message


def test_the_folder_comes_first_and_a_name_found_twice_is_a_problem(folder: Path) -> None:
    path = batch_type_file(folder, "crm-to-accounting")
    found = catalog()
    assert found.flows["crm-to-accounting"].source == str(path)
    assert found.problems == [
        "prefect_restful_etl.flows.crm_to_accounting: batch type 'crm-to-accounting' is also defined by " + str(path)
    ]


def test_entry_points_give_batch_types_flows_modules_and_folders(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed distribution declaring the group, as `pip install` leaves one: a dist-info on sys.path."""
    site = tmp_path / "site"
    shipped = site / "acme_batch_types"
    (shipped / "files").mkdir(parents=True)
    (shipped / "__init__.py").write_text(
        "from pathlib import Path\nFILES = Path(__file__).parent / 'files'\n"
        + MODULE.replace("coded", "shipped").replace("CODED", "SHIPPED")
    )
    batch_type_file(shipped / "files", "filed-orders")
    info = site / "acme_batch_types-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-batch-types\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nbatch-type = acme_batch_types:SHIPPED\nflow = acme_batch_types:shipped_orders\n"
        "module = acme_batch_types\nfolder = acme_batch_types:FILES\nbroken = acme_batch_types:nothing_here\n"
    )
    monkeypatch.syspath_prepend(str(site))
    found = catalog()
    assert found.flows["shipped-orders"].origin == ENTRY_POINT
    assert found.flows["shipped-orders"].source == "batch-type = acme_batch_types:SHIPPED"  # the first by name
    assert found.flows["filed-orders"].source == "folder = acme_batch_types:FILES"
    assert found.flows["filed-orders"].entrypoint == f"{GENERIC_ENTRYPOINT}.filed_orders"
    assert "broken = acme_batch_types:nothing_here: cannot be loaded (AttributeError)" in found.problems
    also = [p for p in found.problems if "is also defined by" in p]
    assert len(also) == 2  # the flow and the module name the batch type that `batch-type` gave first
