"""The CLI run from a folder that is not the project, against a real `prefect server`: a batch type Prefect has
deployments for (served, or deployed from a project elsewhere) but that nothing here defines is accepted by the
commands that name one; sealing its credentials needs the hosts its definition names, so without them (or the
run's own `--base-url`s) the CLI says what to do instead of guessing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from prefect_restful_etl.deployments.cli.app import app
from prefect_restful_etl.deployments.serve import batch_deployment, batch_deployments
from prefect_restful_etl.flows.builder import build_flow
from prefect_restful_etl.flows.catalog import FOLDER_ENV, GENERIC_ENTRYPOINT, BatchFlow, attribute_of, batch_flows
from prefect_restful_etl.flows.keys import PRIVATE_KEY_ENV, PUBLIC_KEY_ENV
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, unseal

from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

CONSOLE_SCRIPT = str(Path(sys.executable).parent / "restful-etl")
TAGGED, UNTAGGED, NO_BATCH = "acme-orders", "legacy-orders", "not-a-batch"
CREDENTIALS = {"crm": {"token": "tok-never-printed"}, "accounting": {"api_key": "key-never-printed"}}
CRM, ACCOUNTING = "https://crm.acme.example", "http://accounting.acme.example:8080"


def elsewhere(name: str) -> BatchFlow:
    """A batch type of another project: the package's example under another name, found by no catalog here."""
    batch_type = batch_flows()["crm-to-accounting"].batch_type.model_copy(update={"name": name})
    return BatchFlow(build_flow(batch_type), GENERIC_ENTRYPOINT, attribute_of(name), "folder", "elsewhere")


@flow(name=NO_BATCH)
def not_a_batch() -> None:
    """Named as a batch type's deployment would be, but takes no tenant (as the janitor's)."""


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """`acme-orders` deployed as `restful-etl serve` deploys a batch type (tagged `batch-type:`), `legacy-orders`
    without the tag (a hand-written prefect.yaml), and a flow that is no batch under its own name."""
    made = [
        *batch_deployments(TAGGED, elsewhere(TAGGED)),
        batch_deployment(elsewhere(UNTAGGED), UNTAGGED),
        not_a_batch.to_deployment(name=NO_BATCH),
    ]
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        ids = [deployment.apply() for deployment in made]
    yield prefect_server
    for deployment_id in ids:
        httpx.delete(f"{prefect_server.api_url}/deployments/{deployment_id}", timeout=10)


@pytest.fixture
def keys() -> dict[str, str]:
    printed = CliRunner().invoke(app, ["keygen"]).stdout.split()
    return dict(line.split("=", 1) for line in printed)


@pytest.fixture
def somewhere(tmp_path: Path) -> Path:
    """An empty folder, not the project: no batch_types here."""
    folder = tmp_path / "somewhere"
    folder.mkdir()
    return folder


def cli(server: PrefectServer, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed `restful-etl`, as a user runs it in `cwd`, with no key and no batch types folder set."""
    environ = {k: v for k, v in os.environ.items() if k not in (FOLDER_ENV, PRIVATE_KEY_ENV, PUBLIC_KEY_ENV)}
    environ |= {**server.client_environment(), SEAL_KEY_ENV: "", "RESTFUL_ETL_HOME": str(cwd / ".etl"), **env}
    return subprocess.run(
        [CONSOLE_SCRIPT, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300, check=False
    )


def flow_run(server: PrefectServer, batch_id: str) -> dict[str, Any]:
    found = httpx.get(f"{server.api_url}/flow_runs/{batch_id}", timeout=10)
    found.raise_for_status()
    run: dict[str, Any] = found.json()
    name = httpx.get(f"{server.api_url}/deployments/{run['deployment_id']}", timeout=10).json()["name"]
    return run | {"deployment": name}


def tenant_runs(server: PrefectServer, tenant: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"tags": {"all_": [f"tenant:{tenant}"]}}}
    found = httpx.post(f"{server.api_url}/flow_runs/filter", json=body, timeout=10)
    found.raise_for_status()
    return list(found.json())


def created(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    batch_id: str = json.loads(done.stdout)["batch_id"]
    return batch_id


def test_run_resync_and_restart_take_a_batch_type_deployed_on_prefect_from_anywhere(
    deployed: PrefectServer, somewhere: Path
) -> None:
    sealed = somewhere / "acme.sealed"
    sealed.write_text("rpk1.sealed-elsewhere\n")  # sealed already: no host to work out here
    common = ["-b", TAGGED, "-t", "acme-anywhere", "-c", str(sealed), "--json"]

    incremental = flow_run(deployed, created(cli(deployed, somewhere, "run", *common)))
    assert incremental["deployment"] == TAGGED
    assert incremental["parameters"]["sealed_credentials"] == "rpk1.sealed-elsewhere"
    assert incremental["parameters"]["tenant_id"] == "acme-anywhere"
    resync = flow_run(deployed, created(cli(deployed, somewhere, "resync", *common)))
    assert resync["deployment"] == f"{TAGGED}-full-resync"

    restart = ["restart", incremental["id"], "-t", "acme-anywhere", "-c", str(sealed), "--json"]
    done = cli(deployed, somewhere, *restart)
    assert done.returncode == 0, done.stdout + done.stderr
    resumed = flow_run(deployed, json.loads(done.stdout)["batch_id"])
    assert resumed["parameters"]["resume_batch_id"] == incremental["id"] and resumed["deployment"] == TAGGED


def test_plain_credentials_are_not_sealed_for_hosts_nobody_here_knows_and_the_cli_says_what_to_do(
    deployed: PrefectServer, somewhere: Path, keys: dict[str, str]
) -> None:
    plain = somewhere / "creds.json"
    plain.write_text(json.dumps(CREDENTIALS))
    done = cli(
        deployed, somewhere, "run", "-b", TAGGED, "-t", "acme-unsealable", "-c", str(plain),
        "--base-url", f"crm={CRM}", **{PUBLIC_KEY_ENV: keys[PUBLIC_KEY_ENV]},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert f"{TAGGED!r} is deployed on Prefect but not defined here" in said and "accounting" in said
    assert FOLDER_ENV in said and "--base-url API=URL" in said
    assert "Traceback" not in said and "never-printed" not in done.stdout + done.stderr
    assert tenant_runs(deployed, "acme-unsealable") == []  # nothing was sent


def test_plain_credentials_are_sealed_for_the_base_urls_the_run_gives(
    deployed: PrefectServer, somewhere: Path, keys: dict[str, str]
) -> None:
    plain = somewhere / "creds.json"
    plain.write_text(json.dumps(CREDENTIALS))
    done = cli(
        deployed, somewhere, "run", "-b", TAGGED, "-t", "acme-sealed", "-c", str(plain), "--json",
        "--base-url", f"crm={CRM}", "--base-url", f"accounting={ACCOUNTING}", **{PUBLIC_KEY_ENV: keys[PUBLIC_KEY_ENV]},
    )  # fmt: skip
    parameters = flow_run(deployed, created(done))["parameters"]
    assert "credentials" not in parameters and "never-printed" not in json.dumps(parameters)
    private = {PRIVATE_KEY_ENV: keys[PRIVATE_KEY_ENV]}
    opened = unseal(parameters["sealed_credentials"], tenant_id="acme-sealed", environ=private)
    assert opened.hosts == {"crm": {"https://crm.acme.example:443"}, "accounting": {ACCOUNTING}}


def test_filters_take_deployed_batch_types_and_refuse_others_listing_them(
    deployed: PrefectServer, somewhere: Path
) -> None:
    for name in (TAGGED, UNTAGGED):
        done = cli(deployed, somewhere, "history", "-t", "acme-history", "-b", name, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout) == []
    refused = cli(deployed, somewhere, "history", "-t", "acme-history", "-b", NO_BATCH)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    listed = " ".join(refused.stderr.split())
    assert "--batch-type: one of [" in listed
    known = listed.split("one of [", 1)[1].split("]", 1)[0]
    assert repr(TAGGED) in known and repr(UNTAGGED) in known and repr(NO_BATCH) not in known
