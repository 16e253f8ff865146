"""The audit row of a running job: written when it starts, finished with its counts or its failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prefect_restful_etl.tasks.engine.audit.tables import COUNT_FIELDS, EtlJob, utcnow
from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.exceptions import ScreenStop
from prefect_restful_etl.tasks.engine.redaction import redact
from prefect_restful_etl.tasks.engine.report import JobReport


@asynccontextmanager
async def audited_job(ctx: BatchContext, name: str, kind: str, job_id: str) -> AsyncIterator[JobReport]:
    """Yield the job's report to fill in; its `etl_job` row follows it, whatever the ending."""
    report = JobReport(job=name, kind=kind, job_id=job_id, counts={})
    await ctx.audit.merge(EtlJob(job_id=job_id, batch_id=ctx.batch_id, tenant_id=ctx.tenant_id, job=name, kind=kind))
    started = time.monotonic()
    try:
        yield report
    except asyncio.CancelledError:
        report.status = "CANCELLED"
        await asyncio.shield(_finish(ctx, report, started, "cancelled"))
        raise
    except BaseException as ex:
        report.status = job_ending(ex)
        await asyncio.shield(_finish(ctx, report, started, redact(f"{type(ex).__name__}: {ex}", ctx.secrets)))
        raise
    await _finish(ctx, report, started, None)


def job_ending(ex: BaseException) -> str:
    """The status of a job that raised `ex`: a stop screen's verdict is not a crash."""
    return "STOPPED" if isinstance(ex, ScreenStop) else "FAILED"


async def _finish(ctx: BatchContext, report: JobReport, started: float, message: str | None) -> None:
    report.seconds = round(time.monotonic() - started, 3)
    counts = {name: value for name, value in report.counts.items() if name in COUNT_FIELDS}
    await ctx.audit.update_job(
        report.job_id,
        status=report.status,
        ended_at=utcnow(),
        stage_key=report.stage_key,
        watermark_before=report.watermark_before,
        watermark_after=report.watermark_after,
        message=message[:2000] if message else None,
        **counts,
    )
