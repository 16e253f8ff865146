"""The hooks' micro-batch: one flow run of the `hooks` deployment per tenant, batch type and gathering of hooks.

The receiver (`restful-etl hooks serve`) stores each accepted hook on the stage and, after its debounce, starts
a run of this flow with the intake's sealed segments. The run is a batch of the batch type like any other (its
audit rows, error events, artifacts and events, the lease of its tenant and batch type) whose extract job is
replaced by the records the hooks pushed (or fetched by the ids they named); its transform and load run as
configured. It moves no watermark: those are the polling's, whose scheduled run stays the safety net.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_table_artifact
from pydantic import ValidationError

from prefect_restful_etl.flows.batch import run_batch
from prefect_restful_etl.flows.catalog import batch_flows
from prefect_restful_etl.flows.endings import mark_cancelled, mark_crashed, mask_failed
from prefect_restful_etl.flows.resources import close_stage, open_stage, stage_settings
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.hooks.config import HookFeed
from prefect_restful_etl.tasks.engine.hooks.counts import totals_of
from prefect_restful_etl.tasks.engine.hooks.intake import Intake
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, ExtractJob
from prefect_restful_etl.tasks.engine.report import BatchReport, JobReport
from prefect_restful_etl.tasks.engine.settings import Settings
from prefect_restful_etl.tasks.hooks import pushed_job
from prefect_restful_etl.tasks.status import artifact_key

FLOW_NAME = "restful-etl-hooks"
DEPLOYMENT_NAME = "hooks"
DEPLOYMENT = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
ENTRYPOINT = "prefect_restful_etl.flows.hooks.micro_batch"
logger = logging.getLogger(__name__)


def batch_type_named(name: str) -> BatchType:
    """The batch type of that name, from the catalog of batch types."""
    found = batch_flows().get(name)
    if found is not None:
        return found.batch_type  # a user's too, found through the generic entrypoint's module
    raise ConfigError("batch_type", f"names no batch type there is (one of {sorted(batch_flows())})")


def hooked_job(batch_type: BatchType, name: str | None) -> ExtractJob:
    """The extract job the hooks replace: the named one, or the batch type's first extract."""
    extracts = [job for job in batch_type.jobs if isinstance(job, ExtractJob)]
    for job in extracts:
        if name is None or job.name == name:
            return job
    raise ConfigError("job", f"names no extract job of {batch_type.name} ({[job.name for job in extracts]})")


def _run_name() -> str:
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    tenant, kind = parameters.get("tenant_id") or "no tenant", parameters.get("batch_type") or "hooks"
    return f"{tenant} {kind} hooks {flow_run.scheduled_start_time:%Y-%m-%d %H:%M:%S}"


@flow(
    name=FLOW_NAME,
    flow_run_name=_run_name,
    persist_result=False,
    validate_parameters=False,  # the batch masks its credentials first, then validates (flows/parameters.py)
    on_cancellation=[mark_cancelled],
    on_crashed=[mark_crashed],
    on_failure=[mask_failed],
)
async def micro_batch(
    tenant_id: str,
    batch_type: str,
    segments: list[str],
    feed: dict[str, Any],
    receiver: str = "main",
    sealed_credentials: str | None = None,
    credentials: dict[str, Any] | None = None,
    base_urls: dict[str, str] | None = None,
    api_blocks: dict[str, str] | None = None,
) -> BatchReport:
    """A micro-batch of the hooks a tenant's source pushed for a batch type.

    Args:
        tenant_id: Whose hooks these are.
        batch_type: The batch type whose transform and load the pushed records go through.
        segments: The intake's sealed segments to read (the receiver names them).
        feed: The extract job the hooks replace, how records named by id are fetched, the version field.
        receiver: The receiver whose segments these are.
        sealed_credentials: The batch's credentials, sealed (`restful-etl seal`).
        credentials: Plain credentials (masked when the run starts); sealed ones are recommended.
        base_urls: Per API name, a base URL replacing the configured one.
        api_blocks: Per API name, a RestApi block replacing the batch type's configuration of that API.
    """
    kind = batch_type_named(batch_type)
    try:
        hooks = HookFeed.model_validate(feed)
    except ValidationError as ex:
        raise ConfigError("feed", ex.errors(include_input=False, include_url=False)[0]["msg"]) from None
    job = hooked_job(kind, hooks.job)

    async def pushed(batch_id: str) -> JobReport:
        return await pushed_job(job, hooks, batch_id, receiver, list(segments))

    parameters = {
        "tenant_id": tenant_id,
        "credentials": credentials,
        "sealed_credentials": sealed_credentials,
        "base_urls": base_urls,
        "api_blocks": api_blocks,
    }
    report = await run_batch(kind, parameters, substitutes={job.name: pushed})
    await publish_intake(tenant_id, batch_type, receiver)
    return report


async def publish_intake(tenant_id: str, batch_type: str, receiver: str) -> None:
    """The intake's counts as an artifact, `<batch type>-<tenant>-hooks`: its history is the intake's."""
    try:
        stage = open_stage(await stage_settings(Settings()))
        try:
            counts = await totals_of(Intake(stage, receiver), tenant_id, batch_type)
        finally:
            await close_stage(stage)
        rows = [{"count": name, "total": value} for name, value in counts.items()]
        await acreate_table_artifact(
            rows,
            key=artifact_key(batch_type, tenant_id, "hooks"),
            description=f"Hooks of {batch_type} for {tenant_id}: accepted, duplicates, refused by reason.",
        )
    except Exception as ex:  # the batch is done and audited: an artifact is not worth failing it
        logger.warning("the intake's counts were not published: %s", type(ex).__name__)
