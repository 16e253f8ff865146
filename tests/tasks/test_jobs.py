"""The jobs as Prefect tasks, run through `.fn` against the demo CRM: what the task layer adds to the engine."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_support import batch_context
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.tasks import runtime, status
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, ExtractJob
from prefect_restful_etl.tasks.jobs import extract_job

pytestmark = pytest.mark.integration


def batch_type(apis: DemoApis) -> BatchType:
    return BatchType.model_validate(
        {
            "name": "crm-with-schema",
            "apis": {
                "crm": {
                    "name": "crm",
                    "base_url": apis.crm_url,
                    "auth": "bearer",
                    "paginator": {"type": "page_number", "page_size": 100},
                }
            },
            "jobs": [
                {
                    "kind": "extract",
                    "name": "Extract CRM customers",
                    "api": "crm",
                    "natural_key": ["id"],
                    "endpoint": {"path": "/customers", "records_path": "data"},
                    "entity_schema": {"api_path": "/schemas/customer.json"},
                }
            ],
        }
    )


async def test_an_extract_whose_records_drift_from_the_schema_logs_a_warning_and_says_so_when_it_ends(
    tmp_path: Path, demo_state: DemoApis, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    apis = demo_state
    emitted: list[dict[str, Any]] = []
    monkeypatch.setattr(status, "emit_event", lambda **event: emitted.append(event))
    with httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}) as crm:
        crm.patch("/customers/3", json={"nickname": "Ace"}).raise_for_status()
    batch = batch_type(apis)
    [job] = batch.jobs
    assert isinstance(job, ExtractJob)
    caplog.set_level(logging.WARNING)
    async with batch_context(
        tmp_path, {"crm": (batch.apis["crm"], Credentials(token=SecretStr(apis.crm_token)))}
    ) as ctx:
        runtime.register(ctx)
        try:
            report = await extract_job.fn(job, batch, ctx.batch_id)
        finally:
            runtime.unregister(ctx.batch_id)
    drift = {"unexpected_fields": ["nickname"], "unseen_properties": []}
    assert report.schema_drift == drift
    assert [e["payload"].get("schema_drift") for e in emitted if e["event"] == status.JOB_FINISHED] == [drift]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Extract CRM customers: schema drift against its entity schema: fields not in the schema: nickname"
    ]
