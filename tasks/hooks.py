"""The micro-batch's first job as a Prefect task: the records the hooks pushed, staged for the batch's transform."""

from __future__ import annotations

import uuid

from prefect import task
from prefect.context import TaskRunContext

from prefect_restful_etl.tasks import runtime
from prefect_restful_etl.tasks.caching import STAGED_JOB
from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.hooks.config import HookFeed
from prefect_restful_etl.tasks.engine.hooks.intake import Intake
from prefect_restful_etl.tasks.engine.hooks.pushed import run_pushed
from prefect_restful_etl.tasks.engine.jobrun import audited_job
from prefect_restful_etl.tasks.engine.jobtypes import ExtractJob
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.status import job_status


@task(name="pushed", task_run_name="{job.name} (pushed)", persist_result=True, cache_policy=STAGED_JOB)
async def pushed_job(job: ExtractJob, feed: HookFeed, batch_id: str, receiver: str, segments: list[str]) -> JobReport:
    """Stage what the hooks of `segments` pushed (or named by id), in place of `job`'s extract."""
    ctx = runtime.batch(batch_id)
    task_run = TaskRunContext.get()
    job_id = str(task_run.task_run.id) if task_run else str(uuid.uuid4())
    async with audited_job(ctx, job.name, job.kind, job_id) as report, job_status(ctx, report):
        intake = Intake(ctx.stage, receiver)
        await run_pushed(
            job, feed, ctx, report, ErrorSink(ctx, job.name, report.job_id), intake=intake, segments=segments
        )
    return report
