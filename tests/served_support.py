"""A served deployment of crm-to-accounting for tests on the session's real Prefect server: `serve()` in a
subprocess of its own session, made as `restful-etl serve` makes its deployments (flows/serve.py), with runs
created through Prefect's REST API as any client would create them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect_rest import prefect_rest

from fixtures.servers.prefect import PrefectServer

_SERVE = """
import sys
from prefect import serve
from prefect_restful_etl.deployments.serve import batch_deployment
from prefect_restful_etl.flows.catalog import batch_flows
serve(batch_deployment(batch_flows()["crm-to-accounting"], sys.argv[1]), print_starting_message=False)
"""
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


class Served:
    """The runner in a subprocess; `stop()` (or `kill()`) ends it and the flow runs it started by its group."""

    def __init__(self, server: PrefectServer, environment: dict[str, str], log: Path, name: str) -> None:
        self.api = prefect_rest(server.api_url)
        self.log, self.name = log, name
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _SERVE, name],
                env=os.environ | server.client_environment() | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"} | environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def deployment_id(self) -> str | None:
        response = self.api.get(f"/deployments/name/crm-to-accounting/{self.name}")
        return str(response.json()["id"]) if response.status_code == 200 else None

    def deployment(self) -> dict[str, Any]:
        return dict(self.api.get(f"/deployments/name/crm-to-accounting/{self.name}").raise_for_status().json())

    def create_run(self, parameters: dict[str, Any], **body: Any) -> Any:
        """`POST /deployments/{id}/create_flow_run`, as any REST client creates a run; the raw answer."""
        deployment = self.deployment_id()
        assert deployment is not None
        return self.api.post(f"/deployments/{deployment}/create_flow_run", json={"parameters": parameters, **body})

    def start_run(self, parameters: dict[str, Any], **body: Any) -> str:
        return str(self.create_run(parameters, **body).raise_for_status().json()["id"])

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return dict(self.api.get(f"/flow_runs/{flow_run_id}").raise_for_status().json())

    def state(self, flow_run_id: str) -> str:
        return str(self.flow_run(flow_run_id)["state"]["type"])

    def cancel(self, flow_run_id: str) -> None:
        """What the UI's Cancel and `prefect flow-run cancel` do: propose Cancelling; the runner does the rest."""
        state = {"type": "CANCELLING", "name": "Cancelling", "message": "cancelled by the test"}
        self.api.post(f"/flow_runs/{flow_run_id}/set_state", json={"state": state}).raise_for_status()

    def flow_run_process(self) -> int:
        """The PID of the process the runner started for the flow run: its only child (Linux /proc)."""
        children = [
            pid
            for task in Path(f"/proc/{self.process.pid}/task").iterdir()
            for pid in (task / "children").read_text().split()
        ]
        assert len(children) == 1, f"the runner has children {children}"
        return int(children[0])

    def kill(self) -> None:
        """SIGKILL to the runner and every process it started: nothing of theirs runs afterwards."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

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
