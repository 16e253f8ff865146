"""The client's side of Prefect's REST API: trigger, find, cancel and restart batches of a tenant.

A batch is a flow run. Whose it is says its `tenant_id` parameter (not secret, never masked), the tenant the
batch runs for and audits under. Its tags `tenant:<id>` and `batch-type:<name>` are set when the client creates
it, and again by the flow itself, but whoever creates a run sets its tags, and a run created otherwise (by a
deployment's schedule, through the REST API, one a runner never started) may carry no `tenant:` tag at all: a run
whose `tenant:` tag names another tenant than its parameter is refused and listed under nobody.

So a tenant's batches are not searched for by their tags. They are the runs of our batch types' flows (by the flow's
name: the batch type asked for, or every one the catalog here and Prefect's deployments know, and the hooks'
micro-batches, each of the batch type it names), newest first, that are the tenant's by their parameter; Prefect
cannot filter on a parameter, so the client reads those runs page by page until it has as many as the user asked for
(`--limit`), or there are no more (a tenant with fewer costs a reading of them all, 200 at a time). Runs tagged for
a tenant but of another only make that reading longer: they can neither hide the tenant's runs nor cut its history
short. The audit database would be a smaller index, but it holds a batch only once the batch has begun: a Scheduled
run, or one that failed or was cancelled before it began, would be missing from a history that should show it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterId,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterStartTime,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Cancelled, Cancelling

from prefect_restful_etl.flows.catalog import deployment_name
from prefect_restful_etl.flows.secrecy import mask_stored_credentials

# Parameters a restart carries over from the batch it resumes; credentials never (they were masked or sealed
# for that run, and the caller brings them again).
_CARRIED = ("tenant_id", "full_refresh", "base_urls", "api_blocks", "callback_url", "dry_run")


class ClientError(Exception):
    """What the CLI reports to its user and exits on: a missing deployment, another tenant's batch ..."""


def tags(tenant_id: str, batch_type: str | None = None) -> list[str]:
    return [f"tenant:{tenant_id}"] + ([f"batch-type:{batch_type}"] if batch_type else [])


async def trigger(
    client: PrefectClient, batch_type: str, tenant_id: str, parameters: dict[str, Any], *, full_resync: bool = False
) -> FlowRun:
    """Create a run of the batch type's deployment (or its full re-sync one) for the tenant."""
    name = deployment_name(batch_type, full_resync=full_resync)
    try:
        deployment = await client.read_deployment_by_name(name)
    except Exception as ex:  # ObjectNotFound, or the API is not reachable
        raise ClientError(
            f"no deployment {name!r} on this Prefect API ({type(ex).__name__}): "
            "`prefect deploy --all` or `restful-etl serve` first"
        ) from None
    return await client.create_flow_run_from_deployment(
        deployment.id, parameters={**parameters, "tenant_id": tenant_id}, tags=tags(tenant_id, batch_type)
    )


def tenant_of(run: FlowRun) -> str | None:
    """The tenant the batch runs for (its `tenant_id` parameter), or None when it names none or a `tenant:` tag
    says another tenant: such a run is nobody's."""
    tenant = run.parameters.get("tenant_id")
    if not isinstance(tenant, str) or not tenant:
        return None
    tagged = {tag.split(":", 1)[1] for tag in run.tags if tag.startswith("tenant:")}
    return tenant if tagged <= {tenant} else None


async def _batch_flows(client: PrefectClient, batch_type: str | None) -> dict[UUID, str]:
    """Flow id -> name of the flows whose runs are batches of `batch_type` (None: of any batch type), the hooks'
    micro-batches' among them."""
    from prefect_restful_etl.flows.catalog import batch_flows, deployed_batch_types
    from prefect_restful_etl.flows.hooks import FLOW_NAME as HOOKS

    names = {batch_type} if batch_type else {*batch_flows(), *await deployed_batch_types(client)}
    flow_filter = FlowFilter(name=FlowFilterName(any_=sorted(names | {HOOKS})))
    found: dict[UUID, str] = {}
    while True:
        page = await client.read_flows(flow_filter=flow_filter, limit=_PAGE, offset=len(found))
        found |= {flow.id: flow.name for flow in page}
        if len(page) < _PAGE:
            return found


def _batch_type_of(run: FlowRun, flow_name: str) -> str:
    """The batch type a run is a batch of: its flow's, or the one a hooks micro-batch names."""
    from prefect_restful_etl.flows.hooks import FLOW_NAME as HOOKS

    if flow_name != HOOKS:
        return flow_name
    named = run.parameters.get("batch_type")
    return named if isinstance(named, str) else ""


async def _tenants_runs(
    client: PrefectClient,
    tenant_id: str,
    batch_type: str | None,
    limit: int,
    sort: FlowRunSort = FlowRunSort.EXPECTED_START_TIME_DESC,
    **filters: Any,
) -> list[FlowRun]:
    """Up to `limit` batches that are the tenant's by their parameter, reading the runs of the batch flows page by
    page until there are as many or no more runs (see the module's docstring). Each carries the `batch-type:` tag
    of what it is a batch of, whatever tags it was created with."""
    flows = await _batch_flows(client, batch_type)
    if not flows or limit < 1:
        return []
    flow_filter = FlowFilter(id=FlowFilterId(any_=list(flows)))
    run_filter = FlowRunFilter(**filters)
    found: dict[UUID, FlowRun] = {}  # by id: a run created while reading shifts the pages by one
    offset = 0
    while len(found) < limit:
        runs = await client.read_flow_runs(
            flow_filter=flow_filter, flow_run_filter=run_filter, sort=sort, limit=_PAGE, offset=offset
        )
        for run in runs:
            kind = _batch_type_of(run, flows.get(run.flow_id, ""))
            if tenant_of(run) == tenant_id and kind and batch_type in (None, kind):
                kept = [tag for tag in run.tags if not tag.startswith("batch-type:")]
                found.setdefault(run.id, run.model_copy(update={"tags": [*kept, f"batch-type:{kind}"]}))
        if len(runs) < _PAGE:
            break
        offset += _PAGE
    return list(found.values())[:limit]


_PAGE = 200  # runs read at once: the Prefect API's largest page


async def tenant_runs(
    client: PrefectClient, tenant_id: str, batch_type: str | None = None, limit: int = 20
) -> list[FlowRun]:
    """The tenant's batches, newest first (by expected start, so a scheduled one is listed too)."""
    return await _tenants_runs(client, tenant_id, batch_type, limit)


async def latest_started_run(client: PrefectClient, tenant_id: str, batch_type: str | None = None) -> FlowRun | None:
    """The tenant's batch that started last; a Scheduled one due later sorts first by expected start, but is
    not the latest batch anyone means."""
    runs = await _tenants_runs(
        client,
        tenant_id,
        batch_type,
        1,
        start_time=FlowRunFilterStartTime(is_null_=False),
        sort=FlowRunSort.START_TIME_DESC,
    )
    return runs[0] if runs else None


async def tenant_run(client: PrefectClient, batch_id: str, tenant_id: str) -> FlowRun:
    """The batch, if it is the tenant's by its `tenant_id` parameter: a tenant's CLI user never reads or cancels
    another's batch, whatever its tags say."""
    try:
        run = await client.read_flow_run(UUID(batch_id))
    except Exception as ex:
        raise ClientError(f"no batch {batch_id} ({type(ex).__name__})") from None
    tagged = {tag.split(":", 1)[1] for tag in run.tags if tag.startswith("tenant:")}
    if tagged and tagged != {run.parameters.get("tenant_id")}:
        raise ClientError(f"batch {batch_id}: its tenant tag and its tenant_id parameter disagree; refused")
    if run.parameters.get("tenant_id") != tenant_id:
        raise ClientError(f"batch {batch_id} is not tenant {tenant_id!r}'s")
    return run


async def cancel(client: PrefectClient, batch_id: str, tenant_id: str) -> FlowRun:
    """Cancel the batch; first mask its plain credentials, which a run that never starts would keep in clear
    (a Scheduled or Pending run is cancelled without any flow code or hook running)."""
    run = await tenant_run(client, batch_id, tenant_id)
    if run.state is not None and run.state.is_final():
        raise ClientError(f"batch {batch_id} has already ended: {run.state.name}")
    await mask_stored_credentials(client, run.id)
    message = f"cancelled by the CLI for tenant {tenant_id}"
    # A Scheduled run has no process for a runner to stop: it is Cancelled at once. A Pending or Running one goes
    # Cancelling, and its runner stops it; the janitor ends one no runner is left to stop.
    taken = run.state is not None and run.state.type in (StateType.PENDING, StateType.RUNNING)
    await client.set_flow_run_state(run.id, Cancelling(message=message) if taken else Cancelled(message=message))
    return await client.read_flow_run(run.id)


async def restart(
    client: PrefectClient,
    batch_id: str,
    tenant_id: str,
    credentials: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]],
) -> FlowRun:
    """A new run of the same deployment that resumes the batch (`resume_batch_id`) with fresh credentials:
    `credentials(batch type, carried parameters)` gives their run parameters (sealed for the run's hosts)."""
    old = await tenant_run(client, batch_id, tenant_id)
    if old.deployment_id is None:
        raise ClientError(f"batch {batch_id} was not started from a deployment: run it again instead")
    deployment = await client.read_deployment(old.deployment_id)
    accepted = set((deployment.parameter_openapi_schema or {}).get("properties", {}))
    if "resume_batch_id" not in accepted:
        raise ClientError(f"deployment {deployment.name!r} has no resume_batch_id parameter: redeploy it")
    carried = {name: old.parameters[name] for name in _CARRIED if name in old.parameters and name in accepted}
    batch_type = (await client.read_flow(old.flow_id)).name  # the run's flow, not a tag anyone may set
    parameters = {**carried, **await credentials(batch_type, carried), "resume_batch_id": str(old.id)}
    return await client.create_flow_run_from_deployment(
        deployment.id, parameters=parameters, tags=tags(tenant_id, batch_type)
    )


def run_row(run: FlowRun) -> dict[str, Any]:
    """A flow run as the CLI shows it; never its parameters (they may hold masks or ciphertext)."""
    started, ended = run.start_time, run.end_time
    return {
        "batch_id": str(run.id),
        "batch_type": next((t.split(":", 1)[1] for t in run.tags if t.startswith("batch-type:")), ""),
        "state": run.state.name if run.state else "",
        "started": started.isoformat(timespec="seconds") if started else "",
        "ended": ended.isoformat(timespec="seconds") if ended else "",
        "seconds": round(run.total_run_time.total_seconds(), 1) if run.total_run_time else None,
        "full_refresh": bool(run.parameters.get("full_refresh")),
        "resumed_from": run.parameters.get("resume_batch_id"),
    }
