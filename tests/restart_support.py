"""Helpers for restart and cancel tests: the demo APIs' control endpoints, batch parameters, audit rows, polling."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch, EtlJob
from prefect_restful_etl.tasks.engine.credentials import Credentials

EXTRACT, TRANSFORM, LOAD = (job.name for job in CRM_TO_ACCOUNTING.jobs)


# --- the demo APIs -------------------------------------------------------------------------------------------


def add_fault(base_url: str, **spec: Any) -> None:
    httpx.post(f"{base_url}/_control/faults", json=spec).raise_for_status()


def clear_faults(base_url: str) -> None:
    httpx.delete(f"{base_url}/_control/faults").raise_for_status()


def fail_write(apis: DemoApis, nth: int) -> None:
    """The accounting API answers the `nth` customer POST from now with a 503: the load fails there."""
    add_fault(apis.accounting_url, method="POST", path="/customers", status=503, fail_nth=nth)


def stall_writes(apis: DemoApis, after: int, seconds: int = 30, times: int = 1000) -> None:
    """The `times` customer POSTs after the first `after` get a 429 with `Retry-After: seconds`: the load waits."""
    add_fault(
        apis.accounting_url,
        method="POST",
        path="/customers",
        status=429,
        retry_after=seconds,
        fail_nth=after + 1,
        times=times,
    )


def extract_requests(apis: DemoApis) -> int:
    """How many pages of customers the CRM has served since its stats were reset."""
    requests = httpx.get(f"{apis.crm_url}/_control/stats").raise_for_status().json()["requests"]
    return int(requests.get("GET /customers", 0))


def destination_keys(apis: DemoApis) -> Counter[str]:
    """Each accounting customer's external id, with how many customers hold it (a duplicate counts 2)."""
    dump = httpx.get(f"{apis.accounting_url}/_control/dump").raise_for_status().json()
    return Counter(str(customer["external_id"]) for customer in dump["customers"])


def written(apis: DemoApis) -> int:
    return sum(destination_keys(apis).values())


def assert_complete(apis: DemoApis) -> None:
    """No loss and no duplicate: every CRM customer is in the accounting API exactly once."""
    headers = {"Authorization": f"Bearer {apis.crm_token}"}
    source = httpx.get(f"{apis.crm_url}/all/customers", headers=headers).raise_for_status().json()
    held = destination_keys(apis)
    assert [key for key, n in held.items() if n > 1] == []
    assert set(held) == {str(customer["id"]) for customer in source}


# --- batches, their audit rows and their stage ---------------------------------------------------------------


def parameters(apis: DemoApis, tenant_id: str, **more: Any) -> dict[str, Any]:
    """A full refresh of crm-to-accounting against the demo APIs, for a flow called in this process."""
    return {
        "tenant_id": tenant_id,
        "credentials": {
            "crm": Credentials(token=SecretStr(apis.crm_token)),
            "accounting": Credentials(api_key=SecretStr(apis.accounting_api_key)),
        },
        "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
        "full_refresh": True,
        **more,
    }


def rest_parameters(apis: DemoApis, tenant_id: str, **more: Any) -> dict[str, Any]:
    """The same as JSON, as a REST client sends them (the flow masks the secrets on receipt)."""
    return {
        "tenant_id": tenant_id,
        "credentials": {"crm": {"token": apis.crm_token}, "accounting": {"api_key": apis.accounting_api_key}},
        "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
        "full_refresh": True,
        **more,
    }


async def audit_rows(etl_home: Path, batch_id: str) -> tuple[EtlBatch | None, list[EtlJob]]:
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        return await audit.get_batch(batch_id), list(await audit.jobs(batch_id))
    finally:
        await audit.close()


async def last_batch(etl_home: Path, tenant_id: str) -> EtlBatch:
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        return (await audit.batches(tenant_id, limit=1))[0]
    finally:
        await audit.close()


def job_statuses(jobs: list[EtlJob]) -> list[tuple[str, str]]:
    return [(job.job, job.status) for job in jobs]


def stage_batches(redis_url: str) -> set[str]:
    """The ids of the batches that hold keys in the stage."""
    with redis.Redis.from_url(redis_url) as client:
        return {key.decode().split(":")[2] for key in client.scan_iter(match="restful-etl:*")}


# --- polling with a deadline ---------------------------------------------------------------------------------


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll `condition` (blocking, so run in a thread) until it holds; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


async def wait_for_async(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.2)


async def wait_for_audit(etl_home: Path, batch_id: str, status: str, timeout: float = 60.0) -> None:
    async def reached() -> bool:
        row, _ = await audit_rows(etl_home, batch_id)
        return row is not None and row.status == status

    await wait_for_async(reached, f"batch {batch_id} audited {status}", timeout)
