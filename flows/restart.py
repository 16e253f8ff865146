"""Restart: a batch that failed, was cancelled or crashed continues from its stage instead of starting over.

Two ways back in:
- Prefect's retry of the same flow run (the flow's `retries`, or "Retry" in the UI, which needs credentials
  Prefect can still read): job reports are persisted task results, cached per flow run and *stage epoch*
  (tasks/caching.py), so completed jobs come back `Cached` and only the rest run.
- A new run with `resume_batch_id` and fresh credentials: the jobs the old batch completed, in order, up to
  the first that did not, are reused from its `etl_job` rows and its stage; the rest run. The new batch's
  `etl_batch.resumed_from` names the old one, and its reused jobs' rows say where they came from.

The stage epoch is a random id staged under the batch's `~epoch` key before any job writes, and only then.
Every stage key of a batch lives `ttl` seconds after its last write, and every job writes after the epoch
did, so while the epoch is there every job's output is too; a memory stage's epoch dies with its process.
A missing epoch therefore means "the staged data may be gone", and nothing staged under it is reused.

What a stage outage, a kill or a cancel can leave in the destination: only whole records. Every write is one HTTP
request of whole records (one, or a bulk upsert's batch), and the load reads the stage chunk by chunk, finishing
each chunk's writes before it reads the next, so a stage outage fails it between chunks (`StageUnavailable`, naming
the key and the server) once every write of the chunk before has been answered. A kill or a cancel may cut off
writes in flight, each taken whole by the destination or not at all. It is not all or nothing for the batch: the
chunks before the failure stay written. A retry or resume converges, because the load diffs against the destination
by natural key: what is there already is left alone, and nothing is written twice.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_run_logger

from prefect_restful_etl.tasks.engine.audit.tables import COUNT_FIELDS, EtlBatch, EtlJob, utcnow
from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.exceptions import ConfigError, StageError, StageUnavailable
from prefect_restful_etl.tasks.engine.jobtypes import BatchType
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey

EPOCH_JOB = "~epoch"  # job slugs are [a-z0-9-], so no job's output can take this key
_STAGED_COUNT = {"extract": "extracted", "transform": "transformed"}  # what a job of each kind stages


async def prepare(ctx: BatchContext, batch_type: BatchType, resume_batch_id: str | None) -> dict[str, JobReport]:
    """Before the first job: the batch's stage epoch, and the reports of the jobs it reuses, by job name."""
    ctx.stage_epoch = await stage_epoch(ctx.stage, ctx.tenant_id, ctx.batch_id)
    if not resume_batch_id:
        return {}
    original = await _resumable(ctx, resume_batch_id)
    ctx.full_refresh = original.full_refresh  # the continuation of a batch is what that batch was
    await ctx.audit.update_batch(ctx.batch_id, resumed_from=original.batch_id, full_refresh=original.full_refresh)
    reused: dict[str, JobReport] = {}
    for row in await _reusable_rows(ctx, batch_type, original.batch_id):
        reused[row.job] = await _reuse(ctx, batch_type, row, original.batch_id)
    get_run_logger().info(
        "resuming batch %s: reusing %s", original.batch_id, ", ".join(reused) or "nothing (its stage is gone)"
    )
    return reused


async def drop_resumed(ctx: BatchContext) -> None:
    """Once a resumed batch completes, the stages it continued are done with too."""
    row = await ctx.audit.get_batch(ctx.batch_id)
    others = {key.batch_id for key in ctx.resumed_keys.values()}
    if row is not None and row.resumed_from:
        others.add(row.resumed_from)
    for batch_id in sorted(others - {ctx.batch_id}):
        await ctx.stage.drop_batch(ctx.tenant_id, batch_id)


async def stage_epoch(stage: Stage, tenant_id: str, batch_id: str, *, create: bool = True) -> str | None:
    """The batch's stage epoch; a new one if it has none (unless `create` is False: then None)."""
    key = StageKey(tenant_id, batch_id, EPOCH_JOB)
    try:
        found = [record async for chunk in stage.read(key) for record in chunk]
    except StageUnavailable:
        raise  # an outage is not a lost stage: fail now rather than redo every job
    except StageError:
        found = []  # never staged, expired or dropped
    if found:
        return str(found[0]["epoch"])
    if not create:
        return None
    epoch = uuid.uuid4().hex
    await stage.clear(key)
    await stage.append(key, [{"epoch": epoch}])
    return epoch


async def _resumable(ctx: BatchContext, batch_id: str) -> EtlBatch:
    """The batch to resume: this tenant's, of this batch type, not completed, and no longer running."""
    original = await ctx.audit.get_batch(batch_id)
    problem = None
    if original is None or original.tenant_id != ctx.tenant_id:
        problem = f"no batch {batch_id} of tenant {ctx.tenant_id!r} in the audit database"
    elif batch_id == ctx.batch_id:
        problem = "a batch cannot resume itself"
    elif original.batch_type != ctx.batch_type:
        problem = f"batch {batch_id} is a {original.batch_type!r} batch, not {ctx.batch_type!r}"
    elif original.status == "COMPLETED":
        problem = f"batch {batch_id} completed: there is nothing to resume"
    if problem:
        raise ConfigError("resume_batch_id", problem)
    assert original is not None
    await _check_ended_in_prefect(batch_id)
    return original


async def _check_ended_in_prefect(batch_id: str) -> None:
    """Two batches writing the same stage and destination at once could duplicate records: refuse that."""
    try:
        flow_run_id = uuid.UUID(batch_id)
    except ValueError:
        return  # not a flow run's id: a batch run outside Prefect
    async with get_client() as client:
        try:
            flow_run = await client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            return  # another Prefect API ran it; the audit row's status is all there is
    state = flow_run.state
    if state is not None and not state.is_final():
        raise ConfigError(
            "resume_batch_id",
            f"batch {batch_id} is still {state.name} in Prefect: let it end, or cancel it, before resuming it",
        )


async def _reusable_rows(ctx: BatchContext, batch_type: BatchType, batch_id: str) -> list[EtlJob]:
    """The old batch's completed jobs, in the batch type's order, up to the first one that must run again."""
    completed: dict[str, EtlJob] = {}
    for row in await ctx.audit.jobs(batch_id):
        if row.status == "COMPLETED":
            completed[row.job] = row  # ordered by start: a retried job's last completion wins
    rows = []
    for job in batch_type.jobs:
        done = completed.get(job.name)
        if done is None or not await _still_staged(ctx, done):
            break  # every later job may read this one's output, so they all run again
        rows.append(done)
    return rows


async def _still_staged(ctx: BatchContext, row: EtlJob) -> bool:
    if row.stage_key is None:
        return True  # a load stages nothing
    key = parse_stage_key(row.stage_key)
    if key.tenant_id != ctx.tenant_id:
        return False
    if await stage_epoch(ctx.stage, key.tenant_id, key.batch_id, create=False) is None:
        return False
    staged = getattr(row, _STAGED_COUNT.get(row.kind, ""), 0) or 0
    return not staged or await ctx.stage.count(key) > 0


async def _reuse(ctx: BatchContext, batch_type: BatchType, row: EtlJob, original_id: str) -> JobReport:
    """The old job's report under this batch, its audit row, and its staged output where later jobs look."""
    counts = {name: getattr(row, name) for name in COUNT_FIELDS if getattr(row, name)}
    job_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"restful-etl:{ctx.batch_id}:{row.job}"))  # a retry merges it
    values: dict[str, Any] = {
        "stage_key": row.stage_key,
        "watermark_before": row.watermark_before,
        "watermark_after": row.watermark_after,
    }
    await ctx.audit.merge(
        EtlJob(
            job_id=job_id, batch_id=ctx.batch_id, tenant_id=ctx.tenant_id, job=row.job, kind=row.kind,
            status="COMPLETED", ended_at=utcnow(), message=f"reused from batch {original_id}", **values, **counts,
        )
    )  # fmt: skip
    if row.stage_key is not None:
        ctx.resumed_keys[batch_type.job(row.job).slug] = parse_stage_key(row.stage_key)
    # keys_at_watermark is not in the audit row: the next run re-reads the records at the watermark, which
    # its load finds unchanged (incremental.py: keeping one too many is harmless)
    return JobReport(job=row.job, kind=row.kind, job_id=job_id, counts=counts, **values)


def parse_stage_key(text: str) -> StageKey:
    """`prefix:tenant:batch:job` back into a StageKey (no part may hold `:`, so the split is exact)."""
    parts = text.split(":")
    if len(parts) != 4:
        raise StageError(f"{text!r} is not a stage key")
    prefix, tenant_id, batch_id, job = parts
    return StageKey(tenant_id, batch_id, job, prefix)
