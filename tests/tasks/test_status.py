"""Live status: event names, resources and payloads; progress every N records; artifact keys."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from engine_support import batch_context
from pydantic import SecretStr

from prefect_restful_etl.tasks import status
from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ScreenStop
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.report import JobReport

SECRET = "tok-never-in-an-event"


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[BatchContext]:
    api = ApiConfig(name="crm", base_url="http://127.0.0.1:9", auth={"type": "bearer"})
    async with batch_context(tmp_path, {"crm": (api, Credentials(token=SecretStr(SECRET)))}, tenant_id="Acme Ltd") as c:
        yield c


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(status, "emit_event", lambda **event: events.append(event))
    return events


@pytest.fixture
def progress_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str | None]]:
    calls: list[tuple[float, str | None]] = []

    async def create(progress: float, key: str | None = None, description: str | None = None) -> uuid.UUID:
        calls.append((progress, key))
        return uuid.uuid4()

    async def update(artifact_id: uuid.UUID, progress: float, description: str | None = None) -> uuid.UUID:
        calls.append((progress, description))
        return artifact_id

    monkeypatch.setattr(status, "acreate_progress_artifact", create)
    monkeypatch.setattr(status, "aupdate_progress_artifact", update)
    return calls


def job(counts: dict[str, int] | None = None, kind: str = "extract") -> JobReport:
    return JobReport(job="Extract CRM customers", kind=kind, job_id="job-1", counts=counts or {})


def _h(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:6]


@pytest.mark.parametrize(
    "batch_type,tenant,kind,key",
    [
        ("crm-to-accounting", "demo", "audit", "crm-to-accounting-demo-audit"),
        ("crm-to-accounting", "acme-2", "quality", "crm-to-accounting-acme-2-quality"),
        ("crm-to-accounting", "Acme Ltd", "errors", f"crm-to-accounting-acme-ltd-{_h('Acme Ltd')}-errors"),
        (
            "crm_to_accounting",
            "t--1/",
            "progress",
            f"crm-to-accounting-{_h('crm_to_accounting')}-t-1-{_h('t--1/')}-progress",
        ),
        ("crm-to-accounting", "Ünïcode", "audit", f"crm-to-accounting-n-code-{_h('Ünïcode')}-audit"),
        ("crm-to-accounting", "//", "audit", f"crm-to-accounting-{_h('//')}-audit"),
    ],
    ids=[
        "lowercase-kept",
        "digits-kept",
        "spaces-and-capitals",
        "underscores-and-slashes",
        "non-ascii",
        "nothing-left",
    ],
)
def test_artifact_keys_are_lowercase_letters_digits_and_dashes(
    batch_type: str, tenant: str, kind: str, key: str
) -> None:
    assert status.artifact_key(batch_type, tenant, kind) == key
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", key)


@pytest.mark.parametrize(
    "tenants",
    [("Acme", "acme", "ACME"), ("a_b", "a.b", "a-b", "a b", "a/b"), ("x", "x-", "-x", "x--")],
    ids=["case", "separators", "stray-dashes"],
)
def test_tenants_whose_names_normalise_alike_never_share_a_key(tenants: tuple[str, ...]) -> None:
    keys = [status.artifact_key("crm-to-accounting", tenant, "audit") for tenant in tenants]
    assert len(set(keys)) == len(keys), keys


@pytest.mark.parametrize(
    "counts,seen",
    [({"extracted": 40, "skipped": 2}, 42), ({"read": 7, "transformed": 5}, 7), ({}, 0)],
    ids=["extract", "transform-or-load", "nothing-yet"],
)
def test_records_seen(counts: dict[str, int], seen: int) -> None:
    assert status.records_seen(job(counts)) == seen


async def test_a_job_event_names_the_batch_tenant_and_batch_type(ctx: BatchContext) -> None:
    event = status.job_event(ctx, status.JOB_FINISHED, job({"extracted": 3}), "COMPLETED")
    assert event["event"] == "restful-etl.job.finished"
    assert event["resource"]["prefect.resource.id"] == "restful-etl.job.job-1"
    assert event["resource"]["restful-etl.tenant"] == "Acme Ltd"
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]}
    assert roles == {
        "batch": f"restful-etl.batch.{ctx.batch_id}",
        "tenant": "restful-etl.tenant.Acme Ltd",
        "batch-type": "restful-etl.batch-type.test-batch",
        "flow-run": f"prefect.flow-run.{ctx.batch_id}",
    }
    assert event["payload"] | {"counts": None} == {
        "tenant_id": "Acme Ltd",
        "batch_type": "test-batch",
        "batch_id": ctx.batch_id,
        "job": "Extract CRM customers",
        "kind": "extract",
        "job_id": "job-1",
        "status": "COMPLETED",
        "counts": None,
        "records": 3,
    }


@pytest.mark.parametrize(
    "drift",
    [{"unexpected_fields": ["nickname"], "unseen_properties": []}, {}],
    ids=["drifted", "no-drift"],
)
async def test_a_job_finished_event_carries_the_schema_drift(ctx: BatchContext, drift: dict[str, list[str]]) -> None:
    report = job({"extracted": 3})
    report.schema_drift = drift
    payload = status.job_event(ctx, status.JOB_FINISHED, report, "COMPLETED")["payload"]
    assert payload.get("schema_drift") == (drift or None)


async def test_a_batch_event_is_about_the_batch_itself(ctx: BatchContext) -> None:
    event = status.batch_event(ctx, status.BATCH_STARTED, {"status": "RUNNING"})
    assert event["resource"]["prefect.resource.id"] == status.batch_resource_id(ctx.batch_id)
    assert "batch" not in {r["prefect.resource.role"] for r in event["related"]}
    assert event["payload"]["status"] == "RUNNING" and event["payload"]["tenant_id"] == "Acme Ltd"


async def test_progress_comes_every_n_records_per_job(
    ctx: BatchContext, emitted: list[dict[str, Any]], progress_calls: list[tuple[float, str | None]]
) -> None:
    progress = await status.BatchProgress.start(ctx, jobs=2, every=100)
    ctx.progress = progress
    report = job()
    for seen in (50, 99, 100, 150, 250, 260):
        report.counts = {"extracted": seen}
        await ctx.report_progress(report)
    assert [e["payload"]["records"] for e in emitted] == [100, 250]  # crossing 100, then 200 (at 250)
    assert {e["event"] for e in emitted} == {status.JOB_PROGRESS}
    assert progress_calls[0][0] == 0.0 and "progress" in str(progress_calls[0][1])
    await progress.job_finished(report, "COMPLETED")
    assert progress_calls[-1][0] == 50.0  # one of two jobs done


async def test_job_status_emits_started_and_finished_and_never_a_secret(
    ctx: BatchContext, emitted: list[dict[str, Any]], progress_calls: list[tuple[float, str | None]]
) -> None:
    ctx.progress = await status.BatchProgress.start(ctx, jobs=1, every=10)
    report = job({"extracted": 5})
    async with status.job_status(ctx, report):
        pass
    with pytest.raises(RuntimeError):
        async with status.job_status(ctx, job()):
            raise RuntimeError(f"the API said no to {SECRET}")
    with pytest.raises(ScreenStop):
        async with status.job_status(ctx, job()):
            raise ScreenStop("no negative amounts", "amount -1 is below 0")
    names = [(e["event"], e["payload"]["status"]) for e in emitted]
    assert names == [
        (status.JOB_STARTED, "RUNNING"),
        (status.JOB_FINISHED, "COMPLETED"),
        (status.JOB_STARTED, "RUNNING"),
        (status.JOB_FINISHED, "FAILED"),
        (status.JOB_STARTED, "RUNNING"),
        (status.JOB_FINISHED, "STOPPED"),
    ]
    assert "RuntimeError" in emitted[-3]["payload"]["message"]
    assert SECRET not in repr(emitted) and SECRET not in repr(progress_calls)


async def test_without_prefect_artifacts_the_batch_still_runs(
    ctx: BatchContext, emitted: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> uuid.UUID:
        raise ConnectionError("no API")

    monkeypatch.setattr(status, "acreate_progress_artifact", broken)
    progress = await status.BatchProgress.start(ctx, jobs=1, every=1)
    await progress(job({"extracted": 1}))  # the event still goes; no artifact to update
    assert progress.artifact_id is None and len(emitted) == 1


async def test_progress_comes_at_most_every_few_seconds_per_job(
    ctx: BatchContext, emitted: list[dict[str, Any]], progress_calls: list[tuple[float, str | None]]
) -> None:
    """Twenty tenants' batches at once each report every page: the Prefect server hears of a job at most every
    `seconds`, however fast its records come."""
    now = [0.0]
    progress = status.BatchProgress(ctx, 1, every=10, artifact_id=None, seconds=5.0, clock=lambda: now[0])
    ctx.progress = progress
    report, other = job(), job()
    other.job_id = "another-job"
    for seen, at in ((10, 0.0), (20, 1.0), (30, 4.9), (40, 5.0), (50, 5.1), (60, 10.2)):
        now[0] = at
        report.counts = other.counts = {"extracted": seen}
        await ctx.report_progress(report)
        await ctx.report_progress(other)
    by_job = [(e["payload"]["records"], e["payload"].get("job_id", "")) for e in emitted]
    assert [records for records, _ in by_job] == [10, 10, 40, 40, 60, 60]  # at 0, 5.0 and 10.2 s, for each job
