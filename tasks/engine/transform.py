"""The transform job: read staged records, apply the steps record by record, stage the result."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import RecordError
from prefect_restful_etl.tasks.engine.jobbase import JobBase
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.scd import natural_key
from prefect_restful_etl.tasks.engine.stage import StageKey
from prefect_restful_etl.tasks.engine.transforms import TransformStep, apply_steps


class TransformJob(JobBase):
    """Reshape staged records step by step; rejects go to the error table."""

    kind: Literal["transform"] = "transform"
    source: str = Field(description="The name of the job whose staged records this job reads.")
    steps: list[TransformStep] = Field(default_factory=list)
    natural_key: list[str] | None = Field(
        default=None, description="Identifies an input record in error events; default: the source job's key."
    )


async def run_transform(
    job: TransformJob,
    ctx: BatchContext,
    report: JobReport,
    errors: ErrorSink,
    *,
    source: StageKey,
    key_fields: list[str],
) -> JobReport:
    """A record whose value cannot be converted goes to the error table; the others go on.

    `source` is where the input job staged its records; `key_fields` name an input record in error events.
    """
    target = ctx.stage_key(job.slug)
    report.stage_key = str(target)
    await ctx.stage.clear(target)

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
