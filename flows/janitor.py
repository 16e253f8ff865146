"""The janitor: runs of our batch types that ended, or stopped, where none of their own code could tidy up.

A runner killed while its run is Pending leaves the run Pending for ever, no hook having run; a process killed
mid-run leaves it Running (the runner, if it lives, says Crashed; if it died too, nobody does); a Scheduled run
cancelled through the UI, or a run refused for a misspelt parameter, keeps what it was given. All of them may
hold plain credentials in Prefect. Each sweep, over the runs of our batch types and of the hooks' micro-batches
(each a batch of the batch type it names) expected to start within `lookback` seconds:

- every run that is final or stuck has the plain credentials Prefect stores for it masked (first, always);
- a run stuck Pending (longer than `pending` seconds: a live runner moves it to Running within seconds) or
  Running with no sign of life (no `prefect.flow-run.heartbeat` for `missed_heartbeats` periods of
  PREFECT_FLOWS_HEARTBEAT_FREQUENCY, Prefect 3's flow-run heartbeats) is set Crashed; one left Cancelling
  longer than `cancelling` seconds (no runner there to stop it) is set Cancelled;
- the audit rows of those runs, and of any Crashed or Cancelled run whose batch row still says RUNNING, are
  marked CRASHED or CANCELLED; a run that never reached its body gets its batch row then, so that
  `restful-etl restart` can resume it.

It runs as the `restful-etl-janitor` deployment (prefect.yaml, every five minutes), and once when
`restful-etl serve` or `restful-etl worker` starts; it needs the workers' audit settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from prefect import flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder, EventResourceFilter
from prefect.logging import get_logger
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Crashed
from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.flows.endings import mark_ended_in
from prefect_restful_etl.flows.resources import audit_settings, open_audit
from prefect_restful_etl.flows.secrecy import masked_parameters
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch, utcnow
from prefect_restful_etl.tasks.engine.settings import Settings

JANITOR = "restful-etl-janitor"  # the flow's name, and its deployment's in prefect.yaml
HEARTBEAT = "prefect.flow-run.heartbeat"
logger = get_logger("restful_etl.janitor")  # under Prefect's loggers: shown where Prefect's logs are
_FINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
_LOOKED_AT = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, *_FINAL]
_PAGE = 200


class Patience(BaseModel):
    """How long the janitor lets a run be before it calls it stuck."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    pending: float = Field(default=600.0, ge=0, description="Seconds a run may stay Pending.")
    missed_heartbeats: int = Field(default=3, ge=1, description="Heartbeat periods a Running run may stay silent.")
    cancelling: float = Field(default=300.0, ge=0, description="Seconds a run may stay Cancelling.")
    lookback: float = Field(default=7 * 24 * 3600.0, gt=0, description="Runs expected to start this long ago.")


@dataclass
class Sweep:
    """What one sweep did, by flow run id."""

    masked: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    audited: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = {"masked": self.masked, "crashed": self.crashed, "cancelled": self.cancelled, "audited": self.audited}
        return ", ".join(f"{len(ids)} {name}" for name, ids in parts.items())


async def sweep(
    client: PrefectClient,
    patience: Patience | None = None,
    *,
    batch_types: Iterable[str] | None = None,
    now: datetime | None = None,
) -> Sweep:
    """One pass over the runs of `batch_types` (default: every batch type the catalog knows) and of the hooks'
    micro-batches."""
    from prefect_restful_etl.flows.catalog import batch_flows
    from prefect_restful_etl.flows.hooks import FLOW_NAME as HOOKS

    patience, now = patience or Patience(), now or utcnow()
    names = sorted({*(batch_types if batch_types is not None else batch_flows()), HOOKS})
    done = Sweep()
    flows = {f.id: f.name for f in await client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=names)))}
    audit: AuditStore | None = None
    try:
        async for run in _runs(client, names, now - timedelta(seconds=patience.lookback)):
            ending = await _stuck(client, run, patience, now)
            if ending is None and not _final(run):
                continue
            if await _mask(client, run):
                done.masked.append(str(run.id))
            if ending is not None:
                await _end(client, run, *ending, done)
            status = ending[0] if ending else _audit_status(run)
            if status is not None:
                audit = audit or await open_audit(await audit_settings(Settings()))
                message = ending[1] if ending else f"the flow run ended {run.state_name} without its own code saying so"
                batch_type = _batch_type_of(run, flows.get(run.flow_id, ""))
                if await _close_batch(audit, run, batch_type, status, message, create=ending is not None):
                    done.audited.append(str(run.id))
    finally:
        if audit is not None:
            await audit.close()
    return done


async def _runs(client: PrefectClient, names: list[str], since: datetime) -> Any:
    """The runs of the named flows in a state the janitor looks at, page by page."""
    run_filter = FlowRunFilter(
        expected_start_time=FlowRunFilterExpectedStartTime(after_=cast(Any, since)),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_LOOKED_AT)),
    )
    offset = 0
    while True:
        page = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=names)),
            flow_run_filter=run_filter,
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=_PAGE,
            offset=offset,
        )
        for run in page:
            yield run
        if len(page) < _PAGE:
            return
        offset += _PAGE


def _batch_type_of(run: FlowRun, flow_name: str) -> str:
    """The batch type a run is a batch of: its flow's, or the one a hooks micro-batch names."""
    from prefect_restful_etl.flows.hooks import FLOW_NAME

    if flow_name != FLOW_NAME:
        return flow_name
    named = run.parameters.get("batch_type")
    return named if isinstance(named, str) else ""


def _final(run: FlowRun) -> bool:
    return run.state is not None and run.state.type in _FINAL


async def _stuck(client: PrefectClient, run: FlowRun, patience: Patience, now: datetime) -> tuple[str, str] | None:
    """("CRASHED" or "CANCELLED", why) for a run no live runner will move on; None for one that is fine."""
    state = run.state
    if state is None:
        return None
    since = now - state.timestamp
    if state.type == StateType.PENDING and since > timedelta(seconds=patience.pending):
        return "CRASHED", f"Pending for more than {patience.pending:.0f} s: no runner took it further"
    if state.type == StateType.CANCELLING and since > timedelta(seconds=patience.cancelling):
        return "CANCELLED", f"Cancelling for more than {patience.cancelling:.0f} s: no runner was there to stop it"
    if state.type != StateType.RUNNING:
        return None
    period = get_current_settings().flows.heartbeat_frequency
    if period is None:
        return None  # heartbeats are off: a Running run cannot be told from a dead one
    silence = timedelta(seconds=patience.missed_heartbeats * max(period, 30))
    if since <= silence:
        return None
    beat = await _last_heartbeat(client, run, state.timestamp, now)
    if beat is not None and now - beat <= silence:
        return None
    return "CRASHED", f"Running with no heartbeat for {silence.total_seconds():.0f} s: its process is gone"


async def _last_heartbeat(client: PrefectClient, run: FlowRun, since: datetime, now: datetime) -> datetime | None:
    events = await client.read_events(
        EventFilter(
            occurred=EventOccurredFilter(since=cast(Any, since), until=cast(Any, now)),
            event=EventNameFilter(name=[HEARTBEAT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
            order=EventOrder.DESC,
        ),
        limit=1,
    )
    return events.events[0].occurred if events.events else None


async def _mask(client: PrefectClient, run: FlowRun) -> bool:
    masked = masked_parameters(run.parameters)
    if masked is None:
        return False
    await client.update_flow_run(run.id, parameters=masked)
    return True


async def _end(client: PrefectClient, run: FlowRun, status: str, message: str, done: Sweep) -> None:
    text = f"restful-etl janitor: {message}"
    state: State[Any] = Crashed(message=text) if status == "CRASHED" else Cancelled(message=text)
    # forced: Prefect's orchestration would refuse a Pending run going straight to Crashed from outside
    await client.set_flow_run_state(run.id, state, force=True)
    (done.crashed if status == "CRASHED" else done.cancelled).append(str(run.id))


def _audit_status(run: FlowRun) -> str | None:
    if run.state is not None and run.state.type in (StateType.CRASHED, StateType.CANCELLED):
        return run.state.type.value
    return None


async def _close_batch(
    audit: AuditStore, run: FlowRun, batch_type: str, status: str, message: str, *, create: bool
) -> bool:
    """Mark the batch's rows; with `create`, give a run that never reached its body its batch row."""
    if await mark_ended_in(audit, str(run.id), status, message):
        return True
    tenant = run.parameters.get("tenant_id")
    if not create or await audit.get_batch(str(run.id)) is not None or not isinstance(tenant, str) or not tenant:
        return False
    now = utcnow()
    await audit.merge(
        EtlBatch(
            batch_id=str(run.id),
            tenant_id=tenant,
            batch_type=batch_type,
            status=status,
            full_refresh=run.parameters.get("full_refresh") is True,
            started_at=run.start_time or run.expected_start_time or now,
            ended_at=now,
            message=message,
        )
    )
    return True


@flow(name=JANITOR, persist_result=False, log_prints=False)
async def janitor(
    pending_seconds: float = 600.0,
    cancelling_seconds: float = 300.0,
    missed_heartbeats: int = 3,
    lookback_hours: float = 7 * 24.0,
) -> dict[str, list[str]]:
    """Mask the credentials of ended and stuck batch runs, end the stuck ones, and mark their audit rows.

    Args:
        pending_seconds: How long a run may stay Pending before it counts as stuck (its runner died).
        cancelling_seconds: How long a run may stay Cancelling before it is set Cancelled.
        missed_heartbeats: How many heartbeat periods a Running run may stay silent before it is set Crashed.
        lookback_hours: Runs expected to start this many hours ago or since are looked at.
    """
    patience = Patience(
        pending=pending_seconds,
        cancelling=cancelling_seconds,
        missed_heartbeats=missed_heartbeats,
        lookback=lookback_hours * 3600,
    )
    async with get_client() as client:
        done = await sweep(client, patience)
    from prefect.logging import get_run_logger

    get_run_logger().info("janitor: %s", done.summary())
    return {"masked": done.masked, "crashed": done.crashed, "cancelled": done.cancelled, "audited": done.audited}


def sweep_once(patience: Patience | None = None) -> Sweep | None:
    """One sweep as a start-up step (`restful-etl serve`, `restful-etl worker`); a failure is logged, never raised."""

    async def go() -> Sweep:
        async with get_client() as client:
            return await sweep(client, patience)

    try:
        done = asyncio.run(go())
    except Exception as ex:  # the Prefect API or the audit database is not there yet: the deployment sweeps later
        logger.warning("janitor: the start-up sweep did not run (%s)", type(ex).__name__)
        return None
    logger.log(logging.WARNING if done.crashed or done.cancelled else logging.INFO, "janitor: %s", done.summary())
    return done
