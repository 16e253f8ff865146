"""Audit rows of a batch that ends outside `run_batch`: cancelled through Prefect, or crashed with its process.

Prefect cancels a served or worker run by killing its process (SIGTERM, then SIGKILL), and a crash ends one
without warning: `run_batch` may never write its final rows. These flow hooks run afterwards, in the runner or
worker (or in the flow's own process when Prefect cancels it there) and mark what was left RUNNING: the batch,
and its unfinished jobs, CANCELLED or CRASHED, and release the batch's lease on its tenant and batch type
(`tasks/engine/audit/lease.py`), so that the next batch need not wait for it to expire. They leave the stage
alone: a `resume_batch_id` run continues from it until its TTL.

They also mask the run's plain credentials in Prefect: a run that ends before its flow body (cancelled while
Pending, crashed on start, refused for invalid parameters) never reached the flow's own redaction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import get_client

from prefect_restful_etl.flows.resources import audit_settings, open_audit
from prefect_restful_etl.flows.secrecy import mask_stored_credentials
from prefect_restful_etl.tasks.engine.audit.lease import release_lease
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlJob, utcnow
from prefect_restful_etl.tasks.engine.settings import Settings

_ENDED = {"COMPLETED", "CANCELLED", "CRASHED"}  # what a hook must not overwrite


async def mark_cancelled(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_cancellation` hook."""
    try:
        await mask_credentials(flow_run.id)
    finally:
        since = await _cancel_requested(flow_run.id)
        await mark_ended(str(flow_run.id), "CANCELLED", "cancelled through Prefect", cut_short_since=since)


async def _cancel_requested(flow_run_id: Any) -> datetime | None:
    """When the run was asked to cancel (its Cancelling state), if Prefect says; None if it cannot."""
    try:
        async with get_client() as client:
            states = await client.read_flow_run_states(flow_run_id)
    except Exception:  # the audit rows matter more than this refinement of them
        return None
    moments = [state.timestamp for state in states if state.type.value == "CANCELLING" and state.timestamp]
    return min(moments, default=None)


async def mark_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_crashed` hook: the process died (killed, out of memory) or the engine lost it."""
    try:
        await mask_credentials(flow_run.id)
    finally:
        await mark_ended(str(flow_run.id), "CRASHED", f"the flow run's process ended without finishing ({state.name})")


async def mask_failed(flow: Any, flow_run: Any, state: Any) -> None:
    """`on_failure` hook: a run refused before its body (invalid parameters) still holds what it was given;
    a batch that failed in its body was masked on receipt, and this finds nothing left to mask."""
    await mask_credentials(flow_run.id)


async def mask_credentials(flow_run_id: Any) -> None:
    async with get_client() as client:
        await mask_stored_credentials(client, flow_run_id)


async def mark_ended(batch_id: str, status: str, message: str, *, cut_short_since: datetime | None = None) -> None:
    """Mark the batch and its jobs that were still running (or stopped by the kill itself) as `status`, in the
    audit database the batch wrote: `RESTFUL_ETL_AUDIT_BLOCK`'s when it names one. A job that failed after
    `cut_short_since` (when the cancel was asked for) failed of the cancel: a connection its own process cut
    mid-read (`ReadError`) is no failure of the destination's."""
    settings = await audit_settings(Settings())
    audit = await open_audit(settings)
    try:
        await mark_ended_in(audit, batch_id, status, message, cut_short_since=cut_short_since)
    finally:
        await audit.close()


async def mark_ended_in(
    audit: AuditStore, batch_id: str, status: str, message: str, *, cut_short_since: datetime | None = None
) -> bool:
    """`mark_ended` on an open audit store; True when the batch had a row to mark. The batch's lease on its
    tenant and batch type is released, whatever its rows say: a dead holder's lease frees now, not at its expiry."""
    await release_lease(audit, batch_id)
    batch = await audit.get_batch(batch_id)
    if batch is None or batch.status in _ENDED:
        return batch is not None  # never started here, or its own code already said how it ended
    now = utcnow()
    for job in await audit.jobs(batch_id):
        if job.status == "RUNNING" or (job.status == "FAILED" and _stopped(job, cut_short_since)):
            await audit.update_job(job.job_id, status=status, ended_at=job.ended_at or now, message=message)
    await audit.update_batch(batch_id, status=status, ended_at=batch.ended_at or now, message=message)
    return True


def _stopped(job: EtlJob, cut_short_since: datetime | None) -> bool:
    if _killed(job.message):
        return True
    if cut_short_since is None or job.ended_at is None:
        return False
    ended = job.ended_at if job.ended_at.tzinfo else job.ended_at.replace(tzinfo=UTC)  # SQLite: naive UTC
    return ended >= cut_short_since - _CLOCKS  # the run's process and the Prefect server keep their own clocks


_CLOCKS = timedelta(seconds=1)


def _killed(message: str | None) -> bool:
    """A job whose own except block saw the kill (Prefect raises TerminationSignal on SIGTERM)."""
    return bool(message) and message.startswith("TerminationSignal")  # type: ignore[union-attr]
