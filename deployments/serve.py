"""Serving every batch type for local development: the same two deployments per batch type as prefect.yaml,
and the janitor's, run by this process (no work pool, no worker). The batch types are the catalog's: the batch
types folder (`RESTFUL_ETL_BATCH_TYPES`, default `./batch_types`), the `restful_etl.batch_types` entry points,
the package.

`restful-etl serve` with PREFECT_API_URL pointing at a `prefect server`, and the workers' private key
(RESTFUL_ETL_PRIVATE_KEY) or RESTFUL_ETL_SEAL_KEY set when runs bring sealed credentials. It sweeps once with
the janitor before it serves. Stop it with Ctrl-C; Prefect pauses the schedules it served.

Prefect's Runner starts a process per flow run; `restful-etl serve --in-process` runs them as tasks of this
process instead (deployments/inprocess.py): the same deployments, a fraction of the cost per batch.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any, cast

from prefect import Flow, serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Interval, Schedule

from prefect_restful_etl.flows.catalog import FOLDER_ENV, FULL_RESYNC_SUFFIX, BatchFlow, catalog
from prefect_restful_etl.flows.hooks import DEPLOYMENT_NAME, ENTRYPOINT, micro_batch
from prefect_restful_etl.flows.janitor import JANITOR, janitor, sweep_once
from prefect_restful_etl.flows.keys import PRIVATE_KEY_ENV, private_keys_from_env
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV
from prefect_restful_etl.tasks.engine.exceptions import ConfigError

logger = logging.getLogger(__name__)
HOURLY = timedelta(hours=1)
JANITOR_EVERY = timedelta(minutes=5)


def hourly_schedule(tenant_id: str | None = None, sealed_credentials: str | None = None) -> Schedule:
    """Hourly, inactive until it names a tenant: a schedule carries its tenant and sealed credentials
    (ciphertext, safe at rest in Prefect) as its parameters, one schedule per tenant."""
    parameters: dict[str, Any] = {"tenant_id": tenant_id} if tenant_id else {}
    if sealed_credentials:
        parameters["sealed_credentials"] = sealed_credentials
    slug = f"hourly-{tenant_id}" if tenant_id else "hourly"
    return Interval(HOURLY, active=tenant_id is not None, parameters=parameters, slug=slug)


def batch_deployment(batch: BatchFlow, name: str, **options: Any) -> RunnerDeployment:
    """One deployment of a batch type's flow, as every deployment of restful-etl is made: Prefect does not check
    its parameters against their schema (that check answers a malformed run with a 409 that quotes the value
    sent, a credential; the batch validates its parameters itself once it has masked them), and its entrypoint
    is the module that holds the flow (not builder.py, which made it)."""
    made = batch.flow.to_deployment(
        name=name, entrypoint_type=EntrypointType.MODULE_PATH, enforce_parameter_schema=False, **options
    )
    deployment = cast(RunnerDeployment, made)  # called outside an event loop: not a coroutine
    deployment.entrypoint = batch.entrypoint
    return deployment


def batch_deployments(
    name: str, batch: BatchFlow, *, tenant_id: str | None = None, sealed_credentials: str | None = None
) -> list[RunnerDeployment]:
    """The incremental deployment with its hourly schedule, and the full re-sync one (no schedule)."""
    tags = [f"batch-type:{name}"]
    return [
        batch_deployment(
            batch,
            name,
            schedules=[hourly_schedule(tenant_id, sealed_credentials)],
            description=f"{name}, incremental: hourly per tenant, or on demand.",
            tags=tags,
        ),
        batch_deployment(
            batch,
            f"{name}{FULL_RESYNC_SUFFIX}",
            parameters={"full_refresh": True},
            description=f"{name}, full re-sync: reads everything and resets the watermarks.",
            tags=tags,
        ),
    ]


def janitor_deployment() -> RunnerDeployment:
    """The janitor (flows/janitor.py) every five minutes, as prefect.yaml deploys it."""
    made = janitor.to_deployment(
        name=JANITOR,
        schedules=[Interval(JANITOR_EVERY, slug="every-5-minutes")],
        description="Masks the credentials of ended and stuck batch runs, ends the stuck ones, marks their audit rows.",
        entrypoint_type=EntrypointType.MODULE_PATH,
        tags=["restful-etl:janitor"],
    )
    deployment = cast(RunnerDeployment, made)
    deployment.entrypoint = f"{janitor.__module__}.janitor"
    return deployment


def hooks_deployment() -> RunnerDeployment:
    """The hooks' micro-batches (`restful-etl-hooks/hooks`): no schedule, the hook receiver starts them. Their runs
    may carry plain credentials, so Prefect does not check their parameters either (see `batch_deployment`)."""
    made = micro_batch.to_deployment(
        name=DEPLOYMENT_NAME,
        tags=["hooks"],
        description="Micro-batches of pushed records, started by the hook receiver (`restful-etl hooks serve`).",
        entrypoint_type=EntrypointType.MODULE_PATH,
        enforce_parameter_schema=False,
    )
    deployment = cast(RunnerDeployment, made)  # called outside an event loop: not a coroutine
    deployment.entrypoint = ENTRYPOINT
    return deployment


def served_deployments(
    *, tenant_id: str | None = None, sealed_credentials: str | None = None
) -> list[tuple[RunnerDeployment, Flow[..., Any]]]:
    """Every deployment serve makes, each with the flow its runs run: the batch types', the hooks', the janitor's."""
    made = [
        (deployment, batch.flow)
        for name, batch in served_batch_types().items()
        for deployment in batch_deployments(name, batch, tenant_id=tenant_id, sealed_credentials=sealed_credentials)
    ]
    return [*made, (hooks_deployment(), micro_batch), (janitor_deployment(), janitor)]


def serve_all(
    *,
    limit: int | None = None,
    tenant_id: str | None = None,
    sealed_credentials: str | None = None,
    in_process: bool = False,
    poll: float | None = None,
) -> None:
    """Blocks until interrupted: polls Prefect for runs of every batch type's deployments (and the janitor's)
    and runs them: each in a process of its own (Prefect's Runner), or with `in_process` as tasks of this one
    (deployments/inprocess.py, polling every `poll` seconds). First, one janitor sweep: runs a runner killed
    before this one left Pending, Running or Cancelling are ended, and their credentials masked."""
    if not os.environ.get(SEAL_KEY_ENV) and not private_keys_from_env():
        logger.warning(
            "neither %s nor %s is set: runs with sealed credentials will fail", PRIVATE_KEY_ENV, SEAL_KEY_ENV
        )
    deployments = served_deployments(tenant_id=tenant_id, sealed_credentials=sealed_credentials)
    sweep_once()
    if in_process:
        from prefect_restful_etl.deployments.inprocess import serve_in_process

        serve_in_process(deployments, limit=limit, poll_seconds=poll)
        return
    serve(*(deployment for deployment, _ in deployments), limit=limit, query_seconds=poll_seconds())


POLL_SECONDS = 1.0
"""How often the serving process asks Prefect for runs to start. Prefect's default (10 s) made a REST-created
run wait 5.6 s on average before it started; each poll is one light query to the server."""


def poll_seconds() -> float | None:
    """`POLL_SECONDS`, unless PREFECT_RUNNER_POLL_FREQUENCY says otherwise (then Prefect's setting rules)."""
    return None if os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY") else POLL_SECONDS


def served_batch_types() -> dict[str, BatchFlow]:
    """Every batch type the catalog finds; none if any file did not load, since its runs would never run.

    The runs' own processes find the user's batch types in the same folder, wherever they start."""
    found = catalog()
    if found.problems:
        raise ConfigError("batch types", "; ".join(found.problems))
    os.environ[FOLDER_ENV] = str(found.folder)
    for name, flow in found.flows.items():
        logger.info("serving batch type %s (%s: %s)", name, flow.origin, flow.source)
    return found.flows
