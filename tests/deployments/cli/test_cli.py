"""The CLI without a server: keygen and seal, how a credentials file becomes run parameters, the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.flows import load_flow_from_entrypoint
from typer.testing import CliRunner

from prefect_restful_etl.deployments.cli.app import app
from prefect_restful_etl.deployments.cli.client import credential_parameters
from prefect_restful_etl.flows.catalog import batch_flows, deployment_name
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, unseal
from prefect_restful_etl.tasks.engine.exceptions import ConfigError

CREDENTIALS = {"crm": {"token": "tok-never-printed"}, "accounting": {"api_key": "key-never-printed"}}


@pytest.fixture
def creds_file(tmp_path: Path) -> Path:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(CREDENTIALS))
    return path


def test_keygen_then_seal_prints_ciphertext_only_the_key_opens(creds_file: Path) -> None:
    runner = CliRunner()
    key = runner.invoke(app, ["keygen"]).stdout.strip()
    sealed = runner.invoke(app, ["seal", str(creds_file)], env={SEAL_KEY_ENV: key})
    assert sealed.exit_code == 0, sealed.output
    assert "never-printed" not in sealed.output
    assert unseal(sealed.stdout, key)["crm"].token is not None


def test_seal_without_a_key_fails_with_one_line(creds_file: Path) -> None:
    result = CliRunner().invoke(app, ["seal", str(creds_file)], env={SEAL_KEY_ENV: ""})
    assert result.exit_code == 2 and SEAL_KEY_ENV in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("seal_it", [False, True], ids=["plain", "sealed-here"])
def test_a_json_file_is_plain_credentials_unless_sealed_here(seal_it: bool) -> None:
    key = CliRunner().invoke(app, ["keygen"]).stdout.strip()
    parameters = credential_parameters(json.dumps(CREDENTIALS), seal_key=key if seal_it else None)
    if seal_it:
        assert list(parameters) == ["sealed_credentials"] and "never-printed" not in parameters["sealed_credentials"]
    else:
        assert parameters == {"credentials": CREDENTIALS}


def test_anything_else_in_the_file_is_taken_as_sealed() -> None:
    assert credential_parameters("  gAAAAAB-token\n") == {"sealed_credentials": "gAAAAAB-token"}


def test_a_broken_credentials_file_fails_before_anything_is_sent() -> None:
    with pytest.raises(ConfigError, match="credentials file"):
        credential_parameters('{"crm": {"tokn": "x"}}')


def test_the_catalog_finds_each_batch_type_and_its_entrypoint_loads_it() -> None:
    flows = batch_flows()
    assert "crm-to-accounting" in flows
    found = flows["crm-to-accounting"]
    assert found.entrypoint == "prefect_restful_etl.flows.crm_to_accounting.crm_to_accounting"
    assert load_flow_from_entrypoint(found.entrypoint).name == "crm-to-accounting"
    assert deployment_name("crm-to-accounting", full_resync=True) == "crm-to-accounting/crm-to-accounting-full-resync"


def test_every_command_is_there() -> None:
    result = CliRunner().invoke(app, ["--help"])
    for command in (
        "run",
        "resync",
        "restart",
        "cancel",
        "watch",
        "status",
        "history",
        "last-sync",
        "connected-since",
        "errors",
        "blocks",
        "serve",
        "seal",
        "keygen",
    ):
        assert command in result.output


@pytest.mark.parametrize(
    "command,default",
    [
        ("run", "the only batch type there is"),
        ("resync", "the only batch type there is"),
        ("status", "every batch type"),
        ("history", "every batch type"),
        ("last-sync", "every batch type"),
        ("connected-since", "every batch type"),
    ],
)
def test_the_batch_type_option_says_what_leaving_it_out_means(command: str, default: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert result.exit_code == 0 and f"Default: {default}." in " ".join(result.output.split())


@pytest.mark.parametrize("command", ["status", "history", "last-sync", "connected-since"])
def test_an_unknown_batch_type_is_refused_before_anything_is_asked(command: str) -> None:
    result = CliRunner().invoke(app, [command, "-t", "acme", "-b", "no-such-batch-type"])
    assert result.exit_code == 2 and "--batch-type: one of" in result.output
