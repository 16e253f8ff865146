"""`restful-etl plan`: the real APIs read, the load's changes counted, nothing written anywhere (the demo APIs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from prefect_restful_etl.deployments.cli.app import app
from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
from prefect_restful_etl.flows.plan import plan_batch

pytestmark = pytest.mark.integration


def credentials(apis: DemoApis) -> dict[str, Any]:
    return {"crm": {"token": apis.crm_token}, "accounting": {"api_key": apis.accounting_api_key}}


def base_urls(apis: DemoApis) -> dict[str, str]:
    return {"crm": apis.crm_url, "accounting": apis.accounting_url}


def accounting_writes(apis: DemoApis) -> tuple[int, dict[str, Any]]:
    with httpx.Client(base_url=apis.accounting_url) as accounting:
        dump = accounting.get("/_control/dump").raise_for_status().json()
    return len(dump["customers"]), dump


async def test_a_plan_counts_what_the_load_would_write_and_writes_nothing(demo_state: DemoApis, etl_home: Path) -> None:
    plan = await plan_batch(
        CRM_TO_ACCOUNTING,
        {"tenant_id": "planner", "credentials": credentials(demo_state), "base_urls": base_urls(demo_state)},
    )
    extract, transform, load = plan.jobs
    assert extract["extracted"] == 200 and transform["transformed"] + transform["rejected"] == 200
    assert load["inserted"] == transform["transformed"] and load.get("updated", 0) == 0
    assert accounting_writes(demo_state)[0] == 0  # the destination is as it was
    assert not list(etl_home.iterdir())  # and so is the audit database's home: nothing audited, no watermark
    assert plan.stopped is None
    assert sum(row["count"] for row in plan.rejects if row["action"] == "reject") == transform["rejected"]


def test_plan_from_the_cli_prints_the_plan_and_refuses_a_bad_credential_before_any_request(
    demo_state: DemoApis, etl_home: Path, tmp_path: Path
) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps(credentials(demo_state)))
    urls = [f"--base-url={api}={url}" for api, url in base_urls(demo_state).items()]
    result = CliRunner().invoke(app, ["plan", "crm-to-accounting", "-t", "planner", "-c", str(creds), *urls, "--json"])
    assert result.exit_code == 0, result.output
    planned = json.loads(result.stdout)
    assert [job["job"] for job in planned["jobs"]] == [job.name for job in CRM_TO_ACCOUNTING.jobs]
    assert planned["jobs"][2]["inserted"] > 0

    creds.write_text(json.dumps({"crm": {"tokn": demo_state.crm_token}}))
    refused = CliRunner().invoke(app, ["plan", "crm-to-accounting", "-t", "planner", "-c", str(creds), *urls])
    assert refused.exit_code == 2
    assert "credentials file" in refused.output and demo_state.crm_token not in refused.output
    assert accounting_writes(demo_state)[0] == 0
