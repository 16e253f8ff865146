"""The transform job: read staged records, apply the steps record by record, stage the result."""

from __future__ import annotations

from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import RecordError
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, TransformJob
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.scd import natural_key
from prefect_restful_etl.tasks.engine.transforms import apply_steps


async def run_transform(
    job: TransformJob, batch_type: BatchType, ctx: BatchContext, report: JobReport, errors: ErrorSink
) -> JobReport:
    """A record whose value cannot be converted goes to the error table; the others go on."""
    source = ctx.stage_key(batch_type.job(job.source).slug)
    target = ctx.stage_key(job.slug)
    report.stage_key = str(target)
    await ctx.stage.clear(target)

    key_fields = batch_type.natural_key_of(job)
    read = transformed = rejected = 0
    async for chunk in ctx.stage.read(source):
        out = []
        for record in chunk:
            read += 1
            try:
                out.extend(apply_steps(job.steps, record))
            except RecordError as ex:
                rejected += 1
                await errors.add(
                    screen="transform",
                    message=str(ex),
                    natural_key=natural_key(record, key_fields),
                    column=ex.column,
                    value=ex.value,
                )
        if out:
            await ctx.stage.append(target, out)
            transformed += len(out)
        report.counts = {"read": read, "transformed": transformed, "rejected": rejected}
    await errors.flush()
    return report
