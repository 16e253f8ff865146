from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx
from pydantic import SecretStr

from engine_support import batch_context
from prefect_restful_etl.tasks.engine.api import ApiConfig
from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import RetriableError
from prefect_restful_etl.tasks.engine.jobtypes import BatchType
from prefect_restful_etl.tasks.engine.load import run_load
from prefect_restful_etl.tasks.engine.report import JobReport

BASE = "https://acct.example.com"
KEY = "acct-key-123456"

BATCH = BatchType.model_validate(
    {
        "name": "load-test",
        "apis": {
            "acct": {"name": "acct", "base_url": BASE, "auth": {"type": "api_key"}, "max_attempts": 2,
                     "backoff_base": 0},
            "src": {"name": "src", "base_url": "https://src.example.com"},
        },
        "jobs": [
            {"kind": "extract", "name": "Extract", "api": "src", "endpoint": {"path": "/x"}, "natural_key": ["id"]},
            {"kind": "load", "name": "Load", "source": "Extract", "api": "acct",
             "endpoint": {"path": "/customers", "records_path": "data"}, "natural_key": ["external_id"],
             "compare": ["name", "email"]},
        ],
    }
)
LOAD = BATCH.jobs[1]


def _destination(router: respx.MockRouter, existing: list[dict]) -> None:
    router.get(f"{BASE}/customers").respond(json={"data": existing})


async def _run(tmp_path: Path, staged: list[dict]) -> tuple[JobReport, list]:
    apis = {"acct": (BATCH.apis["acct"], Credentials(api_key=SecretStr(KEY))), "src": (BATCH.apis["src"], None)}
    async with batch_context(tmp_path, apis) as ctx:
        await ctx.stage.append(ctx.stage_key("extract"), staged)
        report = JobReport(job="Load", kind="load", job_id="j1")
        await run_load(LOAD, ctx, report, ErrorSink(ctx, "Load", "j1"), source=ctx.stage_key("extract"))
        return report, list(await ctx.audit.error_events(ctx.batch_id))


@respx.mock
async def test_inserts_updates_and_skips(tmp_path: Path) -> None:
    _destination(respx.mock, [
        {"id": "AC-1", "external_id": "1", "name": "Acme", "email": "a@acme.io"},
        {"id": "AC-2", "external_id": "2", "name": "Bolt", "email": "old@bolt.io"},
    ])
    post = respx.post(f"{BASE}/customers").respond(201, json={"id": "AC-3"})
    put = respx.put(f"{BASE}/customers/AC-2").respond(200, json={"id": "AC-2"})
    report, errors = await _run(tmp_path, [
        {"external_id": "1", "name": "Acme", "email": "a@acme.io"},
        {"external_id": "2", "name": "Bolt", "email": "new@bolt.io"},
        {"external_id": "3", "name": "Core", "email": "c@core.io"},
    ])
    assert report.counts == {"read": 3, "inserted": 1, "updated": 1, "unchanged": 1, "failed_writes": 0}
    assert json.loads(post.calls.last.request.content)["external_id"] == "3"
    assert json.loads(put.calls.last.request.content)["email"] == "new@bolt.io"
    assert put.calls.last.request.headers["X-API-Key"] == KEY
    assert errors == []


@respx.mock
async def test_a_refused_record_becomes_an_error_event_and_the_load_goes_on(tmp_path: Path) -> None:
    _destination(respx.mock, [])

    def create(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if not body.get("email"):
            return httpx.Response(422, json={"detail": "email: is required"})
        return httpx.Response(201, json={"id": f"AC-{body['external_id']}"})

    respx.post(f"{BASE}/customers").mock(side_effect=create)
    report, errors = await _run(tmp_path, [
        {"external_id": "1", "name": "Acme", "email": "a@acme.io"},
        {"external_id": "2", "name": "Bolt", "email": None},
        {"external_id": "3", "name": "Core", "email": "c@core.io"},
    ])
    assert report.counts["inserted"] == 2 and report.counts["failed_writes"] == 1
    [event] = errors
    assert (event.screen, event.natural_key, event.job) == ("load", "2", "Load")
    assert "422" in event.message and "email: is required" in event.message
    assert KEY not in event.message


@respx.mock
async def test_a_key_twice_in_the_stage_is_written_once(tmp_path: Path) -> None:
    _destination(respx.mock, [])
    post = respx.post(f"{BASE}/customers").respond(201, json={"id": "AC-1"})
    report, _ = await _run(tmp_path, [
        {"external_id": "1", "name": "Acme", "email": "old@acme.io"},
        {"external_id": "1", "name": "Acme", "email": "new@acme.io"},
    ])
    assert post.call_count == 1
    assert json.loads(post.calls.last.request.content)["email"] == "new@acme.io"
    assert report.counts["inserted"] == 1


@respx.mock
async def test_a_destination_that_stays_down_fails_the_job(tmp_path: Path) -> None:
    _destination(respx.mock, [])
    respx.post(f"{BASE}/customers").respond(503)
    with pytest.raises(RetriableError, match="503"):
        await _run(tmp_path, [{"external_id": "1", "name": "Acme", "email": "a@acme.io"}])
