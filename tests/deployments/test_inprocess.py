"""`restful-etl serve --in-process` (deployments/inprocess.py) on the session's real Prefect server, with runs
created through Prefect's REST API: a batch completes with its audit row; several tenants' batches run at once in
the one process; a run cancelled through the REST API ends Cancelled with its audit row CANCELLED; a run another
runner claimed first is left to it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_rest import prefect_rest
from restart_support import (
    assert_complete,
    audit_rows,
    rest_parameters,
    stall_writes,
    wait_for,
    wait_for_audit,
    written,
)
from served_support import FINAL, Served

from prefect_restful_etl.deployments import inprocess
from prefect_restful_etl.deployments import serve as serving
from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.deployments.serve import batch_deployment
from prefect_restful_etl.flows.catalog import FOLDER_ENV, batch_flows
from prefect_restful_etl.tasks.engine.redaction import MASK

from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

_SERVE = """
import sys
from prefect_restful_etl.deployments.inprocess import serve_in_process
from prefect_restful_etl.deployments.serve import batch_deployment
from prefect_restful_etl.flows.catalog import batch_flows
batch = batch_flows()["crm-to-accounting"]
serve_in_process([(batch_deployment(batch, sys.argv[1]), batch.flow)], poll_seconds=0.25)
"""


def flow_run_states(api: Any, flow_run_id: str) -> list[str]:
    """The run's states, oldest first."""
    answer = api.get("/flow_run_states/", params={"flow_run_id": flow_run_id}).raise_for_status().json()
    return [state["type"] for state in sorted(answer, key=lambda state: state["timestamp"])]


class InProcess(Served):
    """The in-process runner in a subprocess of its own session: by default one deployment of crm-to-accounting
    named `name`; with `argv`, that command (the CLI's `serve --in-process`)."""

    def __init__(
        self,
        server: PrefectServer,
        environment: dict[str, str],
        log: Path,
        name: str,
        *,
        argv: list[str] | None = None,
    ) -> None:
        self.api = prefect_rest(server.api_url)
        self.log, self.name = log, name
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv or [sys.executable, "-c", _SERVE, name],
                env=os.environ | server.client_environment() | environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def states(self, flow_run_id: str) -> list[str]:
        return flow_run_states(self.api, flow_run_id)


@pytest.fixture
async def served(
    prefect_server: PrefectServer, etl_home: Path, request: pytest.FixtureRequest
) -> AsyncIterator[InProcess]:
    runner = InProcess(
        prefect_server, {"RESTFUL_ETL_HOME": str(etl_home)}, etl_home / "serve.log", request.node.name[:40]
    )
    try:
        await wait_for(lambda: runner.deployment_id() is not None, "the served deployment registered")
        yield runner
    finally:
        runner.stop()


async def test_the_cli_serves_in_process_and_a_rest_run_completes_with_its_audit_row(
    prefect_server: PrefectServer, etl_home: Path, demo_state: DemoApis
) -> None:
    """`restful-etl serve --in-process` as a user starts it: every batch type's deployments, runs in its process."""
    command = [
        sys.executable,
        "-m",
        "prefect_restful_etl.deployments.cli.app",
        "serve",
        "--in-process",
        "--poll",
        "0.25",
    ]
    environment = {"RESTFUL_ETL_HOME": str(etl_home)}
    runner = InProcess(prefect_server, environment, etl_home / "serve.log", "crm-to-accounting", argv=command)
    try:
        await wait_for(lambda: runner.deployment_id() is not None, "serve registered crm-to-accounting", timeout=120)
        batch = runner.start_run(rest_parameters(demo_state, "inproc-one"))
        await wait_for(lambda: runner.state(batch) in FINAL, "the run ended", timeout=120)
        assert runner.state(batch) == "COMPLETED", runner.log_tail()
        row, jobs = await audit_rows(etl_home, batch)
        assert row is not None and row.status == "COMPLETED" and row.tenant_id == "inproc-one"
        assert [job.status for job in jobs] == ["COMPLETED"] * 3
        assert runner.flow_run(batch)["parameters"]["credentials"]["crm"]["token"] == MASK
        tasks = Path(f"/proc/{runner.process.pid}/task").iterdir()
        children = [pid for task in tasks for pid in (task / "children").read_text().split()]
        assert children == [], "the run ran in the serving process, not a process of its own"
        assert demo_state.crm_token not in (etl_home / "serve.log").read_text(errors="replace")
    finally:
        runner.stop()


@pytest.fixture
def tenants() -> Iterator[list[DemoApis]]:
    """Three tenants, each with demo APIs of its own."""
    with ExitStack() as stack:
        yield [stack.enter_context(DemoApis(crm_customers=30)) for _ in range(3)]


async def test_several_tenants_batches_run_at_once_in_the_one_process(
    served: InProcess, etl_home: Path, tenants: list[DemoApis]
) -> None:
    for apis in tenants:
        stall_writes(apis, after=5, seconds=2, times=1)  # each batch waits 2 s mid-load: long enough to overlap
    batches = [served.start_run(rest_parameters(apis, f"tenant-{n}")) for n, apis in enumerate(tenants)]

    await wait_for(lambda: all(served.state(b) in FINAL for b in batches), "every run ended", timeout=120)

    assert [served.state(b) for b in batches] == ["COMPLETED"] * 3, served.log_tail()
    rows = [(await audit_rows(etl_home, b))[0] for b in batches]
    assert all(row is not None and row.status == "COMPLETED" for row in rows)
    assert max(row.started_at for row in rows if row) < min(row.ended_at for row in rows if row and row.ended_at)
    assert all(written(apis) == 30 for apis in tenants)


async def test_a_run_set_cancelling_through_the_rest_api_ends_cancelled_with_its_audit_row(
    served: InProcess, etl_home: Path, demo_state: DemoApis
) -> None:
    stall_writes(demo_state, after=20)
    batch = served.start_run(rest_parameters(demo_state, "inproc-cancel"))
    await wait_for(lambda: written(demo_state) >= 20, "the load wrote 20 customers")

    served.cancel(batch)

    await wait_for(lambda: served.state(batch) == "CANCELLED", "Prefect says Cancelled", timeout=30)
    await wait_for_audit(etl_home, batch, "CANCELLED", timeout=30)
    _, jobs = await audit_rows(etl_home, batch)
    assert [job.status for job in jobs] == ["COMPLETED", "COMPLETED", "CANCELLED"]
    assert "CRASHED" not in served.states(batch)
    assert served.process.poll() is None, "the runner lives on"
    assert served.flow_run(batch)["parameters"]["credentials"]["crm"]["token"] == MASK

    # the next run of the tenant is not held up by the cancelled one's lease
    demo_state.reset()  # no stall, the accounting API empty
    after = served.start_run(rest_parameters(demo_state, "inproc-cancel"))
    await wait_for(lambda: served.state(after) in FINAL, "the next run ended", timeout=120)
    assert served.state(after) == "COMPLETED", served.log_tail()


async def test_sigterm_stops_claiming_cancels_what_runs_and_pauses_the_schedules(
    served: InProcess, etl_home: Path, demo_state: DemoApis
) -> None:
    """As Prefect's runner shuts down: its runs Cancelled (their hooks run, `restful-etl restart` resumes them)."""
    stall_writes(demo_state, after=20)
    batch = served.start_run(rest_parameters(demo_state, "inproc-shutdown"))
    await wait_for(lambda: written(demo_state) >= 20, "the load wrote 20 customers")

    os.killpg(served.process.pid, signal.SIGTERM)

    assert await asyncio.to_thread(served.process.wait, 60) == 0, served.log_tail()
    assert served.state(batch) == "CANCELLED"
    await wait_for_audit(etl_home, batch, "CANCELLED", timeout=5)
    assert served.deployment()["paused"] is True
    later = served.start_run(rest_parameters(demo_state, "inproc-shutdown"))
    await asyncio.sleep(1)
    assert served.state(later) == "SCHEDULED"  # nobody claimed it
    # it holds the session demo APIs' plain credentials, which later tests look for in Prefect's database
    served.api.delete(f"/flow_runs/{later}").raise_for_status()


async def test_a_run_another_runner_claimed_first_is_not_run_twice(
    prefect_server: PrefectServer, etl_home: Path, demo_state: DemoApis
) -> None:
    """The race the claim settles: this runner read a run as Scheduled, another one proposed Pending first."""
    batch_flow = batch_flows()["crm-to-accounting"]
    rest = prefect_rest(prefect_server.api_url)
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        made = await asyncio.to_thread(batch_deployment, batch_flow, "inprocess-claimed")  # (sync: made in a thread)
        deployment = await made.aapply()  # registered; no runner polls it
        parameters = rest_parameters(demo_state, "inproc-claimed")
        created = rest.post(f"/deployments/{deployment}/create_flow_run", json={"parameters": parameters})
        batch = str(created.raise_for_status().json()["id"])
        async with get_client() as client:
            due = await client.get_scheduled_flow_runs_for_deployments(deployment_ids=[deployment])
            assert [str(run.id) for run in due] == [batch]
            pending = {"type": "PENDING", "name": "Pending"}
            rest.post(f"/flow_runs/{batch}/set_state", json={"state": pending}).raise_for_status()  # the other's claim

            class Stale:  # the answer this runner had before the other runner's claim
                def __getattr__(self, name: str) -> Any:
                    return getattr(client, name)

                async def get_scheduled_flow_runs_for_deployments(self, **_: Any) -> list[Any]:
                    return due

            runner = inprocess.InProcessRunner({deployment: batch_flow.flow})
            await runner.poll_once(Stale())  # type: ignore[arg-type]
            assert runner.running == {}
    await asyncio.sleep(1)
    assert flow_run_states(rest, batch) == ["SCHEDULED", "PENDING"]
    row, _ = await audit_rows(etl_home, batch)
    assert row is None
    rest.delete(f"/flow_runs/{batch}")
    rest.close()


async def test_two_runners_of_one_deployment_run_each_run_once(
    prefect_server: PrefectServer, served: InProcess, etl_home: Path, tenants: list[DemoApis]
) -> None:
    """Both poll the same deployment and race for its runs: each run is claimed, run and audited once."""
    second = InProcess(prefect_server, {"RESTFUL_ETL_HOME": str(etl_home)}, etl_home / "second.log", served.name)
    try:
        await asyncio.sleep(2)  # both polling
        batches = [served.start_run(rest_parameters(apis, f"race-{n}")) for n, apis in enumerate(tenants)]
        batches += [served.start_run(rest_parameters(apis, f"race-{n}")) for n, apis in enumerate(tenants)]
        await wait_for(lambda: all(served.state(b) in FINAL for b in batches), "every run ended", timeout=120)
    finally:
        second.stop()
    assert [served.state(b) for b in batches] == ["COMPLETED"] * len(batches), served.log_tail()
    assert all(served.states(b).count("RUNNING") == 1 for b in batches)
    for apis in tenants:
        assert_complete(apis)  # one row per key: nothing written twice


def test_serve_in_process_serves_what_serve_serves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same deployments (names, tags, schedules, no parameter check), each with the flow its runs run."""
    given: dict[str, Any] = {}
    monkeypatch.setattr(serving, "sweep_once", lambda: None)  # the janitor's start-up sweep needs a Prefect API
    # serve names the batch types folder in the process's environment for its runs: undone after this test
    monkeypatch.setenv(FOLDER_ENV, str(tmp_path / "batch_types"))
    monkeypatch.setattr(serving, "serve", lambda *deployments, **options: given.update(serve=deployments))
    monkeypatch.setattr(inprocess, "serve_in_process", lambda pairs, **options: given.update(pairs=pairs, **options))
    serving.serve_all(limit=4, tenant_id="acme")
    serving.serve_all(limit=4, tenant_id="acme", in_process=True, poll=0.3)

    def shown(deployment: Any) -> tuple[Any, ...]:
        schedules = [(s.schedule.interval, s.active, s.parameters) for s in deployment.schedules]
        return deployment.name, deployment.flow_name, sorted(deployment.tags), schedules, deployment.entrypoint

    assert [shown(d) for d, _ in given["pairs"]] == [shown(d) for d in given["serve"]]
    assert all(d.enforce_parameter_schema is False for d, _ in given["pairs"] if d.flow_name != "restful-etl-janitor")
    assert all(d.flow_name == flow.name for d, flow in given["pairs"])
    assert (given["limit"], given["poll_seconds"]) == (4, 0.3)
