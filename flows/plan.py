"""A plan (`restful-etl plan`): a batch type's jobs run in this process against the real APIs, every load in dry
run, on a memory stage and a throwaway audit database; so it writes nothing anywhere and moves no watermark.

No Prefect: a batch type can be tried before it is deployed. Each extract reads everything a first batch would
(a plan has no watermark), each load diffs against the destination and counts what it would write.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_restful_etl.flows.artifacts import screen_counts
from prefect_restful_etl.flows.parameters import parse_parameters
from prefect_restful_etl.flows.resources import api_configs, open_clients
from prefect_restful_etl.flows.secrecy import open_credentials
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch
from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.credentials import all_secrets
from prefect_restful_etl.tasks.engine.exceptions import ScreenStop
from prefect_restful_etl.tasks.engine.extract.job import run_extract
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, ExtractJob, LoadJob, TransformJob
from prefect_restful_etl.tasks.engine.load.job import run_load
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage
from prefect_restful_etl.tasks.engine.transform.job import run_transform

# The counts a plan shows per job, in this order (a job shows those it has)
COUNTS = ("extracted", "transformed", "filtered", "rejected", "inserted", "updated", "expired", "deleted",
          "unchanged", "duplicates", "failed_writes")  # fmt: skip


@dataclass
class Plan:
    jobs: list[dict[str, Any]] = field(default_factory=list)  # per job: its name, kind and counts
    rejects: list[dict[str, Any]] = field(default_factory=list)  # error events by job and screen
    stopped: str | None = None  # a screen that would stop the batch, and why

    def as_json(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "rejects": self.rejects, "stopped": self.stopped}


async def plan_batch(batch_type: BatchType, parameters: dict[str, Any]) -> Plan:
    """Plan one batch of `batch_type` from run parameters (tenant_id, credentials, base_urls, full_refresh)."""
    given = parse_parameters({**parameters, "dry_run": True})
    apis = api_configs(batch_type, given.base_urls)
    credentials, _ = open_credentials(
        given.credentials, given.sealed_credentials, tenant_id=given.tenant_id, apis=apis, callback_url=None
    )
    clients = open_clients(apis, credentials)  # fails before any request
    plan = Plan()
    try:
        with tempfile.TemporaryDirectory(prefix="restful-etl-plan-") as workdir:
            audit = await AuditStore.open(f"sqlite:///{Path(workdir) / 'audit.db'}")
            try:
                ctx = BatchContext(
                    tenant_id=given.tenant_id,
                    batch_id=str(uuid.uuid4()),
                    batch_type=batch_type.name,
                    stage=MemoryStage(),
                    audit=audit,
                    clients=clients,
                    full_refresh=given.full_refresh,
                    secrets=all_secrets(credentials),
                    dry_run=True,
                )
                await audit.merge(EtlBatch(batch_id=ctx.batch_id, tenant_id=ctx.tenant_id, batch_type=ctx.batch_type))
                await _run_jobs(ctx, batch_type, plan)
                plan.rejects = await screen_counts(audit, ctx.batch_id)
            finally:
                await audit.close()
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)
    return plan


async def _run_jobs(ctx: BatchContext, batch_type: BatchType, plan: Plan) -> None:
    for job in batch_type.jobs:
        try:
            report = await _run_job(job, batch_type, ctx)
        except ScreenStop as ex:
            plan.stopped = str(ex)  # scrubbed of the batch's secrets by the screen
            if ex.report is not None:
                plan.jobs.append(_row(ex.report))
            return
        plan.jobs.append(_row(report))


def _row(report: JobReport) -> dict[str, Any]:
    return {"job": report.job, "kind": report.kind, **{k: report.counts[k] for k in COUNTS if k in report.counts}}


async def _run_job(job: ExtractJob | TransformJob | LoadJob, batch_type: BatchType, ctx: BatchContext) -> JobReport:
    report = JobReport(job=job.name, kind=job.kind, job_id=str(uuid.uuid4()))
    errors = ErrorSink(ctx, job.name, report.job_id)
    if isinstance(job, ExtractJob):
        parents = ctx.stage_key(batch_type.job(job.parent.job).slug) if job.parent else None
        return await run_extract(job, ctx, report, errors, parents=parents)
    source = ctx.stage_key(batch_type.job(job.source).slug)
    if isinstance(job, TransformJob):
        return await run_transform(job, ctx, report, errors, source=source, key_fields=batch_type.natural_key_of(job))
    return await run_load(job, ctx, report, errors, source=source)
