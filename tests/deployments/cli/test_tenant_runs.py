"""Which runs the CLI lists as a tenant's, against a real `prefect server`, runs created through its REST API as
anyone who may create runs would: a run is the tenant's by its `tenant_id` parameter, whatever tags it carries or
lacks, and no number of runs tagged for the tenant can push the tenant's own out of its history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from prefect_restful_etl.deployments.serve import batch_deployments
from prefect_restful_etl.flows.builder import build_flow
from prefect_restful_etl.flows.catalog import FOLDER_ENV, GENERIC_ENTRYPOINT, BatchFlow, attribute_of, batch_flows

from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "restful-etl")
BATCH_TYPE = "scoped-orders"  # deployed here only, served by nobody: its runs stay Scheduled
SPOOFED = 210  # more than the old search ever read (10 pages of 20) before giving up


@pytest.fixture(scope="module")
def deployment(prefect_server: PrefectServer) -> Iterator[dict[str, Any]]:
    """The batch type deployed as `restful-etl serve` deploys one (tagged `batch-type:`), with no runner."""
    batch_type = batch_flows()["crm-to-accounting"].batch_type.model_copy(update={"name": BATCH_TYPE})
    batch = BatchFlow(build_flow(batch_type), GENERIC_ENTRYPOINT, attribute_of(BATCH_TYPE), "folder", "elsewhere")
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        ids = [made.apply() for made in batch_deployments(BATCH_TYPE, batch)]
    yield httpx.get(f"{prefect_server.api_url}/deployments/{ids[0]}", timeout=10).raise_for_status().json()
    for deployment_id in ids:
        httpx.delete(f"{prefect_server.api_url}/deployments/{deployment_id}", timeout=10)


@pytest.fixture
def rest(prefect_server: PrefectServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=prefect_server.api_url, timeout=30) as client:
        yield client


def scheduled(
    rest: httpx.Client, deployment: dict[str, Any], tenant: str, due: datetime, tags: list[str] | None = None
) -> dict[str, Any]:
    """A Scheduled run of the deployment, created through the REST API with these parameters and tags only."""
    body = {
        "parameters": {"tenant_id": tenant},
        "tags": tags or [],
        "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": due.isoformat()}},
    }
    for _ in range(20):  # a busy SQLite server answers 503 now and then
        answer = rest.post(f"/deployments/{deployment['id']}/create_flow_run", json=body)
        if answer.status_code != 503:
            break
        time.sleep(0.5)
    created: dict[str, Any] = answer.raise_for_status().json()
    return created


def cli(server: PrefectServer, cwd: Path, *args: str) -> Any:
    """`restful-etl <args> --json`'s answer, run as a user runs it in `cwd`."""
    environ = {k: v for k, v in os.environ.items() if k != FOLDER_ENV}
    environ |= {**server.client_environment(), "RESTFUL_ETL_HOME": str(cwd / ".etl")}
    done = subprocess.run(
        [CONSOLE_SCRIPT, *args, "--json"],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def history(server: PrefectServer, cwd: Path, tenant: str, *args: str) -> list[str]:
    """The batch ids `restful-etl history` lists for the tenant."""
    return [row["batch_id"] for row in cli(server, cwd, "history", "-t", tenant, *args)]


def test_a_scheduled_run_created_without_a_tenant_tag_is_in_the_tenants_history(
    prefect_server: PrefectServer, deployment: dict[str, Any], rest: httpx.Client, tmp_path: Path
) -> None:
    due = datetime.now(UTC) + timedelta(days=3)
    run = scheduled(rest, deployment, "scoped-untagged", due)
    try:
        assert not [tag for tag in run["tags"] if tag.startswith("tenant:")], run["tags"]
        assert run["state"]["type"] == "SCHEDULED"
        assert run["id"] in history(prefect_server, tmp_path, "scoped-untagged")
        assert run["id"] in history(prefect_server, tmp_path, "scoped-untagged", "-b", BATCH_TYPE)
        assert run["id"] not in history(prefect_server, tmp_path, "scoped-someone-else")
    finally:
        rest.delete(f"/flow_runs/{run['id']}")


def test_a_run_that_started_without_a_tenant_tag_is_the_tenants_latest_in_status(
    prefect_server: PrefectServer, deployment: dict[str, Any], rest: httpx.Client, tmp_path: Path
) -> None:
    run = scheduled(rest, deployment, "scoped-started", datetime.now(UTC) - timedelta(minutes=1))
    try:  # its runner took it, then died: the janitor found it stuck Pending and set it Crashed
        for state in ("PENDING", "RUNNING", "CRASHED"):
            body = {"state": {"type": state}, "force": True}
            rest.post(f"/flow_runs/{run['id']}/set_state", json=body).raise_for_status()
        shown = cli(prefect_server, tmp_path, "status", "-t", "scoped-started")["run"]
        assert (shown["batch_id"], shown["state"], shown["batch_type"]) == (run["id"], "Crashed", BATCH_TYPE)
        assert shown["started"]
    finally:
        rest.delete(f"/flow_runs/{run['id']}")


def test_runs_tagged_for_a_tenant_but_of_another_do_not_push_the_tenants_own_run_out_of_its_history(
    prefect_server: PrefectServer, deployment: dict[str, Any], rest: httpx.Client, tmp_path: Path
) -> None:
    tenant, soon = "scoped-victim", datetime.now(UTC) + timedelta(days=3)
    own = scheduled(rest, deployment, tenant, soon, [f"tenant:{tenant}"])
    spoofed = [
        scheduled(rest, deployment, "scoped-attacker", soon + timedelta(minutes=i + 1), [f"tenant:{tenant}"])
        for i in range(SPOOFED)
    ]  # each due after the tenant's run: newer by expected start, listed before it
    try:
        assert history(prefect_server, tmp_path, tenant, "-b", BATCH_TYPE, "--limit", "1") == [own["id"]]
        assert history(prefect_server, tmp_path, tenant) == [own["id"]]
        listed = history(prefect_server, tmp_path, "scoped-attacker", "--limit", "500")
        assert len(listed) == 0  # tagged for another tenant than their own: nobody's
    finally:
        for run in [own, *spoofed]:
            rest.delete(f"/flow_runs/{run['id']}")
