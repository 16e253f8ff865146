"""The jobs as Prefect tasks: thin wrappers that look up the batch and run the engine."""

from __future__ import annotations

import logging
import uuid

from prefect import task
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from prefect_restful_etl.tasks import runtime
from prefect_restful_etl.tasks.caching import STAGED_JOB
from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.extract.job import run_extract
from prefect_restful_etl.tasks.engine.jobrun import audited_job
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, ExtractJob, LoadJob, TransformJob
from prefect_restful_etl.tasks.engine.load.job import run_load
from prefect_restful_etl.tasks.engine.report import JobReport, describe_drift
from prefect_restful_etl.tasks.engine.transform.job import run_transform
from prefect_restful_etl.tasks.status import job_status

logger = logging.getLogger(__name__)


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()  # the task run's log, so that the warning shows in the UI
    except MissingContextError:
        return logger


def _job_id() -> str:
    context = TaskRunContext.get()
    return str(context.task_run.id) if context else str(uuid.uuid4())


@task(name="extract", task_run_name="{job.name}", persist_result=True, cache_policy=STAGED_JOB)
async def extract_job(job: ExtractJob, batch_type: BatchType, batch_id: str) -> JobReport:
    ctx = runtime.batch(batch_id)
    async with audited_job(ctx, job.name, job.kind, _job_id()) as report, job_status(ctx, report):
        parents = ctx.stage_key(batch_type.job(job.parent.job).slug) if job.parent else None
        await run_extract(job, ctx, report, ErrorSink(ctx, job.name, report.job_id), parents=parents)
    if report.schema_drift:  # the API changed shape: worth a look, though no record failed for it
        _run_logger().warning(
            "%s: schema drift against its entity schema: %s", job.name, describe_drift(report.schema_drift)
        )
    return report


@task(name="transform", task_run_name="{job.name}", persist_result=True, cache_policy=STAGED_JOB)
async def transform_job(job: TransformJob, batch_type: BatchType, batch_id: str) -> JobReport:
    ctx = runtime.batch(batch_id)
    async with audited_job(ctx, job.name, job.kind, _job_id()) as report, job_status(ctx, report):
        source = ctx.stage_key(batch_type.job(job.source).slug)
        errors = ErrorSink(ctx, job.name, report.job_id)
        await run_transform(job, ctx, report, errors, source=source, key_fields=batch_type.natural_key_of(job))
    return report


@task(name="load", task_run_name="{job.name}", persist_result=True, cache_policy=STAGED_JOB)
async def load_job(job: LoadJob, batch_type: BatchType, batch_id: str) -> JobReport:
    ctx = runtime.batch(batch_id)
    async with audited_job(ctx, job.name, job.kind, _job_id()) as report, job_status(ctx, report):
        source = ctx.stage_key(batch_type.job(job.source).slug)
        await run_load(job, ctx, report, ErrorSink(ctx, job.name, report.job_id), source=source)
    return report
