"""Helpers for restart and cancel tests: the demo APIs' control endpoints, batch parameters, audit rows, polling."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from prefect_rest import prefect_rest
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch, EtlJob
from prefect_restful_etl.tasks.engine.credentials import Credentials

from fixtures.servers.prefect import PrefectServer

EXTRACT, TRANSFORM, LOAD = (job.name for job in CRM_TO_ACCOUNTING.jobs)


# --- the demo APIs -------------------------------------------------------------------------------------------


def add_fault(base_url: str, **spec: Any) -> None:
    httpx.post(f"{base_url}/_control/faults", json=spec).raise_for_status()


def clear_faults(base_url: str) -> None:
    httpx.delete(f"{base_url}/_control/faults").raise_for_status()


def fail_write(apis: DemoApis, nth: int) -> None:
    """The accounting API answers 503 to every attempt at creating customer `nth` (the load looks the key up
    and sends it again as often as the API's `max_attempts` allow): the load fails there, and a retry finds the
    API answering again."""
    attempts = CRM_TO_ACCOUNTING.apis["accounting"].max_attempts
    spec = {"external_id": str(nth), "status": 503, "times": attempts}
    httpx.post(f"{apis.accounting_url}/_control/refuse-key", json=spec).raise_for_status()


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
    """The ids of the batches that hold keys in the stage (a tenant's keys; the APIs' rate schedules, which live
    on the same server under `restful-etl::rate:`, are no batch's)."""
    with redis.Redis.from_url(redis_url) as client:
        return {key.decode().split(":")[2] for key in client.scan_iter(match="restful-etl:[^:]*")}


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


# --- a user's batch type served by `restful-etl serve` -------------------------------------------------------


class ServedFolder:
    """`restful-etl serve` in a subprocess of its own session, serving the batch type files of `folder` (written
    as a user writes them, `<name>.json`) on a real Prefect server; runs created through Prefect's REST API."""

    def __init__(
        self, server: PrefectServer, folder: Path, batch_types: dict[str, dict[str, Any]], environment: dict[str, str]
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, batch_type in batch_types.items():
            (folder / f"{name}.json").write_text(json.dumps(batch_type))
        self.api = prefect_rest(server.api_url)
        self.log = folder.parent / "serve.log"
        settings = {"RESTFUL_ETL_BATCH_TYPES": str(folder), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect_restful_etl.deployments.cli.app", "serve"],
                env=os.environ | server.client_environment() | settings | environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def deployment_id(self, name: str) -> str | None:
        """The incremental deployment of batch type `name` (its flow has the batch type's name)."""
        response = self.api.get(f"/deployments/name/{name}/{name}")
        return str(response.json()["id"]) if response.status_code == 200 else None

    def start_run(self, name: str, parameters: dict[str, Any]) -> str:
        deployment = self.deployment_id(name)
        assert deployment is not None, self.log_tail()
        response = self.api.post(f"/deployments/{deployment}/create_flow_run", json={"parameters": parameters})
        return str(response.raise_for_status().json()["id"])

    def state(self, flow_run_id: str) -> str:
        return str(self.api.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()["state"]["type"])

    def flow_run_process(self) -> int:
        """The PID of the process the runner started for the flow run: its only child (Linux /proc)."""
        children = [
            pid
            for task in Path(f"/proc/{self.process.pid}/task").iterdir()
            for pid in (task / "children").read_text().split()
        ]
        assert len(children) == 1, f"the runner has children {children}"
        return int(children[0])

    def kill_flow_run(self) -> None:
        """SIGKILL to the flow run's process: no except block, no finally, no hook of its own runs."""
        os.kill(self.flow_run_process(), signal.SIGKILL)

    async def run_to_end(self, name: str, parameters: dict[str, Any], timeout: float = 180.0) -> str:
        """A run created and followed to its end; fails unless it COMPLETED. Its flow run (batch) id."""
        run = self.start_run(name, parameters)
        final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
        await wait_for(lambda: self.state(run) in final, f"run {run} of {name} ended", timeout)
        assert self.state(run) == "COMPLETED", self.log_tail()
        return run

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the runner and any flow run
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self.api.close()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]
