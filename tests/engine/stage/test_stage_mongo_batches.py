"""Batches on the MongoDB stage, with real parts: SecantusDB, the demo APIs, Prefect's test harness.

- a batch end to end stages in MongoDB and drops its documents when it completes (unless kept);
- Prefect's retry and `resume_batch_id` continue a failed batch from the Mongo stage;
- a stage outage fails the load between chunks, naming the server and never its password, with only whole
  chunks in the destination, and a resume converges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow_async
from prefect.states import AwaitingRetry, State
from restart_support import (
    EXTRACT,
    LOAD,
    TRANSFORM,
    add_fault,
    assert_complete,
    audit_rows,
    clear_faults,
    destination_keys,
    extract_requests,
    job_statuses,
    parameters,
    stall_writes,
    wait_for,
    written,
)

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.tasks.engine.stage.mongo import INDEXES, JOBS, RECORDS

from fixtures.servers.secantus import SecantusServer

pytestmark = pytest.mark.integration


@pytest.fixture
def mongo_stage(etl_home: Path, mongo_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Batches of this test stage in a database of its own on the session's SecantusDB."""
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", mongo_url)
    return mongo_url


def staged(url: str) -> dict[str, set[str]]:
    """Per collection of the stage, the batch ids its documents belong to."""
    with pymongo.MongoClient(url) as client:
        db = client.get_default_database()
        return {name: {b.split(":")[2] for b in db[name].distinct("batch")} for name in (RECORDS, JOBS, INDEXES)}


def stage_batches(url: str) -> set[str]:
    return set().union(*staged(url).values())


def fail_writes_from(apis: DemoApis, nth: int) -> None:
    """Every customer POST from the `nth` on answers 503, retries and all (the load retries one): it fails there."""
    add_fault(apis.accounting_url, method="POST", path="/customers", status=503, fail_nth=nth, times=10_000)


async def failed_batch(apis: DemoApis, tenant_id: str) -> str:
    """A batch whose load fails from its 20th write on, after extract and transform completed; its batch id.
    The API answers again afterwards."""
    fail_writes_from(apis, 20)
    state = await crm_to_accounting(**parameters(apis, tenant_id), return_state=True)
    assert state.is_failed()
    clear_faults(apis.accounting_url)
    return str(state.state_details.flow_run_id)


@pytest.mark.parametrize("keep", [False, True], ids=["dropped", "kept"])
async def test_a_batch_stages_in_mongodb_and_drops_its_documents_when_it_completes(
    prefect_harness: Path,
    etl_home: Path,
    mongo_stage: str,
    demo_state: DemoApis,
    monkeypatch: pytest.MonkeyPatch,
    keep: bool,
) -> None:
    monkeypatch.setenv("RESTFUL_ETL_KEEP_STAGE", str(keep).lower())

    report = await crm_to_accounting(**parameters(demo_state, "mongo"))

    assert report.status == "COMPLETED" and report.counts["inserted"] == report.counts["extracted"] > 0
    assert_complete(demo_state)
    _, jobs = await audit_rows(etl_home, report.batch_id)
    assert (jobs[0].stage_key or "") == f"restful-etl:mongo:{report.batch_id}:extract-crm-customers"
    if keep:  # every job's records (the load drops its own bookkeeping, the index documents, as it ends)
        assert staged(mongo_stage) == {RECORDS: {report.batch_id}, JOBS: {report.batch_id}, INDEXES: set()}
    else:
        assert stage_batches(mongo_stage) == set()


async def test_resume_continues_a_failed_batch_from_the_mongo_stage(
    prefect_harness: Path, etl_home: Path, mongo_stage: str, demo_state: DemoApis
) -> None:
    failed_id = await failed_batch(demo_state, "resume")
    pages_per_extract = extract_requests(demo_state)
    assert stage_batches(mongo_stage) == {failed_id}

    report = await crm_to_accounting(**parameters(demo_state, "resume", resume_batch_id=failed_id))

    assert report.status == "COMPLETED"
    assert extract_requests(demo_state) == pages_per_extract  # the extract's records came from MongoDB
    assert_complete(demo_state)
    batch, jobs = await audit_rows(etl_home, report.batch_id)
    assert batch is not None and (batch.status, batch.resumed_from) == ("COMPLETED", failed_id)
    assert job_statuses(jobs) == [(EXTRACT, "COMPLETED"), (TRANSFORM, "COMPLETED"), (LOAD, "COMPLETED")]
    assert [job.message for job in jobs] == [f"reused from batch {failed_id}"] * 2 + [None]
    assert stage_batches(mongo_stage) == set()  # both batches' documents dropped once the work is done


async def test_a_retried_flow_run_in_a_new_process_loads_from_the_mongo_stage(
    prefect_harness: Path, etl_home: Path, mongo_stage: str, demo_state: DemoApis
) -> None:
    """Prefect's "Retry" as a worker runs it: the same flow run in a fresh process, where only the Mongo stage and
    Prefect's persisted task results carry over."""
    params = parameters(demo_state, "retry")
    fail_writes_from(demo_state, 20)
    failed = await crm_to_accounting(**params, return_state=True)
    assert failed.is_failed()
    clear_faults(demo_state.accounting_url)
    pages_per_extract = extract_requests(demo_state)
    async with get_client() as client:
        flow_run_id = failed.state_details.flow_run_id
        assert flow_run_id is not None
        await client.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)
        flow_run = await client.read_flow_run(flow_run_id)

    state = await run_flow_async(crm_to_accounting, flow_run=flow_run, parameters=params, return_type="state")

    assert isinstance(state, State) and state.is_completed(), state
    assert extract_requests(demo_state) == pages_per_extract
    assert_complete(demo_state)
    _, jobs = await audit_rows(etl_home, str(flow_run_id))
    assert [job.job for job in jobs] == [EXTRACT, TRANSFORM, LOAD, LOAD]


BIG = 1500  # customers: the load reads them from the stage in two chunks, 1000 and 500


@pytest.fixture(scope="module")
def big_apis() -> Iterator[DemoApis]:
    with DemoApis(crm_customers=BIG) as apis:
        yield apis


async def test_a_mongo_outage_fails_the_load_between_chunks_and_a_resume_converges(
    prefect_harness: Path,
    etl_home: Path,
    big_apis: DemoApis,
    private_mongo_server: SecantusServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big_apis.reset()
    password = private_mongo_server.password
    assert password
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", private_mongo_server.url)
    # write 990 waits out a 429 for four seconds: time to stop the server while chunk one is being written
    stall_writes(big_apis, after=989, seconds=4, times=1)
    batch = asyncio.create_task(crm_to_accounting(**parameters(big_apis, "outage"), return_state=True))
    await wait_for(lambda: written(big_apis) >= 989, "the load reached write 989")
    await asyncio.to_thread(private_mongo_server.stop)

    state = await batch

    assert state.is_failed()
    failed_id = str(state.state_details.flow_run_id)
    row, jobs = await audit_rows(etl_home, failed_id)
    assert row is not None and row.status == "FAILED" and job_statuses(jobs)[-1] == (LOAD, "FAILED")
    message = jobs[-1].message or ""
    assert "StageUnavailable" in message and f"mongodb://127.0.0.1:{private_mongo_server.port}/" in message
    assert password not in message and password not in (row.message or "")
    held = destination_keys(big_apis)
    assert sum(held.values()) == len(held) == 1000  # chunk one whole; nothing of a chunk never read

    clear_faults(big_apis.accounting_url)
    private_mongo_server.start()  # on fresh storage: the stage is gone, so the resume redoes every job
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", private_mongo_server.url)
    report = await crm_to_accounting(**parameters(big_apis, "outage", resume_batch_id=failed_id))

    assert report.status == "COMPLETED"
    assert_complete(big_apis)
