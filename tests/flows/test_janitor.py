"""The janitor against a Prefect server (the session's test harness): which runs it calls stuck, what it masks,
which state it sets, and the audit rows it marks or creates. A sweep is given a `now` an hour ahead, so every
run's state looks an hour old; the test's patience says which of them is stuck."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.events import emit_event
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.states import Cancelling, Completed, Crashed, Pending, Running
from typer.testing import CliRunner

from prefect_restful_etl.deployments.cli.app import app
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.flows.hooks import micro_batch
from prefect_restful_etl.flows.janitor import HEARTBEAT, Patience, sweep
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch, EtlJob, utcnow
from prefect_restful_etl.tasks.engine.redaction import MASK

pytestmark = pytest.mark.integration

SECRET = "janitor-test-secret-3f9a"
PLAIN = {"tenant_id": "acme", "credentials": {"crm": {"token": SECRET}}, "full_refresh": True}
LATER = timedelta(hours=1)


@flow(name="not-a-batch-type")
def other() -> None:
    """A flow of somebody else's on the same Prefect server."""


async def run_in(client: PrefectClient, state: Any, parameters: dict[str, Any] | None = None) -> str:
    flow_run = await client.create_flow_run(crm_to_accounting, parameters=parameters or PLAIN)
    await client.set_flow_run_state(flow_run.id, state, force=True)
    return str(flow_run.id)


async def cli(*args: str) -> Any:
    """The CLI as a user runs it; in a thread, since each command runs its own event loop."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args))


async def audit_row(etl_home: Path, batch_id: str) -> tuple[EtlBatch | None, list[EtlJob]]:
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        return await audit.get_batch(batch_id), list(await audit.jobs(batch_id))
    finally:
        await audit.close()


async def add_rows(etl_home: Path, batch_id: str, status: str) -> None:
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        await audit.add(EtlBatch(batch_id=batch_id, tenant_id="acme", batch_type="crm-to-accounting", status=status))
        await audit.add(EtlJob(job_id=f"{batch_id}-j", batch_id=batch_id, tenant_id="acme", job="load", kind="load"))
    finally:
        await audit.close()


async def stored(client: PrefectClient, batch_id: str) -> tuple[str, dict[str, Any]]:
    run = await client.read_flow_run(UUID(batch_id))
    assert run.state is not None
    return run.state.type.value, run.parameters


async def test_stuck_runs_are_masked_ended_and_audited_and_the_others_left_as_they_are(
    prefect_harness: Path, etl_home: Path
) -> None:
    async with get_client() as client:
        pending = await run_in(client, Pending())
        running = await run_in(client, Running())
        cancelling = await run_in(client, Cancelling())
        completed = await run_in(client, Completed(), {**PLAIN, "credential": {"crm": {"token": SECRET}}})
        crashed = await run_in(client, Crashed())
        someone_elses = await client.create_flow_run(other, parameters={})
        await client.set_flow_run_state(someone_elses.id, Pending(), force=True)
        await add_rows(etl_home, cancelling, "RUNNING")
        await add_rows(etl_home, crashed, "RUNNING")

        done = await sweep(client, Patience(pending=1800, cancelling=1800), now=utcnow() + LATER)
        fresh = await run_in(client, Pending())
        fresh_done = await sweep(client, Patience(pending=7200), now=utcnow() + LATER)

        after = {batch_id: await stored(client, batch_id) for batch_id in (pending, running, cancelling, completed)}
        assert await stored(client, crashed) == ("CRASHED", PLAIN | {"credentials": {"crm": {"token": MASK}}})
        assert await stored(client, fresh) == ("PENDING", PLAIN)  # its runner is starting it: its own code masks
        assert (await client.read_flow_run(someone_elses.id)).state.type.value == "PENDING"  # type: ignore[union-attr]
    assert {pending, running} <= set(done.crashed) and cancelling in done.cancelled
    assert fresh not in fresh_done.crashed + fresh_done.masked
    masked = PLAIN | {"credentials": {"crm": {"token": MASK}}}
    assert after == {
        pending: ("CRASHED", masked),
        running: ("CRASHED", masked),  # no heartbeat for an hour
        cancelling: ("CANCELLED", masked),
        completed: ("COMPLETED", masked | {"credential": MASK}),  # a parameter a batch does not know, masked whole
    }
    for batch_id, status in (
        (pending, "CRASHED"),
        (running, "CRASHED"),
        (cancelling, "CANCELLED"),
        (crashed, "CRASHED"),
    ):
        row, jobs = await audit_row(etl_home, batch_id)
        assert row is not None and (row.status, row.tenant_id, row.batch_type) == (status, "acme", "crm-to-accounting")
        assert all(job.status == status for job in jobs)
    row, _ = await audit_row(etl_home, pending)
    assert row is not None and row.full_refresh and "Pending for more than 1800 s" in (row.message or "")
    assert (await audit_row(etl_home, fresh))[0] is None


async def test_the_hooks_micro_batches_are_swept_as_the_batches_of_their_batch_type(
    prefect_harness: Path, etl_home: Path
) -> None:
    """A micro-batch is a batch of the batch type it names (its `batch_type` parameter) and holds credentials
    as any batch does: one stuck Pending is masked, ended and audited; one that ended is masked."""
    hooks = {"batch_type": "crm-to-accounting", "segments": ["s1"], "feed": {"job": "Extract CRM customers"}}
    parameters = {"tenant_id": "acme", **hooks, "credentials": {"crm": {"token": SECRET}}}
    async with get_client() as client:
        pending = await client.create_flow_run(micro_batch, parameters=parameters)
        completed = await client.create_flow_run(micro_batch, parameters=parameters)
        await client.set_flow_run_state(pending.id, Pending(), force=True)
        await client.set_flow_run_state(completed.id, Completed(), force=True)

        done = await sweep(client, Patience(pending=1800), now=utcnow() + LATER)

        masked = parameters | {"credentials": {"crm": {"token": MASK}}}
        assert await stored(client, str(pending.id)) == ("CRASHED", masked)
        assert await stored(client, str(completed.id)) == ("COMPLETED", masked)
    assert str(pending.id) in done.crashed and {str(pending.id), str(completed.id)} <= set(done.masked)
    row, _ = await audit_row(etl_home, str(pending.id))
    assert row is not None and (row.status, row.tenant_id, row.batch_type) == ("CRASHED", "acme", "crm-to-accounting")


async def test_a_running_run_that_still_beats_is_left_alone(prefect_harness: Path, etl_home: Path) -> None:
    async with get_client() as client:
        beating = await run_in(client, Running())
        silent = await run_in(client, Running())
        resource = {"prefect.resource.id": f"prefect.flow-run.{beating}"}
        emit_event(HEARTBEAT, resource=resource, occurred=utcnow() + LATER - timedelta(minutes=1))
        await until_heartbeat_stored(client, beating)

        done = await sweep(client, Patience(), now=utcnow() + LATER)

        assert (await stored(client, beating))[0] == "RUNNING"
        assert (await stored(client, silent))[0] == "CRASHED"
    assert beating not in done.crashed and silent in done.crashed


async def until_heartbeat_stored(client: PrefectClient, batch_id: str, timeout: float = 30.0) -> None:
    """Events reach the server's database a moment after they are sent."""
    deadline = time.monotonic() + timeout
    heartbeats = EventFilter(
        occurred=EventOccurredFilter(since=utcnow() - LATER, until=utcnow() + 2 * LATER),  # type: ignore[arg-type]
        event=EventNameFilter(name=[HEARTBEAT]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{batch_id}"]),
    )
    while not (await client.read_events(heartbeats, limit=1)).events:
        assert time.monotonic() < deadline, "the heartbeat did not reach the server"
        await asyncio.sleep(0.2)


async def test_cancel_of_a_run_whose_runner_died_ends_cancelled_once_the_janitor_has_been(
    prefect_harness: Path, etl_home: Path
) -> None:
    """The CLI's cancel proposes Cancelling to a Pending run; with no runner alive nothing would ever end it."""
    async with get_client() as client:
        taken = await run_in(client, Pending())
        cancelled = await cli("cancel", taken, "-t", "acme", "--json")
        assert cancelled.exit_code == 0, cancelled.output
        assert await stored(client, taken) == ("CANCELLING", PLAIN | {"credentials": {"crm": {"token": MASK}}})

        done = await sweep(client, Patience(), now=utcnow() + LATER)

        assert (await stored(client, taken))[0] == "CANCELLED"
    assert taken in done.cancelled
    row, _ = await audit_row(etl_home, taken)
    assert row is not None and row.status == "CANCELLED"


async def test_the_cli_runs_one_sweep(prefect_harness: Path, etl_home: Path) -> None:
    async with get_client() as client:
        completed = await run_in(client, Completed())
    result = await cli("janitor", "--json")
    assert result.exit_code == 0, result.output
    assert completed in result.stdout  # masked
    async with get_client() as client:
        assert (await stored(client, completed))[1]["credentials"] == {"crm": {"token": MASK}}
