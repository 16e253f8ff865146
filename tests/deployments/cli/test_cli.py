"""The CLI without a server: keygen and seal, how a credentials file becomes run parameters, the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect.flows import load_flow_from_entrypoint
from typer.testing import CliRunner

from prefect_restful_etl.deployments.cli.app import app
from prefect_restful_etl.deployments.cli.sealing import RunApis, credential_parameters, read_credentials
from prefect_restful_etl.flows.catalog import batch_flows, deployment_name
from prefect_restful_etl.flows.keys import PRIVATE_KEY_ENV, PUBLIC_KEY_ENV
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, unseal
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig

CREDENTIALS = {"crm": {"token": "tok-never-printed"}, "accounting": {"api_key": "key-never-printed"}}


@pytest.fixture
def creds_file(tmp_path: Path) -> Path:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(CREDENTIALS))
    return path


BASE_URLS = ["--base-url", "crm=http://127.0.0.1:8001", "--base-url", "accounting=http://127.0.0.1:8002"]
NO_KEYS = {SEAL_KEY_ENV: "", PRIVATE_KEY_ENV: "", PUBLIC_KEY_ENV: "", "PREFECT_API_URL": ""}


def keygen() -> dict[str, str]:
    printed = CliRunner().invoke(app, ["keygen"]).stdout.split()
    return dict(line.split("=", 1) for line in printed)


def test_keygen_makes_a_pair_and_the_public_key_alone_seals_for_the_tenant_and_the_runs_hosts(creds_file: Path) -> None:
    pair = keygen()
    sealed = CliRunner().invoke(
        app, ["seal", str(creds_file), "-t", "acme", *BASE_URLS], env={**NO_KEYS, PUBLIC_KEY_ENV: pair[PUBLIC_KEY_ENV]}
    )
    assert sealed.exit_code == 0, sealed.output
    assert "never-printed" not in sealed.output and sealed.stdout.startswith("rpk1.")
    opened = unseal(sealed.stdout, tenant_id="acme", environ={PRIVATE_KEY_ENV: pair[PRIVATE_KEY_ENV]})
    assert opened.credentials["crm"].token is not None
    assert opened.hosts == {"crm": {"http://127.0.0.1:8001"}, "accounting": {"http://127.0.0.1:8002"}}


def test_keygen_writes_the_private_key_to_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["keygen", "--private-key", str(tmp_path / "k"), "--public-key", str(tmp_path / "k.pub")]
    )
    assert result.exit_code == 0 and result.stdout == ""
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k.pub").read_text().startswith("restful-etl-public:")


def test_seal_symmetric_uses_the_fernet_key_and_host_binds_an_api_elsewhere(creds_file: Path) -> None:
    key = CliRunner().invoke(app, ["keygen", "--symmetric"]).stdout.strip()
    sealed = CliRunner().invoke(
        app,
        [
            "seal",
            str(creds_file),
            "-t",
            "acme",
            "--symmetric",
            "--host",
            "crm=https://a.example",
            "--host",
            "crm=https://b.example",
        ],
        env={**NO_KEYS, SEAL_KEY_ENV: key},
    )
    assert sealed.exit_code == 0, sealed.output
    opened = unseal(sealed.stdout, tenant_id="acme", environ={SEAL_KEY_ENV: key})
    assert opened.hosts["crm"] == {"https://a.example:443", "https://b.example:443"}
    assert opened.hosts["accounting"] == {"http://127.0.0.1:8002"}  # the batch type's own base URL


def test_seal_without_a_key_fails_with_one_line(creds_file: Path) -> None:
    result = CliRunner().invoke(app, ["seal", str(creds_file), "-t", "acme"], env=NO_KEYS)
    assert result.exit_code == 2 and "public key" in result.output and "Traceback" not in result.output


APIS = RunApis(
    "crm-to-accounting",
    {
        name: ApiConfig.model_validate({"name": name, "base_url": f"https://{name}.example.com"})
        for name in ("crm", "accounting")
    },
)


@pytest.mark.parametrize(
    "sealing,key,sealed",
    [
        (None, "public", True),
        (None, "fernet", False),
        (None, None, False),
        (True, "fernet", True),
        (False, "public", False),
    ],
    ids=["public-key-seals", "fernet-only-if-asked", "no-key-plain", "seal-asked", "no-seal"],
)
async def test_a_json_file_is_sealed_when_a_public_key_is_at_hand(
    sealing: bool | None, key: str | None, sealed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in NO_KEYS:
        monkeypatch.delenv(name, raising=False)
    pair = keygen()
    if key == "public":
        monkeypatch.setenv(PUBLIC_KEY_ENV, pair[PUBLIC_KEY_ENV])
    elif key == "fernet":
        monkeypatch.setenv(SEAL_KEY_ENV, CliRunner().invoke(app, ["keygen", "--symmetric"]).stdout.strip())
    parameters = await credential_parameters(json.dumps(CREDENTIALS), tenant_id="acme", apis=APIS, sealing=sealing)
    if sealed:
        assert list(parameters) == ["sealed_credentials"] and "never-printed" not in parameters["sealed_credentials"]
    else:
        assert parameters == {"credentials": CREDENTIALS}


async def test_seal_asked_without_any_key_fails_before_anything_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NO_KEYS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="--seal"):
        await credential_parameters(json.dumps(CREDENTIALS), tenant_id="acme", apis=APIS, sealing=True)


async def test_anything_else_in_the_file_is_taken_as_sealed() -> None:
    parameters = await credential_parameters("  rpk1.token\n", tenant_id="acme", apis=APIS)
    assert parameters == {"sealed_credentials": "rpk1.token"}


def test_a_broken_credentials_file_fails_before_anything_is_sent() -> None:
    with pytest.raises(ConfigError, match="credentials file"):
        read_credentials('{"crm": {"tokn": "x"}}')


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
        "publish-key",
        "janitor",
        "worker",
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


@pytest.mark.parametrize("command", ["run", "resync", "restart"])
def test_commands_that_send_credentials_leave_sealing_to_the_key_at_hand_unless_told(command: str) -> None:
    """Neither --seal nor --no-seal: seal when a public key is at hand (tests/deployments/test_operations.py
    runs `restful-etl run` so, and finds the ciphertext in Prefect)."""
    import inspect

    from prefect_restful_etl.deployments.cli import app as cli

    assert inspect.signature(getattr(cli, command)).parameters["seal_"].default is None
