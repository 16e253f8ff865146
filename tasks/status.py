"""Live status: batch and job events on Prefect's event bus, and the batch's progress artifact.

Every event names its batch, tenant and batch type, so a client follows one batch over Prefect's events
websocket by the batch's resource id (see `deployments/cli/watch.py`):

| event | resource | payload |
| --- | --- | --- |
| `restful-etl.batch.started` / `.finished` | `restful-etl.batch.<batch id>` | status, counts, jobs |
| `restful-etl.job.started` / `.progress` / `.finished` | `restful-etl.job.<job id>` | job, kind, status, counts |

An extract's finished event also carries its `schema_drift` when its records drifted from the entity schema.
Related resources: `restful-etl.batch.<id>` (role `batch`, on job events), `restful-etl.tenant.<tenant>`
(`tenant`), `restful-etl.batch-type.<name>` (`batch-type`) and the flow run (`flow-run`). Payloads hold
counts and names, never records or secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.events import emit_event

from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.jobrun import job_ending
from prefect_restful_etl.tasks.engine.redaction import redact
from prefect_restful_etl.tasks.engine.report import JobReport

PREFIX = "restful-etl."
BATCH_STARTED, BATCH_FINISHED = "restful-etl.batch.started", "restful-etl.batch.finished"
JOB_STARTED, JOB_PROGRESS, JOB_FINISHED = (
    "restful-etl.job.started",
    "restful-etl.job.progress",
    "restful-etl.job.finished",
)

logger = logging.getLogger(__name__)


def batch_resource_id(batch_id: str) -> str:
    return f"restful-etl.batch.{batch_id}"


def artifact_key(batch_type: str, tenant_id: str, kind: str) -> str:
    """`crm-to-accounting-demo-audit`: Prefect keys allow lowercase letters, digits and dashes only, and the
    same key per tenant and batch type makes the artifact's history the sync history.

    A name that had to change to fit (`Acme`, `a_b`) keeps a short hash of itself (`acme-1b2c3d`), so no two
    tenants share a key: `Acme` and `acme`, `a_b` and `a.b` and `a-b` stay apart.
    """
    return f"{key_part(batch_type)}-{key_part(tenant_id)}-{key_part(kind)}"


def key_part(name: str) -> str:
    """`name` as it may stand in an artifact key; unchanged when it already could."""
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", name.lower())).strip("-")
    if slug == name:
        return slug
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{slug}-{digest}" if slug else digest


def records_seen(report: JobReport) -> int:
    """How far a job has got: records read from the stage, or pages' records for an extract."""
    counts = report.counts
    return max(counts.get("read", 0), counts.get("extracted", 0) + counts.get("skipped", 0))


def _related(ctx: BatchContext, *, with_batch: bool) -> list[dict[str, str]]:
    related = [
        {
            "prefect.resource.id": f"restful-etl.tenant.{ctx.tenant_id}",
            "prefect.resource.role": "tenant",
            "prefect.resource.name": ctx.tenant_id,
        },
        {
            "prefect.resource.id": f"restful-etl.batch-type.{ctx.batch_type}",
            "prefect.resource.role": "batch-type",
            "prefect.resource.name": ctx.batch_type,
        },
        {"prefect.resource.id": f"prefect.flow-run.{ctx.batch_id}", "prefect.resource.role": "flow-run"},
    ]
    if with_batch:
        related.insert(0, {"prefect.resource.id": batch_resource_id(ctx.batch_id), "prefect.resource.role": "batch"})
    return related


def _labels(ctx: BatchContext) -> dict[str, str]:
    return {
        "restful-etl.tenant": ctx.tenant_id,
        "restful-etl.batch-type": ctx.batch_type,
        "restful-etl.batch": ctx.batch_id,
    }


def batch_event(ctx: BatchContext, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `emit_event` for a batch event."""
    resource = {
        "prefect.resource.id": batch_resource_id(ctx.batch_id),
        "prefect.resource.name": f"{ctx.batch_type} for {ctx.tenant_id}",
        **_labels(ctx),
    }
    base = {"tenant_id": ctx.tenant_id, "batch_type": ctx.batch_type, "batch_id": ctx.batch_id}
    return {"event": name, "resource": resource, "related": _related(ctx, with_batch=False), "payload": base | payload}


def job_event(
    ctx: BatchContext, name: str, report: JobReport, status: str, message: str | None = None
) -> dict[str, Any]:
    """The keyword arguments of `emit_event` for a job event; `report.counts` as they stand now."""
    resource = {
        "prefect.resource.id": f"restful-etl.job.{report.job_id}",
        "prefect.resource.name": report.job,
        "restful-etl.kind": report.kind,
        **_labels(ctx),
    }
    payload: dict[str, Any] = {
        "tenant_id": ctx.tenant_id,
        "batch_type": ctx.batch_type,
        "batch_id": ctx.batch_id,
        "job": report.job,
        "kind": report.kind,
        "job_id": report.job_id,
        "status": status,
        "counts": dict(report.counts),
        "records": records_seen(report),
    }
    if report.schema_drift:  # field names only (unexpected_fields, unseen_properties), never values
        payload["schema_drift"] = report.schema_drift
    if message:
        payload["message"] = message
    return {"event": name, "resource": resource, "related": _related(ctx, with_batch=True), "payload": payload}


def emit(event: dict[str, Any]) -> None:
    emit_event(**event)  # queued to Prefect's events worker; a failure there is logged by Prefect, not raised


class BatchProgress:
    """`BatchContext.progress`: a progress event and an artifact update once a job has read `every` more
    records, and at most every `seconds` per job (each is a call to the Prefect server: many tenants' batches
    at once must not flood it)."""

    def __init__(
        self,
        ctx: BatchContext,
        jobs: int,
        every: int,
        artifact_id: UUID | None,
        seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx, self.jobs, self.every, self.artifact_id = ctx, max(jobs, 1), every, artifact_id
        self.seconds, self._clock = seconds, clock
        self.done = 0
        self._marks: dict[str, int] = {}
        self._last: dict[str, float] = {}

    @classmethod
    async def start(cls, ctx: BatchContext, jobs: int, every: int, seconds: float = 0.0) -> BatchProgress:
        """Create the batch's progress artifact (0 %); without it the batch still runs, just without a bar."""
        try:
            artifact_id = await acreate_progress_artifact(
                0.0, key=artifact_key(ctx.batch_type, ctx.tenant_id, "progress"), description=f"{jobs} jobs to run"
            )
        except Exception as ex:  # Prefect's API is status, not the batch's data path
            logger.warning("no progress artifact for batch %s: %s", ctx.batch_id, type(ex).__name__)
            artifact_id = None
        return cls(ctx, jobs, every, artifact_id, seconds)

    async def __call__(self, report: JobReport) -> None:
        seen = records_seen(report)
        mark = seen // self.every
        if mark <= self._marks.get(report.job_id, 0):
            return
        now = self._clock()
        if now - self._last.get(report.job_id, float("-inf")) < self.seconds:
            return  # too soon after the job's last one: the next page or chunk tells it
        self._marks[report.job_id], self._last[report.job_id] = mark, now
        emit(job_event(self.ctx, JOB_PROGRESS, report, "RUNNING"))
        await self.update(f"{report.job}: {seen} records (job {self.done + 1} of {self.jobs})")

    async def job_finished(self, report: JobReport, status: str) -> None:
        self.done += 1
        await self.update(
            f"{report.job}: {status.lower()}, {records_seen(report)} records (job {self.done} of {self.jobs})"
        )

    async def update(self, description: str, progress: float | None = None) -> None:
        if self.artifact_id is None:
            return
        value = 100.0 * self.done / self.jobs if progress is None else progress
        try:
            await aupdate_progress_artifact(self.artifact_id, min(value, 100.0), description=description)
        except Exception as ex:
            logger.warning("progress artifact of batch %s not updated: %s", self.ctx.batch_id, type(ex).__name__)


@asynccontextmanager
async def job_status(ctx: BatchContext, report: JobReport) -> AsyncIterator[None]:
    """Around a job: its started and finished events, and the progress artifact's step."""
    emit(job_event(ctx, JOB_STARTED, report, "RUNNING"))
    status, message = "RUNNING", None
    try:
        yield
        status = report.status
    except asyncio.CancelledError:
        status = "CANCELLED"
        raise
    except BaseException as ex:
        status, message = job_ending(ex), redact(f"{type(ex).__name__}: {ex}", ctx.secrets)[:500]
        raise
    finally:
        emit(job_event(ctx, JOB_FINISHED, report, status, message))
        if isinstance(ctx.progress, BatchProgress):
            await asyncio.shield(ctx.progress.job_finished(report, status))
