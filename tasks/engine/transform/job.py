"""The transform job: read staged records chunk by chunk, run the steps, lookups and screens, stage the result.

Each input record goes through the job's `Pipeline` (steps and lookups); each record it becomes goes
through the quality screens in their declared order. Every failure is an error event; rejected records
are not staged, flagged ones are; a `stop` screen stops the batch (`ScreenStop`) before anything is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import RecordError, ScreenStop, StageError
from prefect_restful_etl.tasks.engine.http.paths import set_path
from prefect_restful_etl.tasks.engine.jobbase import JobBase
from prefect_restful_etl.tasks.engine.load.keysets import KeySet, StagedKeySet
from prefect_restful_etl.tasks.engine.load.scd import natural_key
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.transform.lookup_config import (
    ApiLookupConfig,
    LookupConfig,
    StagedLookupConfig,
    open_lookup_sources,
)
from prefect_restful_etl.tasks.engine.transform.lookups import Lookup, LookupSource
from prefect_restful_etl.tasks.engine.transform.newest import KeyIndex, StagedKeyIndex
from prefect_restful_etl.tasks.engine.transform.screens import (
    Exists,
    Fate,
    Screen,
    Screener,
    ScreenFailure,
    ScreenResult,
)
from prefect_restful_etl.tasks.engine.transform.steps import Pipeline, TransformStep

Record = dict[str, Any]

# A value the steps cannot convert is reported as a failure of this pseudo-screen (also in `etl_screen`).
TRANSFORM_SCREEN: dict[str, Any] = {
    "name": "transform",
    "type": "column",
    "category": "conversion",
    "severity": 5,
    "action": "reject",
}


class TransformJob(JobBase):
    """Reshape staged records step by step, look values up, screen them; rejects go to the error table.

    ```json
    {"kind": "transform", "name": "Shape customers", "source": "Extract CRM customers",
     "steps": [{"op": "lookup", "field": "country", "target": "country_name", "source": "countries"}],
     "lookups": {"countries": {"type": "static", "values": {"DE": "Germany"}}},
     "screens": [{"name": "email present", "check": "not_null", "column": "email", "severity": 8}],
     "quality_flag": "quality"}
    ```
    Screens run after the steps, on each record as it will be staged (and loaded); error events name the
    input record by its natural key.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "transform",
                    "name": "Shape customers",
                    "source": "Extract CRM customers",
                    "steps": [{"op": "lookup", "field": "country", "target": "country_name", "source": "countries"}],
                    "lookups": {"countries": {"type": "static", "values": {"DE": "Germany"}}},
                    "screens": [{"name": "email present", "check": "not_null", "column": "email", "severity": 8}],
                    "quality_flag": "quality",
                }
            ]
        }
    )

    kind: Literal["transform"] = "transform"
    source: str = Field(description="The name of the job whose staged records this job reads.")
    steps: list[TransformStep] = Field(default_factory=list, description="Steps run on each record, in this order.")
    lookups: dict[str, LookupConfig] = Field(
        default_factory=dict, description="Lookup sources by name, for lookup steps and `exists` screens."
    )
    screens: list[Screen] = Field(default_factory=list, description="Quality screens, run in this order.")
    quality_flag: str | None = Field(
        default=None,
        pattern=r"^[^.]+$",  # top level: writing it can never meet a record's own values on the way
        description='A top-level field that tells each staged record\'s screen outcome: "passed" or "flagged".',
    )
    lookup_concurrency: int = Field(default=8, ge=1, description="Records looked up at once (API lookups).")
    natural_key: list[str] | None = Field(
        default=None, description="Identifies an input record in error events; default: the source job's key."
    )

    @model_validator(mode="after")
    def _check_lookups(self) -> TransformJob:
        names = [screen.name for screen in self.screens]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"screens: names must be unique; {duplicated} repeat")
        for where, source, infer in self._lookup_uses():
            if isinstance(source, str) and source not in self.lookups:
                raise ValueError(f"{where}: {source!r} is not one of the job's lookups {sorted(self.lookups)}")
            config = self.lookups.get(source) if isinstance(source, str) else None
            if infer and not (isinstance(config, ApiLookupConfig) and config.create):
                raise ValueError(f"{where}: on_miss 'infer' needs an api lookup with create: true")
        return self

    def _lookup_uses(self) -> list[tuple[str, str | dict[str, Any], bool]]:
        uses = [(f"steps.{i}.source", s.source, s.on_miss == "infer") for i, s in enumerate(self.steps)
                if isinstance(s, Lookup)]  # fmt: skip
        uses += [(f"screens.{i}.lookup", s.lookup, False) for i, s in enumerate(self.screens) if isinstance(s, Exists)]
        return uses

    @property
    def lookup_jobs(self) -> list[str]:
        """The earlier jobs whose staged records this job looks values up in."""
        return [c.job for c in self.lookups.values() if isinstance(c, StagedLookupConfig)]

    @property
    def lookup_apis(self) -> list[str]:
        return [c.api for c in self.lookups.values() if isinstance(c, ApiLookupConfig)]


async def run_transform(
    job: TransformJob,
    ctx: BatchContext,
    report: JobReport,
    errors: ErrorSink,
    *,
    source: StageKey,
    key_fields: list[str],
) -> JobReport:
    """Stream the records staged under `source` through the job, one chunk in memory at a time.

    `key_fields` name an input record in error events. A `stop` screen raises `ScreenStop` once its
    error events are written, and leaves nothing staged for the load.
    """
    target = ctx.stage_key(job.slug)
    report.stage_key = str(target)
    await ctx.stage.clear(target)
    keys = StageKey(ctx.tenant_id, ctx.batch_id, job.slug)  # unique screens' claimed keys rest beside the output
    run = _TransformRun(
        job,
        open_lookup_sources(job.lookups, ctx),
        errors,
        key_fields,
        lambda name: StagedKeySet(ctx.stage, keys.part(name)),
        lambda name: StagedKeyIndex(ctx.stage, keys.part(name)),
    )
    await run.screener.drop()  # an earlier attempt's claims would reject every record as a repeat
    read = transformed = 0
    try:
        async for chunk in ctx.stage.read(source):
            read += len(chunk)
            kept = await run.chunk(chunk)
            if kept:
                await ctx.stage.append(target, kept)
                transformed += len(kept)
            report.counts, report.quality = run.counts(read, transformed), run.quality()
            await ctx.report_progress(report)
    except BaseException as ex:
        report.counts, report.quality = run.counts(read, transformed), run.quality()
        await asyncio.shield(errors.flush())  # a stopped batch's error events are its explanation
        with contextlib.suppress(StageError):  # the failure, not a stage hiccup in tidying up, is the outcome
            if isinstance(ex, ScreenStop):
                await ctx.stage.clear(target)  # nothing half-screened waits in the stage for a load
                report.counts = run.counts(read, 0)  # so nothing counts as transformed (handed on) either
            await run.screener.drop()
        if isinstance(ex, ScreenStop):
            ex.report = report  # the batch's audit row keeps the figures of what was screened before the stop
        raise
    await errors.flush()
    if run.screener.superseded:  # a later, newer record beat one already staged: leave each key's newest only
        transformed = await _keep_newest(ctx, target, run.screener)
    with contextlib.suppress(StageError):  # the records are staged: leftover claims only wait for their TTL
        await run.screener.drop()
    report.counts, report.quality = run.counts(read, transformed), run.quality()
    return report


async def _keep_newest(ctx: BatchContext, target: StageKey, screener: Screener) -> int:
    """Rewrite the job's output with only each key's newest record, through a key beside it; how many remain."""
    scratch, place, kept = target.part("newest"), 0, 0
    await ctx.stage.clear(scratch)
    async for chunk in ctx.stage.read(target):
        newest = await screener.keep(chunk, place)
        place += len(chunk)
        if newest:
            await ctx.stage.append(scratch, newest)
    await ctx.stage.clear(target)
    async for chunk in ctx.stage.read(scratch):
        await ctx.stage.append(target, chunk)
        kept += len(chunk)
    await ctx.stage.clear(scratch)
    return kept


class _TransformRun:
    """One job run's pipeline, screener and error reporting; built once, fed chunk after chunk."""

    def __init__(
        self,
        job: TransformJob,
        sources: dict[str, LookupSource],
        errors: ErrorSink,
        key_fields: list[str],
        key_sets: Callable[[str], KeySet],
        indexes: Callable[[str], KeyIndex],
    ) -> None:
        self.pipeline = Pipeline(job.steps, sources)
        self.screener = Screener(job.screens, sources, key_sets, indexes)
        self.errors, self.key_fields, self.flag = errors, key_fields, job.quality_flag
        self.limit = asyncio.Semaphore(job.lookup_concurrency) if job.lookup_apis else None

    async def chunk(self, chunk: list[Record]) -> list[Record]:
        """The records of `chunk` that pass or are flagged, in input order."""
        if self.limit is None:
            outcomes = [await self._transform(record) for record in chunk]
        else:  # API lookups wait on the network: overlap them, screening still goes in input order
            outcomes = await self._concurrently(chunk)
        await self.screener.prefetch(out for outcome in outcomes if not isinstance(outcome, RecordError)
                                     for out in outcome)  # fmt: skip
        kept: list[Record] = []
        for record, outcome in zip(chunk, outcomes, strict=True):
            key = natural_key(record, self.key_fields)
            if isinstance(outcome, RecordError):
                await self._report(key, _conversion_failure(outcome))
                continue
            for out in outcome:
                if await self._screen(key, out):
                    kept.append(out)
        await self.screener.flush()
        return kept

    async def _concurrently(self, chunk: list[Record]) -> list[list[Record] | RecordError]:
        limit = self.limit
        assert limit is not None

        async def bounded(record: Record) -> list[Record] | RecordError:
            async with limit:
                return await self._transform(record)

        try:
            async with asyncio.TaskGroup() as group:  # a failing API cancels the lookups still in flight
                tasks = [group.create_task(bounded(record)) for record in chunk]
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _transform(self, record: Record) -> list[Record] | RecordError:
        try:
            return await self.pipeline.process(record)
        except RecordError as ex:
            return ex

    async def _screen(self, key: str, record: Record) -> bool:
        result = await self.screener.screen(record)
        for failure in result.failures:
            await self.errors.add(natural_key=key, **failure.as_error_event())
        result.raise_for_stop(self.errors.scrub)
        if result.kept and self.flag:
            set_path(record, self.flag, result.fate.value)
        return result.kept

    async def _report(self, key: str, failure: ScreenFailure) -> None:
        self.screener.summary.add(ScreenResult((failure,), Fate.REJECTED))
        await self.errors.add(natural_key=key, **failure.as_error_event())

    def counts(self, read: int, transformed: int) -> dict[str, int]:
        counts = {"read": read, "transformed": transformed, "rejected": self.screener.summary.rejected,
                  "filtered": self.pipeline.filtered}  # fmt: skip
        if self.screener.duplicates:  # older versions of a key, dropped by a unique screen: as a load counts them
            counts["duplicates"] = self.screener.duplicates
        return counts

    def quality(self) -> dict[str, Any]:
        return self.screener.summary.as_dict()


def _conversion_failure(ex: RecordError) -> ScreenFailure:
    value = None if ex.value is None else str(ex.value)
    return ScreenFailure(
        TRANSFORM_SCREEN["name"], TRANSFORM_SCREEN["type"], TRANSFORM_SCREEN["category"],
        TRANSFORM_SCREEN["severity"], TRANSFORM_SCREEN["action"], ex.column, value, str(ex),
    )  # fmt: skip
