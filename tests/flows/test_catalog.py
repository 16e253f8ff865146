"""The catalog against prefect.yaml: every batch type the catalog finds has its two deployments declared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from prefect_restful_etl.flows.catalog import FULL_RESYNC_SUFFIX, batch_flows
from prefect_restful_etl.flows.hooks import DEPLOYMENT_NAME, ENTRYPOINT, FLOW_NAME

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
    assert set(declared()) - {DEPLOYMENT_NAME} <= known


def test_prefect_yaml_declares_the_hooks_deployment() -> None:
    hooks = declared()[DEPLOYMENT_NAME]
    assert hooks["entrypoint"] == ENTRYPOINT and not hooks.get("schedules")
    assert load_flow_from_entrypoint(ENTRYPOINT).name == FLOW_NAME
