"""Restart with real parts: a Redis stage on redis-server, the demo APIs, Prefect's test harness.

- Prefect's retry of a failed batch reuses the completed jobs' cached reports and their staged records;
- a new run with `resume_batch_id` continues a failed batch from its stage;
- a lost stage (memory in a new process, a Redis emptied) means the jobs run again, never a load from nothing;
- a stage outage fails the load between chunks, with only whole chunks in the destination, and a resume converges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow_async
from prefect.states import AwaitingRetry, State
from restart_support import (
    EXTRACT,
    LOAD,
    TRANSFORM,
    assert_complete,
    audit_rows,
    clear_faults,
    destination_keys,
    extract_requests,
    fail_write,
    job_statuses,
    last_batch,
    parameters,
    stage_batches,
    stall_writes,
    wait_for,
    written,
)

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.builder import build_flow
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING, crm_to_accounting
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage

from fixtures.servers.redis import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_stage(etl_home: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Batches of this test stage in an emptied database of the session's redis-server."""
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", redis_url)
    return redis_url


async def failed_batch(apis: DemoApis, tenant_id: str) -> str:
    """A batch whose load fails on its 20th write, after extract and transform completed; its batch id."""
    fail_write(apis, 20)
    state = await crm_to_accounting(**parameters(apis, tenant_id), return_state=True)
    assert state.is_failed()
    return str(state.state_details.flow_run_id)


# --- Prefect's retry -----------------------------------------------------------------------------------------


async def test_a_flow_retry_loads_from_the_stage_without_a_second_extract(
    prefect_harness: Path, etl_home: Path, redis_stage: str, demo_state: DemoApis
) -> None:
    await crm_to_accounting(**parameters(demo_state, "reference"))
    pages_per_extract = extract_requests(demo_state)
    demo_state.reset()
    flow = build_flow(CRM_TO_ACCOUNTING, retries=1, retry_delay_seconds=0)
    fail_write(demo_state, 20)

    report = await flow(**parameters(demo_state, "retry"))

    assert report.status == "COMPLETED"
    assert_complete(demo_state)
    assert extract_requests(demo_state) == pages_per_extract
    batch, jobs = await audit_rows(etl_home, report.batch_id)
    assert batch is not None and batch.status == "COMPLETED"
    assert job_statuses(jobs) == [
        (EXTRACT, "COMPLETED"),
        (TRANSFORM, "COMPLETED"),
        (LOAD, "FAILED"),
        (LOAD, "COMPLETED"),
    ]
    assert "503" in (jobs[2].message or "")


async def retry_in_a_new_process(flow: Any, failed: State, params: dict[str, Any]) -> State:
    """Prefect's "Retry" of a failed flow run as a worker runs it: the same flow run, in a fresh process.

    A fresh process has an empty memory stage; the Redis stage and Prefect's persisted task results are all
    that carry over. (A real Retry reads the stored parameters, so it needs sealed credentials.)
    """
    MemoryStage._store.clear()
    async with get_client() as client:
        flow_run_id = failed.state_details.flow_run_id
        assert flow_run_id is not None
        await client.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)
        flow_run = await client.read_flow_run(flow_run_id)
    state = await run_flow_async(flow, flow_run=flow_run, parameters=params, return_type="state")
    assert isinstance(state, State)
    return state


@pytest.mark.parametrize("stage,extracts", [("redis", 1), ("memory", 2)], ids=["redis-reuses", "memory-redoes"])
async def test_a_retried_flow_run_reuses_the_stage_only_where_it_survived(
    prefect_harness: Path,
    etl_home: Path,
    redis_url: str,
    demo_state: DemoApis,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    extracts: int,
) -> None:
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", redis_url if stage == "redis" else "memory://")
    params = parameters(demo_state, f"again-{stage}")
    fail_write(demo_state, 20)
    failed = await crm_to_accounting(**params, return_state=True)
    assert failed.is_failed()
    pages_per_extract = extract_requests(demo_state)

    state = await retry_in_a_new_process(crm_to_accounting, failed, params)

    assert state.is_completed(), state.message
    assert extract_requests(demo_state) == extracts * pages_per_extract
    assert_complete(demo_state)
    batch, jobs = await audit_rows(etl_home, str(failed.state_details.flow_run_id))
    assert batch is not None and batch.status == "COMPLETED"
    assert [job.job for job in jobs].count(EXTRACT) == extracts


# --- resume_batch_id -----------------------------------------------------------------------------------------


async def test_resume_continues_a_failed_batch_from_its_stage(
    prefect_harness: Path, etl_home: Path, redis_stage: str, demo_state: DemoApis
) -> None:
    failed_id = await failed_batch(demo_state, "resume")
    pages_per_extract = extract_requests(demo_state)
    assert stage_batches(redis_stage) == {failed_id}

    report = await crm_to_accounting(**parameters(demo_state, "resume", resume_batch_id=failed_id))

    assert report.status == "COMPLETED"
    assert extract_requests(demo_state) == pages_per_extract
    assert_complete(demo_state)
    batch, jobs = await audit_rows(etl_home, report.batch_id)
    assert batch is not None and (batch.status, batch.resumed_from) == ("COMPLETED", failed_id)
    assert job_statuses(jobs) == [(EXTRACT, "COMPLETED"), (TRANSFORM, "COMPLETED"), (LOAD, "COMPLETED")]
    assert [job.message for job in jobs] == [f"reused from batch {failed_id}"] * 2 + [None]
    assert jobs[0].stage_key is not None and failed_id in jobs[0].stage_key
    assert batch.extracted == jobs[0].extracted > 0
    assert stage_batches(redis_stage) == set()  # both batches' stages dropped once the work is done


async def test_resume_redoes_the_jobs_whose_stage_is_gone(
    prefect_harness: Path, etl_home: Path, redis_stage: str, demo_state: DemoApis
) -> None:
    failed_id = await failed_batch(demo_state, "lost")
    pages_per_extract = extract_requests(demo_state)
    with redis.Redis.from_url(redis_stage) as client:
        client.flushdb()  # the stage expired, or Redis restarted without persistence

    report = await crm_to_accounting(**parameters(demo_state, "lost", resume_batch_id=failed_id))

    assert report.status == "COMPLETED"
    assert extract_requests(demo_state) == 2 * pages_per_extract
    assert_complete(demo_state)
    _, jobs = await audit_rows(etl_home, report.batch_id)
    assert [job.message for job in jobs] == [None, None, None]  # nothing reused


@pytest.mark.parametrize(
    "tenant_id,resume,match",
    [
        ("other", "failed", "no batch .* of tenant 'other'"),
        ("refuse", "unknown", "no batch unknown"),
        ("refuse", "completed", "completed: there is nothing to resume"),
    ],
    ids=["another-tenant", "unknown-batch", "completed-batch"],
)
async def test_resume_refuses_a_batch_it_must_not_continue(
    prefect_harness: Path,
    etl_home: Path,
    redis_stage: str,
    demo_state: DemoApis,
    tenant_id: str,
    resume: str,
    match: str,
) -> None:
    ids = {"failed": await failed_batch(demo_state, "refuse"), "unknown": "unknown"}
    clear_faults(demo_state.accounting_url)
    ids["completed"] = (await crm_to_accounting(**parameters(demo_state, "refuse"))).batch_id
    before = written(demo_state)

    with pytest.raises(ConfigError, match=match):
        await crm_to_accounting(**parameters(demo_state, tenant_id, resume_batch_id=ids[resume]))

    assert written(demo_state) == before
    assert (await last_batch(etl_home, tenant_id)).status == "FAILED"


# --- a stage outage ------------------------------------------------------------------------------------------

BIG = 2500  # customers: the load reads them from the stage in three chunks of at most 1000


@pytest.fixture(scope="module")
def big_apis() -> Iterator[DemoApis]:
    with DemoApis(crm_customers=BIG) as apis:
        yield apis


async def test_a_stage_outage_fails_the_load_between_chunks_and_a_resume_converges(
    prefect_harness: Path,
    etl_home: Path,
    big_apis: DemoApis,
    private_redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    big_apis.reset()
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", private_redis_server.url)
    monkeypatch.setenv("RESTFUL_ETL_STAGE_PREFIX", "etl-outage")
    # write 990 waits out a 429 for four seconds: time to stop Redis while chunk one is being written
    stall_writes(big_apis, after=989, seconds=4, times=1)
    batch = asyncio.create_task(crm_to_accounting(**parameters(big_apis, "outage"), return_state=True))
    await wait_for(lambda: written(big_apis) >= 989, "the load reached write 989")
    await asyncio.to_thread(private_redis_server.stop)

    state = await batch

    assert state.is_failed()
    failed_id = str(state.state_details.flow_run_id)
    row, jobs = await audit_rows(etl_home, failed_id)
    assert row is not None and row.status == "FAILED" and job_statuses(jobs)[-1] == (LOAD, "FAILED")
    message = jobs[-1].message or ""
    # After chunk one's writes the load's first stage call writes their ids back to its index on the stage
    assert "StageUnavailable" in message and "stage index_put of" in message and ".index" in message
    assert f"127.0.0.1:{private_redis_server.port}" in message
    assert private_redis_server.password and private_redis_server.password not in message
    assert private_redis_server.password not in (row.message or "")
    assert (jobs[0].stage_key or "").startswith(f"etl-outage:outage:{failed_id}:")  # as the stage names it
    held = destination_keys(big_apis)
    assert sum(held.values()) == len(held) == 1000  # chunk one whole; nothing of a chunk never read

    clear_faults(big_apis.accounting_url)
    private_redis_server.start()  # a Redis without persistence comes back empty: the stage is gone
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", private_redis_server.url)
    report = await crm_to_accounting(**parameters(big_apis, "outage", resume_batch_id=failed_id))

    assert report.status == "COMPLETED"
    assert_complete(big_apis)
