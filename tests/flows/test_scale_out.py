"""Scale-out on Prefect's own engine, on loopback: a `prefect server` on PostgreSQL with Redis messaging
(prefect-redis), a process work pool with two workers (`restful-etl worker`), a shared Redis stage and a shared
PostgreSQL audit database, the crm-to-accounting full re-sync deployed from prefect.yaml, runs created through
Prefect's REST API, each tenant against demo APIs of its own.

- two runs of one tenant started at once, one on each worker: the lease in the audit database makes the second
  wait for the first, so their jobs never overlap, and the destination holds one row per key;
- a handful of tenants spread over both workers; the worker running the tenant with a slow destination is
  SIGKILLed (with its flow run) mid-load; the janitor finds the run silent (no heartbeat) and sets it Crashed,
  `restful-etl restart` resumes it on the surviving worker; every destination ends with one row per key and every
  tenant's last batch COMPLETED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from operations_support import until
from prefect_rest import prefect_rest
from restart_support import EXTRACT, LOAD, TRANSFORM, assert_complete, rest_parameters, written
from scale_out_support import FINAL, PrefectApi, Worker, console_json

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch, EtlJob

from fixtures.servers.postgres import PostgresServer
from fixtures.servers.prefect import PrefectServer, redis_messaging
from fixtures.servers.redis import RedisServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POOL = "restful-etl"  # prefect.yaml's process pool
DEPLOYMENT = "crm-to-accounting/crm-to-accounting-full-resync"
HEARTBEAT = 30  # seconds between flow-run heartbeats: Prefect's least
RECORDS = 300
TENANTS = ["north", "south", "east", "west"]
SLOW = TENANTS[0]  # its destination answers each write after 50 ms: its load is under way when its worker dies


@dataclass
class Cluster:
    server: PrefectServer
    api: PrefectApi
    environment: dict[str, str]  # a worker's (and the operator's CLI's) settings
    audit_url: str
    home: Path
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, name: str) -> Worker:
        worker = Worker(name, POOL, self.environment, self.home / f"{name}.log")
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.alive]

    def runner_of(self, flow_run_id: str) -> Worker | None:
        return next((worker for worker in self.workers if worker.took(flow_run_id)), None)

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.log_tail()}" for w in self.workers)


def prefect_cli(environment: dict[str, str], *args: str, cwd: Path | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        check=False,
        cwd=cwd,
        env=os.environ | environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.stop()


@pytest.fixture(scope="module")
def cluster(
    postgres_server: PostgresServer, module_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The server on PostgreSQL with its messaging on a redis-server of its own, the pool, the deployment and two
    workers sharing the stage (the session's Redis) and the audit database (PostgreSQL)."""
    home = tmp_path_factory.mktemp("scale-out")
    tag = os.getpid()
    audit_url = postgres_server.create_database(f"scale_out_audit_{tag}")
    with ExitStack() as stack:
        messaging = stack.enter_context(RedisServer())
        server = stack.enter_context(
            PrefectServer(
                database_url=postgres_server.create_database(f"scale_out_prefect_{tag}"),
                environment=redis_messaging(f"redis://127.0.0.1:{messaging.port}/0"),
            )
        )
        environment = server.client_environment() | {
            "RESTFUL_ETL_HOME": str(home),
            "RESTFUL_ETL_AUDIT_URL": audit_url,
            "RESTFUL_ETL_STAGE_URL": module_redis_url,
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT),
        }
        prefect_cli(environment, "work-pool", "create", "--type", "process", POOL)
        prefect_cli(environment, "deploy", "--name", DEPLOYMENT.split("/")[1], cwd=REPO)
        api = PrefectApi(stack.enter_context(prefect_rest(server.api_url)))
        running = Cluster(server, api, environment, audit_url, home)
        stack.callback(stop_all, running.workers)
        for name in ("worker-a", "worker-b"):
            running.start_worker(name)
        until(
            lambda: all("started!" in w.text() for w in running.workers) or not all(w.alive for w in running.workers),
            "both workers polling the pool",
            120,
        )
        assert all(w.alive for w in running.workers), running.logs()
        # Prefect's events went through the messaging Redis (its streams), not through the server's memory
        with redis.Redis(port=messaging.port) as client:
            assert any(client.scan_iter(count=1000)), "nothing in the messaging Redis"
        yield running


@pytest.fixture(scope="module")
def tenants() -> Iterator[dict[str, DemoApis]]:
    """Each tenant's own demo CRM and accounting API (different customers, different secrets)."""
    with ExitStack() as stack:
        yield {
            tenant: stack.enter_context(DemoApis(crm_customers=RECORDS, seed=seed))
            for seed, tenant in enumerate([*TENANTS, "twice"], start=1)
        }


def slow_writes(apis: DemoApis, seconds: float) -> None:
    httpx.post(f"{apis.accounting_url}/_control/latency", json={"seconds": seconds}).raise_for_status()


async def batch_rows(url: str, batch_id: str) -> tuple[EtlBatch | None, list[EtlJob]]:
    audit = await AuditStore.open(url)
    try:
        return await audit.get_batch(batch_id), list(await audit.jobs(batch_id))
    finally:
        await audit.close()


def ended(cluster: Cluster, runs: list[str], timeout: float) -> None:
    until(
        lambda: all(cluster.api.state(run) in FINAL for run in runs) or not cluster.live_workers(),
        f"runs {runs} ended",
        timeout,
    )


async def test_two_runs_of_one_tenant_on_two_workers_take_turns(cluster: Cluster, tenants: dict[str, DemoApis]) -> None:
    """Both start Running at once, one on each worker; the second waits for the lease (RESTFUL_ETL_OVERLAP_WAIT,
    60 s) and then finds everything written: its jobs start after the first's have ended, nothing is twice."""
    apis = tenants["twice"]
    for name in ("worker-a", "worker-b"):  # a worker the other test killed is back, as an operator restarts it
        if not any(w.name == name and w.alive for w in cluster.workers):
            cluster.start_worker(name)
    slow_writes(apis, 0.02)  # a load of a few seconds: long enough for both to be Running together
    deployment = cluster.api.deployment_id(DEPLOYMENT)
    runs = [cluster.api.create_run(deployment, rest_parameters(apis, "twice")) for _ in range(2)]

    ended(cluster, runs, 240)

    assert [cluster.api.state(run) for run in runs] == ["COMPLETED", "COMPLETED"], cluster.logs()
    runners = {run: worker.name if (worker := cluster.runner_of(run)) else "" for run in runs}
    assert set(runners.values()) == {"worker-a", "worker-b"}, runners
    first, second = sorted(runs, key=lambda run: cluster.api.flow_run(run)["end_time"])
    started_together = cluster.api.flow_run(second)["start_time"] < cluster.api.flow_run(first)["end_time"]
    assert started_together, "the second run was not Running while the first ran: nothing to hold apart"
    _, first_jobs = await batch_rows(cluster.audit_url, first)
    _, second_jobs = await batch_rows(cluster.audit_url, second)
    assert [job.status for job in first_jobs + second_jobs] == ["COMPLETED"] * 6
    first_done = max(job.ended_at for job in first_jobs if job.ended_at)
    assert min(job.started_at for job in second_jobs) >= first_done, "the two batches' jobs overlapped"
    second_row, _ = await batch_rows(cluster.audit_url, second)
    assert second_row is not None and second_row.inserted == 0 and second_row.unchanged == RECORDS
    assert_complete(apis)
    waited = min(job.started_at for job in second_jobs) - second_row.started_at
    print(f"\nlease: {runners[first]} ran first, {runners[second]} waited {waited.total_seconds():.1f}s for it")


async def test_a_worker_killed_mid_load_leaves_its_batch_to_the_janitor_and_the_other_worker(
    cluster: Cluster, tenants: dict[str, DemoApis], tmp_path: Path
) -> None:
    slow_writes(tenants[SLOW], 0.05)
    deployment = cluster.api.deployment_id(DEPLOYMENT)
    runs = {tenant: cluster.api.create_run(deployment, rest_parameters(tenants[tenant], tenant)) for tenant in TENANTS}
    killed_run = runs[SLOW]

    until(lambda: written(tenants[SLOW]) >= 40, f"{SLOW}'s load wrote 40 customers", 180)
    victim = cluster.runner_of(killed_run)
    assert victim is not None, cluster.logs()
    victim.kill()
    killed_at = time.monotonic()
    held_at_kill = written(tenants[SLOW])
    (survivor,) = cluster.live_workers()
    assert cluster.api.state(killed_run) == "RUNNING"  # nobody is left to say otherwise

    others = [run for tenant, run in runs.items() if tenant != SLOW]
    ended(cluster, others, 240)
    assert [cluster.api.state(run) for run in others] == ["COMPLETED"] * len(others), cluster.logs()
    took = {worker.name: [t for t, run in runs.items() if worker.took(run)] for worker in cluster.workers}
    assert all(took.values()), f"the batches were not spread over both workers: {took}"

    # the janitor, as an operator (or its deployment) runs it: a Running run silent for two heartbeat periods
    def swept() -> bool:
        done = console_json(cluster.environment, "janitor", "--missed-heartbeats", "2")
        return killed_run in done["crashed"]

    until(swept, "the janitor set the killed run Crashed", 4 * HEARTBEAT + 60)
    janitor_seconds = time.monotonic() - killed_at
    run = cluster.api.flow_run(killed_run)
    assert run["state"]["type"] == "CRASHED" and "no heartbeat" in run["state"]["message"]
    row, jobs = await batch_rows(cluster.audit_url, killed_run)
    assert row is not None and row.status == "CRASHED"
    assert [(job.job, job.status) for job in jobs] == [
        (EXTRACT, "COMPLETED"),
        (TRANSFORM, "COMPLETED"),
        (LOAD, "CRASHED"),
    ]

    slow_writes(tenants[SLOW], 0)
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps(rest_parameters(tenants[SLOW], SLOW)["credentials"]))
    restarted = console_json(cluster.environment, "restart", killed_run, "-t", SLOW, "-c", str(creds), "--no-seal")
    creds.unlink()
    resumed = restarted["batch_id"]
    ended(cluster, [resumed], 180)
    assert cluster.api.state(resumed) == "COMPLETED", cluster.logs()
    assert survivor.took(resumed)

    for tenant in TENANTS:
        assert_complete(tenants[tenant])
    row, jobs = await batch_rows(cluster.audit_url, resumed)
    assert row is not None and (row.status, row.resumed_from) == ("COMPLETED", killed_run)
    assert [job.message for job in jobs] == [f"reused from batch {killed_run}"] * 2 + [None]
    for tenant in TENANTS:
        last = resumed if tenant == SLOW else runs[tenant]
        row, _ = await batch_rows(cluster.audit_url, last)
        assert row is not None and row.status == "COMPLETED", (tenant, row)
    print(
        f"\nscale-out: {took} ({victim.name} killed with {held_at_kill} of {SLOW}'s {RECORDS} written); "
        f"janitor found it after {janitor_seconds:.0f}s; {survivor.name} resumed it"
    )
