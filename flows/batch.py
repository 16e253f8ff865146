"""Running one batch: redact, open the resources, run the jobs in order, audit, advance watermarks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Set
from typing import Any

from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from pydantic import SecretStr

from prefect_restful_etl.flows.parameters import BatchParameters, parse_parameters
from prefect_restful_etl.flows.publish import batch_ended, batch_started
from prefect_restful_etl.flows.resources import (
    api_configs,
    audit_settings,
    close_stage,
    load_api_blocks,
    open_audit,
    open_clients,
    open_stage,
    rate_limiters,
    stage_settings,
)
from prefect_restful_etl.flows.restart import drop_resumed, prepare
from prefect_restful_etl.flows.secrecy import open_credentials, redact_stored_parameters
from prefect_restful_etl.tasks import runtime
from prefect_restful_etl.tasks.engine.audit.lease import BatchLease, BatchOverlap, LeaseLost
from prefect_restful_etl.tasks.engine.audit.store import elapsed
from prefect_restful_etl.tasks.engine.audit.tables import COUNT_FIELDS, EtlBatch, EtlWatermark, utcnow
from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.credentials import all_secrets
from prefect_restful_etl.tasks.engine.exceptions import ScreenStop, StageError
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, ExtractJob, LoadJob, TransformJob
from prefect_restful_etl.tasks.engine.quality import batch_quality, screen_dimension
from prefect_restful_etl.tasks.engine.redaction import redact
from prefect_restful_etl.tasks.engine.report import BatchReport, JobReport
from prefect_restful_etl.tasks.engine.settings import Settings
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey
from prefect_restful_etl.tasks.jobs import extract_job, load_job, transform_job

# A job run another way (a micro-batch's pushed records in place of its extract), given the batch id.
Substitute = Callable[[str], Awaitable[JobReport]]


async def run_batch(
    batch_type: BatchType, parameters: dict[str, Any], *, substitutes: Mapping[str, Substitute] | None = None
) -> BatchReport:
    """One batch of `batch_type` from the run's parameters as sent: masked in Prefect, then validated.

    `substitutes` runs the named jobs another way; such a batch moves no watermark (they are the polling's)."""
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None, "run_batch runs inside a batch flow"
    flow_run = context.flow_run
    batch_id = str(flow_run.id)
    tenant = parameters.get("tenant_id")
    tags = [f"batch-type:{batch_type.name}", *([f"tenant:{tenant}"] if isinstance(tenant, str) and tenant else [])]
    await redact_stored_parameters(flow_run.id, context.parameters or {}, tags)  # as Prefect stored them
    given = parse_parameters(parameters)  # after redaction: a bad parameter is named, its value never shown
    tenant_id, full_refresh = given.tenant_id, given.full_refresh
    apis = api_configs(batch_type, given.base_urls, await load_api_blocks(given.api_blocks))
    credentials, callback_secret = open_credentials(  # opened in memory, for this tenant and their hosts only
        given.credentials, given.sealed_credentials, tenant_id=tenant_id, apis=apis, callback_url=given.callback_url
    )
    logger = get_run_logger()
    settings = await stage_settings(await audit_settings(Settings()))  # named blocks replace the settings
    async with contextlib.AsyncExitStack() as opened:  # what opened before a failure is closed again
        stage = open_stage(settings)  # (connects on first use; its server also holds the APIs' rate limits)
        opened.push_async_callback(close_stage, stage)
        limiters = rate_limiters(apis, tenant_id, stage)
        clients = open_clients(apis, credentials, limiters)  # a bad credential or config fails here, before any request
        for client in clients.values():
            opened.push_async_callback(client.__aexit__, None, None, None)
        audit = await open_audit(settings)
        opened.push_async_callback(audit.close)
        ctx = BatchContext(
            tenant_id=tenant_id,
            batch_id=batch_id,
            batch_type=batch_type.name,
            stage=stage,
            audit=audit,
            clients=clients,
            full_refresh=full_refresh,
            secrets=[*all_secrets(credentials), *_store_secrets(settings, stage)],
            key_prefix=getattr(stage, "prefix", StageKey.prefix),
            dry_run=given.dry_run,
            # The run's expected start survives a Prefect retry, so a retried type 2 load opens the same versions.
            effective_at=flow_run.expected_start_time or utcnow(),
        )
        await audit.merge(
            EtlBatch(batch_id=batch_id, tenant_id=tenant_id, batch_type=batch_type.name, full_refresh=full_refresh)
        )
        opened.pop_all()  # from here on the batch's own ending closes them (_close)
    return await _run(ctx, batch_type, given, settings, callback_secret, logger, substitutes or {})


async def _run(
    ctx: BatchContext,
    batch_type: BatchType,
    given: BatchParameters,
    settings: Settings,
    callback_secret: SecretStr | None,
    logger: Any,
    substitutes: Mapping[str, Substitute],
) -> BatchReport:
    """The jobs in order, then the audit rows, watermarks and the report; whatever happens, the batch's ending."""
    tenant_id, batch_id, audit = ctx.tenant_id, ctx.batch_id, ctx.audit
    started = time.monotonic()
    runtime.register(ctx)
    reports: list[JobReport] = []
    lease = BatchLease(audit, tenant_id, batch_type.name, batch_id, ttl=settings.lease_ttl)
    try:
        await batch_started(
            ctx,
            len(batch_type.jobs),
            settings.progress_every,
            callback_url=given.callback_url,
            callback_secret=callback_secret,
            seconds=settings.progress_seconds,
        )
        logger.info("batch %s for tenant %s: %d jobs", batch_type.name, tenant_id, len(batch_type.jobs))
        await audit.sync_screens(batch_type.name, screen_dimension(batch_type))
        reused = await prepare(ctx, batch_type, given.resume_batch_id)  # the jobs a resumed batch need not run
        await lease.hold(settings.overlap_wait)  # one batch per tenant and batch type, across every worker
        for job in batch_type.jobs:
            if job.name in reused:
                reports.append(reused[job.name])
            elif job.name in substitutes:
                reports.append(await substitutes[job.name](batch_id))
            else:
                reports.append(await _run_job(job, batch_type, batch_id))
        if not substitutes:
            await _advance_watermarks(ctx, batch_type, reports)
        report = await _finish(ctx, batch_type, reports, started, "COMPLETED", None, settings)
    except asyncio.CancelledError:
        if not lease.lost:
            await asyncio.shield(_finish(ctx, batch_type, reports, started, "CANCELLED", "cancelled", settings))
            raise
        lost = LeaseLost(f"batch {batch_id} could not renew its lease on tenant {tenant_id!r} in time: stopped")
        asyncio.current_task().uncancel()  # type: ignore[union-attr]  # our own keeper cancelled us, not Prefect
        await asyncio.shield(_finish(ctx, batch_type, reports, started, "FAILED", f"LeaseLost: {lost}", settings))
        raise lost from None
    except BaseException as ex:
        message = redact(f"{type(ex).__name__}: {ex}", ctx.secrets)
        status = _ending(ex)
        if isinstance(ex, ScreenStop) and ex.report is not None:
            reports.append(ex.report)  # the stopped job's screen figures belong in the batch's row too
        await asyncio.shield(_finish(ctx, batch_type, reports, started, status, message, settings))
        raise
    else:
        if not settings.keep_stage:
            await _drop_stage(ctx, logger)
        return report
    finally:
        runtime.unregister(batch_id)
        await asyncio.shield(lease.end())
        await asyncio.shield(_close(ctx))


def _ending(ex: BaseException) -> str:
    """A screen's verdict and a refusal to overlap are no crashes."""
    return "STOPPED" if isinstance(ex, ScreenStop) else "REFUSED" if isinstance(ex, BatchOverlap) else "FAILED"


async def _drop_stage(ctx: BatchContext, logger: Any) -> None:
    """Tidy a completed batch's stage; a stage hiccup now changes nothing the batch did (its TTL tidies)."""
    try:
        await ctx.stage.drop_batch(ctx.tenant_id, ctx.batch_id)
        await drop_resumed(ctx)
    except StageError as ex:
        logger.warning("batch completed; its stage is left to expire: %s", redact(str(ex), ctx.secrets))


async def _run_job(job: ExtractJob | TransformJob | LoadJob, batch_type: BatchType, batch_id: str) -> JobReport:
    if isinstance(job, ExtractJob):
        return await extract_job(job, batch_type, batch_id)
    if isinstance(job, TransformJob):
        return await transform_job(job, batch_type, batch_id)
    return await load_job(job, batch_type, batch_id)


async def _advance_watermarks(ctx: BatchContext, batch_type: BatchType, reports: list[JobReport]) -> None:
    """Only a completed batch moves a watermark, so a failed one is read again in full next time."""
    if ctx.dry_run:
        return  # nothing was loaded: the next real batch must read the same records
    for report in reports:
        job = batch_type.job(report.job)
        if not isinstance(job, ExtractJob) or job.incremental is None:
            continue
        if report.watermark_after is None and not ctx.full_refresh:
            continue  # nothing read: keep what we had
        await ctx.audit.set_watermark(
            EtlWatermark(
                tenant_id=ctx.tenant_id,
                batch_type=batch_type.name,
                job=job.slug,
                cursor_field=job.incremental.cursor_field,
                value=report.watermark_after,
                keys_at_value=report.keys_at_watermark,
                batch_id=ctx.batch_id,
            )
        )


def _totals(reports: list[JobReport], lookup_extracts: Set[str] = frozenset()) -> dict[str, int]:
    """The batch's counts: each job's added up, except what extracts read only for lookups (their own etl_job
    rows keep it), so that `extracted` counts the records the batch moves."""
    totals: Counter[str] = Counter()
    for report in reports:
        for name, value in report.counts.items():
            if name in COUNT_FIELDS and not (name == "extracted" and report.job in lookup_extracts):
                totals[name] += value
    return {name: totals[name] for name in COUNT_FIELDS}


async def _finish(
    ctx: BatchContext,
    batch_type: BatchType,
    reports: list[JobReport],
    started: float,
    status: str,
    message: str | None,
    settings: Settings,
) -> BatchReport:
    if status != "COMPLETED":  # what the job that failed (or was cancelled) did before it ended counts too
        reports = [*reports, *await _unreported(ctx, reports)]
    totals, quality = _totals(reports, batch_type.lookup_extracts()), batch_quality(reports)
    await ctx.audit.update_batch(ctx.batch_id, status=status, ended_at=utcnow(), message=message, **totals, **quality)
    report = BatchReport(
        batch_id=ctx.batch_id,
        tenant_id=ctx.tenant_id,
        batch_type=batch_type.name,
        status=status,
        full_refresh=ctx.full_refresh,
        jobs=reports,
        counts=totals,
        quality=quality,
        seconds=round(time.monotonic() - started, 3),
        audit_database=_where(settings),
        message=message,
    )
    await batch_ended(ctx, report)  # artifacts, callback, the finished event; never raises
    return report


async def _unreported(ctx: BatchContext, reports: list[JobReport]) -> list[JobReport]:
    """The jobs that ended without handing back a report, as their `etl_job` rows hold them (counts as they
    stood when the job ended); of a job run more than once (a Prefect retry of the run), its latest row."""
    reported = {report.job for report in reports}
    latest = {row.job: row for row in await ctx.audit.jobs(ctx.batch_id) if row.job not in reported}
    return [
        JobReport(
            job=row.job,
            kind=row.kind,
            job_id=row.job_id,
            status=row.status,
            counts={name: getattr(row, name) for name in COUNT_FIELDS},
            seconds=elapsed(row.started_at, row.ended_at),
        )
        for row in latest.values()
    ]


def _store_secrets(settings: Settings, stage: Stage) -> list[str]:
    """The audit database's and the stage's passwords: masked in messages like credentials."""
    from sqlalchemy.engine import make_url

    passwords = [make_url(settings.audit_database()).password, getattr(stage, "password", None)]
    return [str(password) for password in passwords if password]


def _where(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.audit_database()).render_as_string(hide_password=True)


async def _close(ctx: BatchContext) -> Any:
    for client in ctx.clients.values():
        await client.__aexit__(None, None, None)
    await ctx.audit.close()
    await close_stage(ctx.stage)
