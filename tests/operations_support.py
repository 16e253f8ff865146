"""Helpers for the operations test: every batch type served by `restful-etl serve` in a subprocess against the
session's Prefect server, the CLI in-process (typer's runner) or as the console script, and Prefect's REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_rest import prefect_rest
from typer.testing import CliRunner, Result

from prefect_restful_etl.deployments.cli.app import app

from fixtures.servers.prefect import PrefectServer

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "restful-etl")
DEPLOYMENTS = ("crm-to-accounting/crm-to-accounting", "crm-to-accounting/crm-to-accounting-full-resync")


def until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll until `condition()` is truthy and return it; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)
    return value


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started with `start_new_session=True`, and its children (flow runs), by its PID."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


class Operations:
    """What an operator has: a Prefect server, workers serving the batch types, the CLI and its settings."""

    def __init__(self, server: PrefectServer, home: Path, settings: dict[str, str]) -> None:
        self.server, self.home, self.settings = server, home, settings
        self.env = {**os.environ, **server.client_environment(), **settings}
        self.rest = prefect_rest(server.api_url)
        self.log = home / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    # --- the served batch types -------------------------------------------------------------------------

    def serve(self) -> None:
        with self.log.open("wb") as out:  # its own session: stopped with its flow runs by process group
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect_restful_etl.deployments.cli.app", "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        until(lambda: all(self.deployment(name) for name in DEPLOYMENTS) or self._died(), "both deployments served")
        assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]

    def _died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop_serving(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_group(process)

    def stop(self) -> None:
        self.stop_serving()
        self.rest.close()

    @contextmanager
    def worker(self, pool: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
        """`restful-etl worker --pool <pool>` (a janitor sweep, then `prefect worker start`) in a session of its
        own, polling every second; stopped by PID."""
        env = {**self.env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [CONSOLE_SCRIPT, "worker", "--pool", pool],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            yield process
        finally:
            stop_group(process)

    # --- the CLI ----------------------------------------------------------------------------------------

    @contextmanager
    def prefect(self) -> Iterator[None]:
        """This process's Prefect client pointed at the server (the session may hold a test harness)."""
        with temporary_settings(updates={PREFECT_API_URL: self.server.api_url}):
            yield

    def cli(self, *args: str) -> Result:
        with self.prefect():
            return CliRunner().invoke(app, list(args), env=self.settings)

    def cli_json(self, *args: str, exit_code: int = 0) -> Any:
        """A command's `--json` output; `--watch` exits 1 when the batch did not complete."""
        result = self.cli(*args, "--json")
        assert result.exit_code == exit_code, result.output
        return json.loads(result.stdout)

    def console(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed `restful-etl` console script, as a user runs it."""
        return subprocess.run(
            [CONSOLE_SCRIPT, *args], check=False, env=self.env, capture_output=True, text=True, timeout=300
        )

    # --- Prefect's REST API -----------------------------------------------------------------------------

    def deployment(self, name: str) -> dict[str, Any] | None:
        response = self.rest.get(f"/deployments/name/{name}")
        return response.json() if response.status_code == 200 else None

    def flow_run(self, batch_id: str) -> dict[str, Any]:
        return dict(self.rest.get(f"/flow_runs/{batch_id}").raise_for_status().json())

    def artifacts(self, batch_id: str) -> dict[str, dict[str, Any]]:
        body = {"artifacts": {"flow_run_id": {"any_": [batch_id]}}}
        return {a["key"]: a for a in self.rest.post("/artifacts/filter", json=body).raise_for_status().json()}

    def events(self, batch_id: str) -> list[dict[str, Any]]:
        body = {
            "filter": {
                "any_resource": {"id": [f"restful-etl.batch.{batch_id}"]},
                "occurred": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
            },
            "limit": 50,
        }  # the API's most per page; a batch of three jobs emits about a dozen
        return list(self.rest.post("/events/filter", json=body).raise_for_status().json()["events"])

    def task_runs(self, batch_id: str) -> list[dict[str, Any]]:
        body = {"task_runs": {"flow_run_id": {"any_": [batch_id]}}}
        return list(self.rest.post("/task_runs/filter", json=body).raise_for_status().json())

    def logs(self, batch_id: str) -> list[str]:
        body = {"logs": {"flow_run_id": {"any_": [batch_id]}}, "limit": 200}
        return [log["message"] for log in self.rest.post("/logs/filter", json=body).raise_for_status().json()]

    def settled(self, batch_id: str, timeout: float = 60.0) -> list[str]:
        """Wait until everything the batch's run sends Prefect is stored, and return its logs: the flow run in a
        final state, its last log line ("Finished in state ...") and its batch.finished event persisted.
        `--watch` returns on that event as the websocket brings it, before the run ends and the server writes."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
        until(lambda: self.flow_run(batch_id)["state"]["type"] in final, f"flow run {batch_id} ended", timeout)
        logs = until(
            lambda: (got := self.logs(batch_id)) and any("Finished in state" in m for m in got) and got,
            f"flow run {batch_id}'s last log line stored",
            timeout,
        )
        until(
            lambda: any(e["event"] == "restful-etl.batch.finished" for e in self.events(batch_id)),
            f"batch {batch_id}'s finished event stored",
            timeout,
        )
        return list(logs)
