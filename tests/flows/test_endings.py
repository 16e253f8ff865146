"""Batches that end outside their own code, through a real Prefect server and a served flow in a subprocess.

- the flow run's process killed mid-load: Prefect marks it Crashed, the on_crashed hook marks the audit rows,
  and a run with `resume_batch_id` finishes it with no duplicate and no loss;
- cancelled through Prefect's API mid-load: it stops, its rows say CANCELLED, the destination holds only
  whole records, the stage is kept, and a resumed run finishes it;
- its runner killed while the run is Pending: the janitor masks it, sets it Crashed and audits it, and
  `restful-etl restart` completes the batch.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Crashed, Failed
from restart_support import (
    EXTRACT,
    LOAD,
    TRANSFORM,
    assert_complete,
    audit_rows,
    clear_faults,
    destination_keys,
    extract_requests,
    job_statuses,
    rest_parameters,
    stage_batches,
    stall_writes,
    wait_for,
    wait_for_audit,
    written,
)
from secrets_support import rows_holding
from served_support import FINAL, Served
from typer.testing import CliRunner

from prefect_restful_etl.blocks import AuditDatabase
from prefect_restful_etl.deployments.cli.app import app
from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.flows.endings import mark_cancelled, mark_crashed, mark_ended, mask_failed
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch, EtlJob, utcnow
from prefect_restful_etl.tasks.engine.redaction import MASK

from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

DEPLOYMENT = "endings-test"


@pytest.fixture
async def served(prefect_server: PrefectServer, etl_home: Path, redis_url: str) -> AsyncIterator[Served]:
    """The flow served against the session's Prefect server, on this test's audit database and Redis stage."""
    runner = Served(
        prefect_server,
        {"RESTFUL_ETL_HOME": str(etl_home), "RESTFUL_ETL_STAGE_URL": redis_url},
        etl_home / "serve.log",
        DEPLOYMENT,
    )
    try:
        await wait_for(lambda: runner.deployment_id() is not None, "the served deployment registered")
        yield runner
    finally:
        runner.stop()


async def resume(served: Served, apis: DemoApis, tenant_id: str, batch_id: str) -> str:
    """A new run with credentials and `resume_batch_id`, created through the REST API; its batch id."""
    clear_faults(apis.accounting_url)
    new = served.start_run(rest_parameters(apis, tenant_id, resume_batch_id=batch_id))
    await wait_for(lambda: served.state(new) in {"COMPLETED", "FAILED", "CRASHED"}, "the resumed run ended")
    assert served.state(new) == "COMPLETED", served.log_tail()
    return new


async def test_a_batch_killed_mid_load_is_resumed_with_no_duplicate_and_no_loss(
    served: Served, etl_home: Path, redis_url: str, demo_state: DemoApis
) -> None:
    stall_writes(demo_state, after=50)
    killed = served.start_run(rest_parameters(demo_state, "killed"))
    await wait_for(lambda: written(demo_state) >= 50, "the load wrote 50 customers")
    pages_per_extract = extract_requests(demo_state)

    os.kill(served.flow_run_process(), signal.SIGKILL)  # no except block, no finally: the process is gone

    await wait_for(lambda: served.state(killed) == "CRASHED", "Prefect says Crashed")
    await wait_for_audit(etl_home, killed, "CRASHED")  # the runner ran the on_crashed hook
    _, jobs = await audit_rows(etl_home, killed)
    assert job_statuses(jobs) == [(EXTRACT, "COMPLETED"), (TRANSFORM, "COMPLETED"), (LOAD, "CRASHED")]
    assert stage_batches(redis_url) == {killed}  # kept for the restart

    resumed = await resume(served, demo_state, "killed", killed)

    assert_complete(demo_state)
    assert extract_requests(demo_state) == pages_per_extract  # the resumed run did not extract again
    row, jobs = await audit_rows(etl_home, resumed)
    assert row is not None and (row.status, row.resumed_from) == ("COMPLETED", killed)
    assert [job.message for job in jobs] == [f"reused from batch {killed}"] * 2 + [None]
    assert stage_batches(redis_url) == set()


async def test_a_batch_cancelled_through_prefect_stops_keeps_its_stage_and_resumes(
    served: Served, etl_home: Path, redis_url: str, demo_state: DemoApis
) -> None:
    stall_writes(demo_state, after=30)
    cancelled = served.start_run(rest_parameters(demo_state, "cancel"))
    await wait_for(lambda: written(demo_state) >= 30, "the load wrote 30 customers")

    served.cancel(cancelled)

    await wait_for(lambda: served.state(cancelled) == "CANCELLED", "Prefect says Cancelled", timeout=30)
    await wait_for_audit(etl_home, cancelled, "CANCELLED", timeout=30)
    _, jobs = await audit_rows(etl_home, cancelled)
    assert job_statuses(jobs) == [(EXTRACT, "COMPLETED"), (TRANSFORM, "COMPLETED"), (LOAD, "CANCELLED")]
    held = destination_keys(demo_state)
    assert sum(held.values()) == len(held) == 30  # the stalled writes never happened; none half-written
    assert stage_batches(redis_url) == {cancelled}  # kept for the restart

    resumed = await resume(served, demo_state, "cancel", cancelled)

    assert_complete(demo_state)
    row, _ = await audit_rows(etl_home, resumed)
    assert row is not None and row.resumed_from == cancelled
    assert stage_batches(redis_url) == set()


async def test_resume_refuses_a_batch_prefect_still_runs(served: Served, etl_home: Path, demo_state: DemoApis) -> None:
    stall_writes(demo_state, after=10)
    running = served.start_run(rest_parameters(demo_state, "busy"))
    await wait_for(lambda: written(demo_state) >= 10, "the load wrote 10 customers")

    second = served.start_run(rest_parameters(demo_state, "busy", resume_batch_id=running))

    await wait_for(lambda: served.state(second) == "FAILED", "the resuming run failed")
    row, _ = await audit_rows(etl_home, second)
    assert row is not None and f"batch {running} is still Running in Prefect" in (row.message or "")
    assert written(demo_state) == 10
    served.cancel(running)
    await wait_for(lambda: served.state(running) == "CANCELLED", "the first run cancelled", timeout=30)


@pytest.mark.parametrize(
    "batch_status,job_rows,expected",
    [
        ("RUNNING", [("COMPLETED", None), ("RUNNING", None)], ("CANCELLED", ["COMPLETED", "CANCELLED"])),
        ("FAILED", [("FAILED", "TerminationSignal: 15")], ("CANCELLED", ["CANCELLED"])),
        ("FAILED", [("FAILED", "RetriableError: 503"), ("RUNNING", None)], ("CANCELLED", ["FAILED", "CANCELLED"])),
        ("COMPLETED", [("COMPLETED", None)], ("COMPLETED", ["COMPLETED"])),
    ],
    ids=["killed-while-running", "its-own-code-saw-the-kill", "an-earlier-failure-stays", "completed-stays"],
)
async def test_mark_ended_marks_only_what_the_kill_left(
    etl_home: Path,
    audit_url: str,
    monkeypatch: pytest.MonkeyPatch,
    batch_status: str,
    job_rows: list[tuple[str, str | None]],
    expected: tuple[str, list[str]],
) -> None:
    monkeypatch.setenv("RESTFUL_ETL_AUDIT_URL", audit_url)  # SQLite and PostgreSQL in turn
    audit = await AuditStore.open(audit_url)
    await audit.add(EtlBatch(batch_id="b1", tenant_id="t", batch_type="bt", status=batch_status))
    for i, (status, message) in enumerate(job_rows):
        await audit.add(
            EtlJob(
                job_id=f"j{i}",
                batch_id="b1",
                tenant_id="t",
                job=f"job {i}",
                kind="load",
                status=status,
                message=message,
            )
        )
    await audit.close()

    await mark_ended("b1", "CANCELLED", "cancelled through Prefect")

    row, jobs = await batch_rows(audit_url, "b1")
    assert row is not None and (row.status, [job.status for job in jobs]) == expected
    assert all(job.ended_at is not None and job.ended_at >= job.started_at for job in jobs if job.status == "CANCELLED")


@pytest.mark.parametrize(
    "ended,expected",
    [(timedelta(seconds=3), "CANCELLED"), (timedelta(seconds=-60), "FAILED")],
    ids=["failed-after-the-cancel-was-asked", "failed-before-it"],
)
async def test_mark_ended_takes_a_job_that_failed_after_the_cancel_as_cut_short_by_it(
    etl_home: Path, audit_url: str, monkeypatch: pytest.MonkeyPatch, ended: timedelta, expected: str
) -> None:
    """The load's process cut its own connections as it stopped, and the load saw a ReadError."""
    monkeypatch.setenv("RESTFUL_ETL_AUDIT_URL", audit_url)
    asked = utcnow()
    failure = "RetriableError: POST accounting:/customers: ReadError: [Errno 104] Connection reset by peer"
    audit = await AuditStore.open(audit_url)
    await audit.add(EtlBatch(batch_id="b3", tenant_id="t", batch_type="bt", status="FAILED", message=failure))
    await audit.add(
        EtlJob(
            job_id="j",
            batch_id="b3",
            tenant_id="t",
            job="load",
            kind="load",
            status="FAILED",
            message=failure,
            ended_at=asked + ended,
        )
    )
    await audit.close()

    await mark_ended("b3", "CANCELLED", "cancelled through Prefect", cut_short_since=asked)

    row, jobs = await batch_rows(audit_url, "b3")
    assert row is not None and (row.status, [job.status for job in jobs]) == ("CANCELLED", [expected])


async def test_mark_ended_marks_the_rows_in_the_audit_database_block_the_workers_use(
    prefect_harness: Path, etl_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker with RESTFUL_ETL_AUDIT_BLOCK writes its batches there, so its hooks must look there too."""
    url = f"sqlite:///{etl_home / 'audit-from-block.db'}"
    await AuditDatabase(url=url).save("endings-audit", overwrite=True)
    monkeypatch.setenv("RESTFUL_ETL_AUDIT_BLOCK", "endings-audit")
    audit = await AuditStore.open(url)
    await audit.add(EtlBatch(batch_id="b2", tenant_id="t", batch_type="bt", status="RUNNING"))
    await audit.add(EtlJob(job_id="j", batch_id="b2", tenant_id="t", job="load", kind="load", status="RUNNING"))
    await audit.close()

    await mark_ended("b2", "CRASHED", "the flow run's process ended without finishing")

    row, jobs = await batch_rows(url, "b2")
    assert row is not None and (row.status, [job.status for job in jobs]) == ("CRASHED", ["CRASHED"])
    assert not (etl_home / "audit.db").exists()  # RESTFUL_ETL_HOME's default database was never opened


async def batch_rows(url: str, batch_id: str) -> tuple[EtlBatch | None, list[EtlJob]]:
    """The batch's audit row and its jobs' rows, read afresh from the database at `url`."""
    audit = await AuditStore.open(url)
    try:
        return await audit.get_batch(batch_id), list(await audit.jobs(batch_id))
    finally:
        await audit.close()


PLAIN_SECRET = "plain-secret-never-started-5d1e"


@pytest.mark.parametrize(
    "hook,state",
    [(mark_cancelled, Cancelled()), (mark_crashed, Crashed()), (mask_failed, Failed())],
    ids=["cancelled", "crashed", "failed"],
)
async def test_the_end_hooks_mask_plain_credentials_of_a_run_that_never_reached_its_body(
    prefect_harness: Path, etl_home: Path, hook: Any, state: Any
) -> None:
    parameters = {"tenant_id": "t", "credentials": {"crm": {"token": PLAIN_SECRET}}}
    async with get_client() as client:
        flow_run = await client.create_flow_run(crm_to_accounting, parameters=parameters)
        assert flow_run.parameters["credentials"]["crm"]["token"] == PLAIN_SECRET  # in clear, as the API keeps it

        await hook(crm_to_accounting, flow_run, state)

        stored = (await client.read_flow_run(flow_run.id)).parameters
    assert stored == {"tenant_id": "t", "credentials": {"crm": {"token": MASK}}}


async def test_a_runner_killed_while_its_run_is_pending_leaves_it_to_the_janitor_then_restart_completes_it(
    prefect_server: PrefectServer, etl_home: Path, redis_url: str, demo_state: DemoApis, tmp_path: Path
) -> None:
    """No hook runs for such a run and Prefect never ends it: it stays Pending with its plain credentials, and a
    restart is refused as "still Pending". The janitor masks, crashes and audits it; the restart then runs."""
    settings = {"RESTFUL_ETL_HOME": str(etl_home), "RESTFUL_ETL_STAGE_URL": redis_url}
    first = Served(prefect_server, settings, etl_home / "serve.log", DEPLOYMENT)
    try:
        await wait_for(lambda: first.deployment_id() is not None, "the served deployment registered")
        batch = first.start_run(rest_parameters(demo_state, "pending-kill"))
        await wait_for(lambda: first.state(batch) != "SCHEDULED", "the runner took the run")
        first.kill()  # the runner and the flow run's process it was starting
        assert first.state(batch) == "PENDING", "the flow run's process started before the kill: run the test again"
        assert first.flow_run(batch)["parameters"]["credentials"]["crm"]["token"] == demo_state.crm_token
    finally:
        first.kill()
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps(rest_parameters(demo_state, "pending-kill")["credentials"]))

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        swept = await cli_json("janitor", "--pending-seconds", "0")

    assert batch in swept["crashed"] and batch in swept["masked"] and batch in swept["audited"]
    run = first.flow_run(batch)
    first.stop()
    assert run["state"]["type"] == "CRASHED" and "Pending for more than 0 s" in run["state"]["message"]
    assert run["parameters"]["credentials"] == {"crm": {"token": MASK}, "accounting": {"api_key": MASK}}
    assert rows_holding(prefect_server.database, [demo_state.crm_token, demo_state.accounting_api_key]) == []
    row, jobs = await audit_rows(etl_home, batch)
    assert row is not None and (row.status, row.tenant_id, row.batch_type) == ("CRASHED", "pending-kill", LOAD_TYPE)
    assert jobs == []

    second = Served(prefect_server, settings, etl_home / "serve.log", DEPLOYMENT)
    try:
        await wait_for(lambda: second.deployment_id() is not None, "the served deployment registered again")
        with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
            restarted = await cli_json("restart", batch, "-t", "pending-kill", "-c", str(creds), "--no-seal")
        await wait_for(lambda: second.state(restarted["batch_id"]) in FINAL, "the restart ended", timeout=120)
        assert second.state(restarted["batch_id"]) == "COMPLETED", second.log_tail()
    finally:
        second.stop()
    assert_complete(demo_state)
    row, _ = await audit_rows(etl_home, restarted["batch_id"])
    assert row is not None and (row.status, row.resumed_from) == ("COMPLETED", batch)


LOAD_TYPE = "crm-to-accounting"


async def cli_json(*args: str) -> Any:
    """A CLI command's `--json` output, run as a user runs it (in a thread: each command has its own loop)."""
    result = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_a_load_cancelled_while_its_writes_are_in_flight_is_cancelled_not_failed(
    served: Served, etl_home: Path, redis_url: str, demo_state: DemoApis
) -> None:
    """Cancelled while requests are on the wire (each write takes 0.05 s): the load's audit row says CANCELLED,
    as the batch's does, not FAILED with the error of a connection its own process cut."""
    httpx.post(f"{demo_state.accounting_url}/_control/latency", json={"seconds": 0.05}).raise_for_status()
    cancelled = served.start_run(rest_parameters(demo_state, "cut-short"))
    await wait_for(lambda: written(demo_state) >= 5, "the load wrote 5 customers")

    served.cancel(cancelled)

    await wait_for(lambda: served.state(cancelled) == "CANCELLED", "Prefect says Cancelled", timeout=30)
    await wait_for_audit(etl_home, cancelled, "CANCELLED", timeout=30)
    batch, jobs = await audit_rows(etl_home, cancelled)
    assert job_statuses(jobs) == [(EXTRACT, "COMPLETED"), (TRANSFORM, "COMPLETED"), (LOAD, "CANCELLED")], [
        job.message for job in jobs
    ]
    assert batch is not None and "Error" not in (batch.message or ""), batch.message
    held = destination_keys(demo_state)
    assert sum(held.values()) == len(held), "no key written twice"
    assert batch.inserted <= len(held), "the batch counts no more than its load did before the cancel"
