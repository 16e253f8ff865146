"""What `restful-etl init` writes (deployments/cli/starter.py), as Prefect reads it: its prefect.yaml names no
folder of the machine it was written on, and `prefect deploy --all` run in a clone of the project elsewhere points
the workers' pull step at the clone, where the generic entrypoint finds the batch type."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from prefect_restful_etl.deployments.cli.app import app
from prefect_restful_etl.flows.catalog import FOLDER_ENV

from fixtures.servers.prefect import PrefectServer

NAME = "cloned-sync"
SET_WORKING_DIRECTORY = "prefect.deployments.steps.set_working_directory"


def init(directory: Path) -> Path:
    result = CliRunner().invoke(app, ["init", str(directory), "--name", NAME])
    assert result.exit_code == 0, result.output
    return directory


def test_prefect_yaml_names_no_folder_of_the_machine_it_was_written_on(tmp_path: Path) -> None:
    project = init(tmp_path / "written-here")
    text = (project / "prefect.yaml").read_text()
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text


def prefect(*args: str, cwd: Path, server: PrefectServer) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", FOLDER_ENV)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env | server.client_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.integration
def test_prefect_deploy_in_a_clone_elsewhere_points_the_workers_pull_step_at_the_clone(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    written = init(tmp_path / "written-here")
    clone = tmp_path / "cloned" / "elsewhere"
    shutil.copytree(written, clone)
    shutil.rmtree(written)  # the folder init ran in is gone: only the clone is left
    api = prefect_server.api_url
    pool = httpx.post(f"{api}/work_pools/", json={"name": "restful-etl", "type": "process"}, timeout=10)
    assert pool.status_code in (201, 409), pool.text
    deployed = prefect("-m", "prefect", "--no-prompt", "deploy", "--all", cwd=clone, server=prefect_server)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    found = [httpx.get(f"{api}/deployments/name/{NAME}/{NAME}{s}", timeout=10) for s in ("", "-full-resync")]
    try:
        for response in found:
            assert response.status_code == 200, response.text
            (step,) = response.json()["pull_steps"]
            assert step[SET_WORKING_DIRECTORY]["directory"] == str(clone.resolve())

        # The pull step as a worker's flow-run process runs it, from a folder of its own: the generic entrypoint
        # then finds the batch type in the clone's batch_types/.
        steps, entrypoint = found[0].json()["pull_steps"], found[0].json()["entrypoint"]
        script = (
            "import asyncio, json, os, sys\n"
            "from prefect.deployments.steps.core import run_steps\n"
            "from prefect.flows import load_flow_from_entrypoint\n"
            "asyncio.run(run_steps(json.loads(sys.argv[1])))\n"
            "print(json.dumps([os.getcwd(), load_flow_from_entrypoint(sys.argv[2]).name]))\n"
        )
        elsewhere = tmp_path / "worker"
        elsewhere.mkdir()
        pulled = prefect("-c", script, json.dumps(steps), entrypoint, cwd=elsewhere, server=prefect_server)
        assert pulled.returncode == 0, pulled.stdout[-3000:] + pulled.stderr[-3000:]
        assert json.loads(pulled.stdout.splitlines()[-1]) == [str(clone.resolve()), NAME]
    finally:
        for response in found:
            if response.status_code == 200:
                httpx.delete(f"{api}/deployments/{response.json()['id']}", timeout=10)
