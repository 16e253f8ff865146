"""Running a batch (flows/batch.py): batches of one tenant and batch type that overlap run one at a time, across
processes (served runs, each in a process of its own, on a real Prefect server), the others waiting for the lease
or refused; a failed batch's audit row counts what its jobs did before the failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from restart_support import (
    assert_complete,
    audit_rows,
    destination_keys,
    parameters,
    rest_parameters,
    wait_for,
)
from served_support import FINAL, Served

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.tasks.engine.audit.lease import BatchLease, BatchOverlap
from prefect_restful_etl.tasks.engine.audit.store import AuditStore

from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def served(prefect_server: PrefectServer, etl_home: Path, redis_url: str) -> AsyncIterator[Served]:
    runner = Served(
        prefect_server,
        {"RESTFUL_ETL_HOME": str(etl_home), "RESTFUL_ETL_STAGE_URL": redis_url, "RESTFUL_ETL_OVERLAP_WAIT": "240"},
        etl_home / "serve.log",
        "overlap-test",
    )
    try:
        await wait_for(lambda: runner.deployment_id() is not None, "the served deployment registered")
        yield runner
    finally:
        runner.stop()


async def test_three_overlapping_runs_of_one_tenant_leave_one_row_per_key(
    served: Served, etl_home: Path, demo_state: DemoApis
) -> None:
    # Each write waits 0.1 s: a batch loads for seconds, and the runs' processes start together.
    httpx.post(f"{demo_state.accounting_url}/_control/latency", json={"seconds": 0.1}).raise_for_status()
    runs = [served.start_run(rest_parameters(demo_state, "overlap")) for _ in range(3)]

    await wait_for(lambda: all(served.state(run) in FINAL for run in runs), "the three runs ended", timeout=240)

    assert [served.state(run) for run in runs] == ["COMPLETED"] * 3, served.log_tail()
    held = destination_keys(demo_state)
    assert sum(held.values()) == len(held), f"{sum(held.values())} rows for {len(held)} keys"
    assert_complete(demo_state)  # every CRM customer once: no duplicate, none lost
    rows = [(await audit_rows(etl_home, run))[0] for run in runs]
    assert all(row is not None and row.status == "COMPLETED" for row in rows)
    assert sum(row.inserted for row in rows if row) == len(destination_keys(demo_state))  # each key written once


async def test_a_batch_that_finds_its_tenant_busy_waits_then_is_refused(
    prefect_harness: Path, etl_home: Path, demo_state: DemoApis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTFUL_ETL_OVERLAP_WAIT", "1")
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    holder = BatchLease(audit, "busy", "crm-to-accounting", "the-other-batch")
    await holder.acquire(wait=0)
    try:
        state = await crm_to_accounting(**parameters(demo_state, "busy"), return_state=True)
        assert state.is_failed() and "BatchOverlap: batch the-other-batch of tenant 'busy'" in (state.message or "")
        with pytest.raises(BatchOverlap):
            await state.result()
        batch = (await audit.batches("busy"))[0]
        assert batch.status == "REFUSED" and "is still running" in (batch.message or "")
        assert destination_keys(demo_state) == {}, "the refused batch wrote nothing"
        assert batch.extracted == 0

        monkeypatch.setenv("RESTFUL_ETL_OVERLAP_WAIT", "120")
        waiting = asyncio.create_task(crm_to_accounting(**parameters(demo_state, "busy")))
        await asyncio.sleep(0)  # it starts, and waits for the lease
        await holder.release()
        report = await asyncio.wait_for(waiting, 120)
        assert report.status == "COMPLETED"
        assert_complete(demo_state)
    finally:
        await holder.release()
        await audit.close()


async def test_a_failed_batch_counts_what_its_jobs_did_before_the_failure(
    prefect_harness: Path, etl_home: Path, demo_state: DemoApis
) -> None:
    # From the 100th create on, the accounting API refuses every one (503) for longer than the retries last.
    httpx.post(
        f"{demo_state.accounting_url}/_control/faults",
        json={"method": "POST", "path": "/customers", "status": 503, "fail_nth": 100, "times": 100},
    ).raise_for_status()

    state = await crm_to_accounting(**parameters(demo_state, "half-loaded"), return_state=True)

    assert state.is_failed()
    held = sum(destination_keys(demo_state).values())
    assert 0 < held < 200, "the load wrote part of the batch, then failed"
    batch, jobs = await audit_rows(etl_home, str(state.state_details.flow_run_id))
    assert batch is not None and batch.status == "FAILED"
    load = jobs[-1]
    assert (load.status, load.inserted) == ("FAILED", held)
    assert (batch.extracted, batch.inserted) == (200, held), "the batch row counts what its load did"
