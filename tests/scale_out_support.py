"""Helpers for the scale-out test: workers of one process work pool in processes of their own, found, killed and
stopped by PID, and the batches they ran, read from their logs and from Prefect's REST API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "restful-etl")
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), children first; a flow run's process may sit in a session of its
    own (Prefect isolates it), so a worker's process group does not hold it."""
    found: list[int] = []
    queue = [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except FileNotFoundError:
                continue
            found += children
            queue += children
    return found


class Worker:
    """`restful-etl worker --pool <pool> --name <name> --limit <limit>` (a janitor sweep, then Prefect's process
    worker) in a session of its own, polling every second; `kill()` is a machine dying, `stop()` an orderly end."""

    def __init__(self, name: str, pool: str, environment: dict[str, str], log: Path, limit: int = 1) -> None:
        self.name, self.log = name, log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [CONSOLE_SCRIPT, "worker", "--pool", pool, "--name", name, "--limit", str(limit)],
                env=os.environ | environment | {"PREFECT_WORKER_QUERY_SECONDS": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def took(self, flow_run_id: str) -> bool:
        """Whether this worker submitted the flow run (Prefect's worker logs each one it takes)."""
        return f"submitting flow run '{flow_run_id}'" in self.text()

    def kill(self) -> None:
        """SIGKILL to the worker, its process group and every flow run process it started: no hook, no finally."""
        if not self.alive:
            return
        below = descendants(self.process.pid)
        os.killpg(self.process.pid, signal.SIGKILL)
        for pid in below:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if not self.alive:
            return
        below = descendants(self.process.pid)
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        for pid in below:  # a flow run's process in a session of its own outlives its worker's group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, chars: int = 3000) -> str:
        return self.text()[-chars:]


class PrefectApi:
    """The REST calls the test makes, as any client of the server would."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def deployment_id(self, name: str) -> str:
        return str(self.client.get(f"/deployments/name/{name}").raise_for_status().json()["id"])

    def create_run(self, deployment_id: str, parameters: dict[str, Any]) -> str:
        body = {"parameters": parameters}
        answer = self.client.post(f"/deployments/{deployment_id}/create_flow_run", json=body)
        return str(answer.raise_for_status().json()["id"])

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/flow_runs/{flow_run_id}").raise_for_status().json())

    def state(self, flow_run_id: str) -> str:
        return str(self.flow_run(flow_run_id)["state"]["type"])


def console_json(environment: dict[str, str], *args: str) -> Any:
    """The installed console script's `--json` output, run as an operator runs it; fails on a non-zero exit."""
    done = subprocess.run(
        [CONSOLE_SCRIPT, *args, "--json"],
        check=False,
        env=os.environ | environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)
