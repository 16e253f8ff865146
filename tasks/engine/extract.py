"""The extract job: read an entity from an API page by page and stage it, tracking the watermark."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.incremental import Cursor, Incremental
from prefect_restful_etl.tasks.engine.jobbase import Endpoint, JobBase
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.scd import natural_key


class ExtractJob(JobBase):
    """Read an entity from an API, page by page, into the stage."""

    kind: Literal["extract"] = "extract"
    api: str
    endpoint: Endpoint
    natural_key: list[str] = Field(min_length=1, description="Dotted paths that identify a record in the source.")
    incremental: Incremental | None = None


async def run_extract(job: ExtractJob, ctx: BatchContext, report: JobReport) -> JobReport:
    """Stream every page into the stage; the watermark is reported, and saved only when the batch succeeds."""
    client = ctx.client(job.api)
    key = ctx.stage_key(job.slug)
    report.stage_key = str(key)
    await ctx.stage.clear(key)  # a retried extract starts its output afresh: nothing is staged twice

    params = dict(job.endpoint.params)
    cursor: Cursor | None = None
    if job.incremental is not None:
        stored = None if ctx.full_refresh else await ctx.audit.get_watermark(ctx.tenant_id, ctx.batch_type, job.slug)
        cursor = Cursor(
            job.incremental,
            value=stored.value if stored else None,
            keys_at_value=stored.keys_at_value if stored else [],
        )
        report.watermark_before = cursor.value
        params.update(cursor.request_params())

    extracted = skipped = 0
    pages = client.paginate(
        job.endpoint.path, params=params, records_path=job.endpoint.records_path, paginator=job.endpoint.paginator
    )
    async for page in pages:
        if cursor is not None:
            fresh = [r for r in page if cursor.admit(r, natural_key(r, job.natural_key))]
            skipped += len(page) - len(fresh)
            page = fresh
        if page:
            await ctx.stage.append(key, page)
            extracted += len(page)
        report.counts = {"extracted": extracted, "skipped": skipped}

    if cursor is not None:
        report.watermark_after = cursor.value
        report.keys_at_watermark = list(cursor.keys_at_value)
    report.counts = {"extracted": extracted, "skipped": skipped}
    return report
