"""The client's side of Prefect's REST API: trigger, find, cancel and restart batches of a tenant.

A batch is a flow run; its tags `tenant:<id>` and `batch-type:<name>` (set when the client creates it, and
again by the flow itself) are how history and status find a tenant's batches.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Cancelling
from pydantic import TypeAdapter, ValidationError

from prefect_restful_etl.flows.catalog import deployment_name
from prefect_restful_etl.flows.sealing import seal
from prefect_restful_etl.flows.secrecy import mask_stored_credentials
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError

# Parameters a restart carries over from the batch it resumes; credentials never (they were masked or sealed
# for that run, and the caller brings them again).
_CARRIED = ("tenant_id", "full_refresh", "base_urls", "api_blocks", "callback_url", "dry_run")


class ClientError(Exception):
    """What the CLI reports to its user and exits on: a missing deployment, another tenant's batch ..."""


def tags(tenant_id: str, batch_type: str | None = None) -> list[str]:
    return [f"tenant:{tenant_id}"] + ([f"batch-type:{batch_type}"] if batch_type else [])


def credential_parameters(text: str, *, seal_key: str | None = None) -> dict[str, Any]:
    """A credentials file's content as run parameters: a JSON object is plain `credentials` (or sealed here
    when `seal_key` is given); anything else is taken as `sealed_credentials` from `restful-etl seal`."""
    text = text.strip()
    if not text.startswith("{"):
        return {"sealed_credentials": text}
    try:
        plain = json.loads(text)
        TypeAdapter(dict[str, Credentials]).validate_python(plain)  # fail here, not on a worker
    except (json.JSONDecodeError, ValidationError) as ex:
        raise ConfigError("credentials file", f"is not a credentials object: {type(ex).__name__}") from None
    return {"sealed_credentials": seal(plain, seal_key)} if seal_key else {"credentials": plain}


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


async def tenant_runs(
    client: PrefectClient, tenant_id: str, batch_type: str | None = None, limit: int = 20
) -> list[FlowRun]:
    """The tenant's batches, newest first (by expected start, so a scheduled one is listed too)."""
    return await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=tags(tenant_id, batch_type))),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=limit,
    )


async def latest_started_run(client: PrefectClient, tenant_id: str, batch_type: str | None = None) -> FlowRun | None:
    """The tenant's batch that started last; a Scheduled one due later sorts first by expected start, but is
    not the latest batch anyone means."""
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=tags(tenant_id, batch_type)), start_time=FlowRunFilterStartTime(is_null_=False)
        ),
        sort=FlowRunSort.START_TIME_DESC,
        limit=1,
    )
    return runs[0] if runs else None


async def tenant_run(client: PrefectClient, batch_id: str, tenant_id: str) -> FlowRun:
    """The batch, if it is the tenant's: a tenant's CLI user never reads or cancels another's batch."""
    try:
        run = await client.read_flow_run(UUID(batch_id))
    except Exception as ex:
        raise ClientError(f"no batch {batch_id} ({type(ex).__name__})") from None
    if f"tenant:{tenant_id}" not in run.tags and run.parameters.get("tenant_id") != tenant_id:
        raise ClientError(f"batch {batch_id} is not tenant {tenant_id!r}'s")
    return run


async def cancel(client: PrefectClient, batch_id: str, tenant_id: str) -> FlowRun:
    """Cancel the batch; first mask its plain credentials, which a run that never starts would keep in clear
    (a Scheduled or Pending run is cancelled without any flow code or hook running)."""
    run = await tenant_run(client, batch_id, tenant_id)
    if run.state is not None and run.state.is_final():
        raise ClientError(f"batch {batch_id} has already ended: {run.state.name}")
    await mask_stored_credentials(client, run.id)
    await client.set_flow_run_state(run.id, Cancelling(message=f"cancelled by the CLI for tenant {tenant_id}"))
    return await client.read_flow_run(run.id)


async def restart(client: PrefectClient, batch_id: str, tenant_id: str, credentials: dict[str, Any]) -> FlowRun:
    """A new run of the same deployment that resumes the batch (`resume_batch_id`) with fresh credentials."""
    old = await tenant_run(client, batch_id, tenant_id)
    if old.deployment_id is None:
        raise ClientError(f"batch {batch_id} was not started from a deployment: run it again instead")
    deployment = await client.read_deployment(old.deployment_id)
    accepted = set((deployment.parameter_openapi_schema or {}).get("properties", {}))
    if "resume_batch_id" not in accepted:
        raise ClientError(f"deployment {deployment.name!r} has no resume_batch_id parameter: redeploy it")
    carried = {name: old.parameters[name] for name in _CARRIED if name in old.parameters and name in accepted}
    parameters = {**carried, **credentials, "resume_batch_id": str(old.id)}
    return await client.create_flow_run_from_deployment(
        deployment.id, parameters=parameters, tags=[t for t in old.tags if t.startswith(("tenant:", "batch-type:"))]
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
