"""No secret anywhere after a batch: Prefect's database and results, the audit database, logs, the stage."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.flow_engine import run_flow_async
from pydantic import SecretStr
from secrets_support import files_holding, rows_holding

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage

pytestmark = pytest.mark.integration


def secrets_of(apis: DemoApis) -> list[str]:
    return [apis.crm_token, apis.accounting_api_key]


def credentials(apis: DemoApis) -> dict[str, Any]:
    return {
        "crm": Credentials(token=SecretStr(apis.crm_token)),
        "accounting": Credentials(api_key=SecretStr(apis.accounting_api_key)),
    }


async def test_a_batch_leaves_no_secret_anywhere(
    prefect_harness: Path,
    prefect_home: Path,
    etl_home: Path,
    demo_apis: DemoApis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    demo_apis.reset()
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("RESTFUL_ETL_KEEP_STAGE", "true")  # so that the staged records are there to search
    report = await crm_to_accounting(
        tenant_id="vault",
        credentials=credentials(demo_apis),
        full_refresh=True,
        base_urls={"crm": demo_apis.crm_url, "accounting": demo_apis.accounting_url},
    )
    assert report.status == "COMPLETED" and report.counts["inserted"] > 0
    secrets = secrets_of(demo_apis)

    logs = await flow_run_logs(report.batch_id)  # first: Prefect ships logs in the background
    assert logs and not any(s in log.message for log in logs for s in secrets)
    assert not any(s in caplog.text for s in secrets)
    assert not any(s in report.model_dump_json() for s in secrets)
    assert files_holding(etl_home, secrets) == []  # the audit database, its WAL
    assert files_holding(prefect_harness.parent, secrets) == []  # Prefect's database, its WAL
    assert files_holding(prefect_home, secrets) == []  # persisted task results
    staged = repr(MemoryStage._store) + repr(MemoryStage._indexes)
    assert f"restful-etl:vault:{report.batch_id}:" in staged  # the batch's records and indexes are there
    assert not any(s in staged for s in secrets)
    async with get_client() as client:
        flow_run = await client.read_flow_run(report.batch_id)
    assert flow_run.parameters["credentials"]["crm"]["token"] == "**********"


async def flow_run_logs(flow_run_id: str, timeout: float = 30.0) -> list[Any]:
    """The run's logs once its final line ("Finished in state ...") has reached the server."""
    deadline = time.monotonic() + timeout
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    async with get_client() as client:
        while True:
            logs = await client.read_logs(log_filter=log_filter, limit=200, offset=0)
            if any("Finished in state" in log.message and log.task_run_id is None for log in logs):
                return logs
            if time.monotonic() > deadline:
                raise AssertionError(f"the flow run's final log line did not arrive in {timeout}s")
            await asyncio.sleep(0.2)


async def test_a_run_created_with_clear_parameters_is_redacted_on_receipt(
    prefect_harness: Path, etl_home: Path, demo_apis: DemoApis
) -> None:
    """As a run created through the REST API or the UI: Prefect stores the parameters as they were sent."""
    demo_apis.reset()
    clear = {
        "tenant_id": "rest",
        "credentials": {"crm": {"token": demo_apis.crm_token}, "accounting": {"api_key": demo_apis.accounting_api_key}},
        "full_refresh": True,
        "base_urls": {"crm": demo_apis.crm_url, "accounting": demo_apis.accounting_url},
    }
    async with get_client() as client:
        flow_run = await client.create_flow_run(crm_to_accounting, parameters=clear)
        stored = (await client.read_flow_run(flow_run.id)).parameters
        assert stored["credentials"]["crm"]["token"] == demo_apis.crm_token  # the hazard this test is about

        report = await run_flow_async(crm_to_accounting, flow_run=flow_run, parameters=clear)
        assert report.status == "COMPLETED"

        after = await client.read_flow_run(flow_run.id)
    assert after.parameters["credentials"] == {"crm": {"token": "**********"}, "accounting": {"api_key": "**********"}}
    assert {"tenant:rest", "batch-type:crm-to-accounting"} <= set(after.tags)
    assert rows_holding(prefect_harness, secrets_of(demo_apis)) == []
    assert rows_holding(etl_home / "audit.db", secrets_of(demo_apis)) == []


@pytest.mark.parametrize(
    "credentials,field",
    [
        ({"crm": {"tokn": "{crm}"}, "accounting": {"api_key": "{accounting}"}}, "credentials.crm.tokn"),
        ({"crm": {"token": ["{crm}"]}, "accounting": {"api_key": "{accounting}"}}, "credentials.crm.token"),
        ({"crm": {"token": "{crm}"}, "accounting": "{accounting}"}, "credentials.accounting"),
    ],
    ids=["misspelt-field", "wrong-type", "not-an-object"],
)
async def test_malformed_credentials_fail_naming_the_field_and_leave_no_secret(
    prefect_harness: Path,
    etl_home: Path,
    demo_apis: DemoApis,
    caplog: pytest.LogCaptureFixture,
    credentials: dict[str, Any],
    field: str,
) -> None:
    """Prefect's own parameter validation would log every parameter as sent and keep them stored in clear."""
    caplog.set_level(logging.DEBUG)
    sent = json.loads(
        json.dumps(credentials)
        .replace("{crm}", demo_apis.crm_token)
        .replace("{accounting}", demo_apis.accounting_api_key)
    )
    demo_apis.reset()
    async with get_client() as client:
        parameters = {"tenant_id": "typo", "credentials": sent}
        flow_run = await client.create_flow_run(crm_to_accounting, parameters=parameters)
        with pytest.raises(ConfigError, match=rf"^{re.escape(field)}: "):
            await run_flow_async(crm_to_accounting, flow_run=flow_run, parameters=parameters)
        after = await client.read_flow_run(flow_run.id)
    secrets = secrets_of(demo_apis)
    assert after.state is not None and after.state.is_failed()
    assert requests_served(demo_apis) == [], "a bad configuration fails before any request"
    logs = await flow_run_logs(str(flow_run.id))
    assert not any(s in log.message for log in logs for s in secrets)
    assert not any(s in caplog.text for s in secrets)
    assert rows_holding(prefect_harness, secrets) == []
    assert not any(s in json.dumps(after.parameters) for s in secrets)


def requests_served(apis: DemoApis) -> list[str]:
    """The demo APIs' request counters since their reset, but for their control endpoints."""
    served = []
    with httpx.Client() as client:
        for base in (apis.crm_url, apis.accounting_url):
            stats = client.get(f"{base}/_control/stats").raise_for_status().json()
            served += [path for path in stats.get("requests", stats) if "_control" not in path]
    return served


@pytest.mark.parametrize("ending", ["password-refused", "batch-failed"])
async def test_the_audit_databases_password_never_shows_in_a_failed_batch(
    prefect_harness: Path,
    etl_home: Path,
    demo_apis: DemoApis,
    private_postgres_server: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
) -> None:
    """A PostgreSQL audit URL carries a password: a refused login, or a batch failing with its audit rows
    written there, shows it in no message, log line or audit row."""
    import asyncpg

    server = private_postgres_server
    wrong = "wr0ng-pg-p4ss-never-shown"
    demo_apis.reset()
    caplog.set_level(logging.DEBUG)
    if ending == "password-refused":
        monkeypatch.setenv("RESTFUL_ETL_AUDIT_URL", server.url.replace(server.password, wrong))
    else:
        monkeypatch.setenv("RESTFUL_ETL_AUDIT_URL", server.url)
        with httpx.Client(base_url=demo_apis.accounting_url) as accounting:  # the load's read of the destination
            accounting.post(
                "/_control/faults", json={"path": "/customers", "method": "GET", "status": 403}
            ).raise_for_status()
    state = await crm_to_accounting(
        tenant_id="vault",
        credentials=credentials(demo_apis),
        full_refresh=True,
        return_state=True,
        base_urls={"crm": demo_apis.crm_url, "accounting": demo_apis.accounting_url},
    )

    assert state.is_failed()
    with pytest.raises(Exception) as raised:
        await state.result()
    shown = [state.message or "", str(raised.value), repr(raised.value), caplog.text]
    shown += [log.message for log in await flow_run_logs(str(state.state_details.flow_run_id))]
    if ending == "password-refused":
        assert 'password authentication failed for user "etl"' in str(raised.value)
    else:
        connection = await asyncpg.connect(server.url)
        try:
            [batch] = await connection.fetch("SELECT status, message FROM etl_batch")
            for table in ("etl_batch", "etl_job", "etl_error_event", "etl_watermark", "etl_screen"):
                shown += [str(dict(row)) for row in await connection.fetch(f"SELECT * FROM {table}")]
        finally:
            await connection.close()
        assert batch["status"] == "FAILED" and "403" in batch["message"]
    for secret in (server.password, wrong):
        assert not [text for text in shown if secret in text]
