"""No secret anywhere after a batch run through a deployment, as a REST client creates runs: Prefect's database
files, results and logs, the audit database, the stage. Called in-process a flow's SecretStr parameters are
stored masked by Prefect itself; a deployment run created through the REST API stores what it was sent.

Each test has demo APIs of its own, so their secrets are that test's alone: no other test sent them anywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import served_support
from callback_support import CallbackReceiver
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_rest import prefect_rest
from restart_support import rest_parameters, wait_for
from secrets_support import files_holding, rows_holding
from served_support import FINAL, Served
from typer.testing import CliRunner

from prefect_restful_etl.deployments.cli.app import app
from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.flows.hooks import FLOW_NAME
from prefect_restful_etl.flows.keys import PRIVATE_KEY_ENV, PUBLIC_KEY_VARIABLE, KeyPair, generate_key_pair
from prefect_restful_etl.tasks.engine.redaction import MASK

from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration


@pytest.fixture
def apis() -> Iterator[DemoApis]:
    with DemoApis(crm_customers=50) as demo:
        yield demo


@pytest.fixture
def keys() -> KeyPair:
    return generate_key_pair()


@pytest.fixture
async def served(
    prefect_server: PrefectServer, etl_home: Path, redis_url: str, keys: KeyPair, request: pytest.FixtureRequest
) -> AsyncIterator[Served]:
    """The workers: the private key, a Redis stage kept after the batch (so its records are there to search)."""
    settings = {
        "RESTFUL_ETL_HOME": str(etl_home),
        "RESTFUL_ETL_STAGE_URL": redis_url,
        "RESTFUL_ETL_KEEP_STAGE": "true",
        PRIVATE_KEY_ENV: keys.private,
    }
    runner = Served(prefect_server, settings, etl_home / "serve.log", "secrets-test")
    try:
        await wait_for(lambda: runner.deployment_id() is not None, "the served deployment registered")
        yield runner
    finally:
        runner.stop()


def secrets_of(apis: DemoApis) -> list[str]:
    return [apis.crm_token, apis.accounting_api_key]


async def cli(server: PrefectServer, *args: str, env: dict[str, str] | None = None) -> Any:
    """The CLI as a user runs it against the server; in a thread, since each command runs its own event loop."""

    def invoke() -> Any:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            return CliRunner().invoke(app, list(args), env=env)

    return await asyncio.to_thread(invoke)


async def ended(served: Served, batch_id: str, timeout: float = 120.0) -> dict[str, Any]:
    """The run once it is final and the last lines about it are stored (Prefect ships logs in the background):
    its engine's "Finished in state", or for a crashed run the runner's crash hook's end."""
    await wait_for(lambda: served.state(batch_id) in FINAL, f"flow run {batch_id} ended", timeout)
    last = ("Finished in state", "Hook 'mark_crashed' finished running")
    await wait_for(
        lambda: any(line.startswith(last) for line in logs(served, batch_id)),
        f"the last log line of {batch_id}",
    )
    return served.flow_run(batch_id)


def logs(served: Served, batch_id: str) -> list[str]:
    body = {"logs": {"flow_run_id": {"any_": [batch_id]}}, "limit": 200}
    return [log["message"] for log in served.api.post("/logs/filter", json=body).raise_for_status().json()]


def staged(redis_url: str) -> dict[str, str]:
    """Every stage key and what it holds, as text."""
    found = {}
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match="restful-etl:*"):
            kind = client.type(key).decode()
            if kind == "string":
                value: Any = client.get(key)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "set":
                value = client.smembers(key)
            else:
                value = client.zrange(key, 0, -1)
            found[key.decode()] = repr(value)
    return found


@pytest.fixture
async def published(prefect_server: PrefectServer, keys: KeyPair) -> AsyncIterator[None]:
    """The workers' public key published as the Prefect Variable (`restful-etl publish-key` on a worker), and
    removed again: the session's server is shared, and other tests' clients would seal with it."""
    done = await cli(prefect_server, "publish-key", env={PRIVATE_KEY_ENV: keys.private})
    assert done.exit_code == 0, done.output
    yield
    with prefect_rest(prefect_server.api_url) as rest:
        rest.delete(f"/variables/name/{PUBLIC_KEY_VARIABLE}").raise_for_status()


async def test_a_public_key_sealed_run_completes_and_no_file_of_prefect_or_ours_holds_a_secret(
    prefect_server: PrefectServer,
    served: Served,
    keys: KeyPair,
    apis: DemoApis,
    etl_home: Path,
    redis_url: str,
    tmp_path: Path,
    published: None,
) -> None:
    """The workers publish their public key; a caller seals with it alone (no key of its own) and creates the
    run through the REST API. Prefect only ever holds ciphertext: its database, WAL included, holds no secret."""
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"crm": {"token": apis.crm_token}, "accounting": {"api_key": apis.accounting_api_key}}))
    urls = ["--base-url", f"crm={apis.crm_url}", "--base-url", f"accounting={apis.accounting_url}"]
    sealed = await cli(prefect_server, "seal", str(creds), "-t", "vault", *urls, env={PRIVATE_KEY_ENV: ""})
    creds.unlink()
    assert sealed.exit_code == 0, sealed.output
    token = sealed.stdout.strip()
    assert token.startswith("rpk1.")

    parameters = {"tenant_id": "vault", "sealed_credentials": token, "full_refresh": True}
    batch_id = served.start_run(parameters | {"base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url}})
    run = await ended(served, batch_id)

    assert run["state"]["type"] == "COMPLETED", served.log_tail()
    assert run["parameters"]["sealed_credentials"] == token and run["parameters"]["credentials"] == {}
    secrets = secrets_of(apis)
    assert files_holding(prefect_server.home, secrets) == []  # the database, its WAL, results, the server's log
    assert files_holding(etl_home, secrets) == []  # the audit database and its WAL, the runner's log
    assert not any(s in line for line in logs(served, batch_id) for s in secrets)
    stage = staged(redis_url)
    assert any(f"restful-etl:vault:{batch_id}:" in key for key in stage)  # the batch's records are there
    assert not any(s in value for value in stage.values() for s in secrets)


async def test_a_plain_run_created_through_the_rest_api_is_masked_and_no_table_row_holds_a_secret(
    prefect_server: PrefectServer, served: Served, apis: DemoApis, etl_home: Path
) -> None:
    """Sent plain, the credentials reach Prefect's database (and a SQLite WAL may keep copies until its next
    checkpoint, as the README says); the run masks them on receipt, so no row holds them afterwards."""
    batch_id = served.start_run(rest_parameters(apis, "plain-co"), tags=["tenant:someone-else", "nightly"])
    run = await ended(served, batch_id)

    assert run["state"]["type"] == "COMPLETED", served.log_tail()
    assert run["parameters"]["credentials"] == {"crm": {"token": MASK}, "accounting": {"api_key": MASK}}
    # the tenant tag its creator set is replaced by the one its tenant_id says; other tags stay
    assert {"tenant:plain-co", "batch-type:crm-to-accounting", "nightly"} <= set(run["tags"])
    assert "tenant:someone-else" not in run["tags"]
    secrets = secrets_of(apis)
    assert rows_holding(prefect_server.database, secrets) == []
    assert files_holding(etl_home, secrets) == []
    assert not any(s in line for line in logs(served, batch_id) for s in secrets)


@pytest.fixture
def capture() -> Iterator[CallbackReceiver]:
    """A replayer's server: records every request it is sent."""
    with CallbackReceiver() as receiver:
        yield receiver


@pytest.mark.parametrize("replay", ["other-host", "other-tenant", "other-callback"])
async def test_sealed_credentials_replayed_elsewhere_are_refused_and_nothing_is_sent(
    served: Served, keys: KeyPair, apis: DemoApis, capture: CallbackReceiver, replay: str
) -> None:
    """Anyone who may create runs can copy a tenant's sealed credentials (a schedule's parameters hold them)
    into a run of their own: pointed at their own host, or for another tenant."""
    hook = "https://hooks.tenant.example/done"
    from prefect_restful_etl.flows.sealing import seal

    token = seal(
        {
            "crm": {"token": apis.crm_token},
            "accounting": {"api_key": apis.accounting_api_key},
            "callback": {"token": "h"},
        },
        tenant_id="victim",
        hosts={"crm": [apis.crm_url], "accounting": [apis.accounting_url], "callback": [hook]},
        public_key=keys.public,
    )
    base_urls = {"crm": apis.crm_url, "accounting": apis.accounting_url}
    parameters = {"tenant_id": "victim", "sealed_credentials": token, "base_urls": base_urls, "callback_url": hook}
    expected = {
        "other-host": "sealed_credentials.crm: are bound to",
        "other-tenant": "sealed_credentials: were sealed for another tenant",
        "other-callback": "sealed_credentials.callback: are bound to https://hooks.tenant.example:443",
    }[replay]
    if replay == "other-host":
        parameters["base_urls"] = {**base_urls, "crm": capture.url.rsplit("/", 1)[0]}
    elif replay == "other-tenant":
        parameters["tenant_id"] = "mallory"
    else:
        parameters["callback_url"] = capture.url
    apis.reset()

    run = await ended(served, served.start_run(parameters))

    assert run["state"]["type"] == "FAILED"
    assert expected in run["state"]["message"]
    if replay == "other-host":
        bound, going = apis.crm_url.replace("http://", ""), capture.url.split("/")[2]
        assert f"http://{bound}; this run would send them to http://{going}" in run["state"]["message"]
    assert capture.received == []
    assert requests_served(apis) == [], "a refused run sends nothing to the APIs either"


def requests_served(apis: DemoApis) -> list[str]:
    """The demo APIs' request counters since their reset, but for their control endpoints."""
    served = []
    with httpx.Client() as client:
        for base in (apis.crm_url, apis.accounting_url):
            stats = client.get(f"{base}/_control/stats").raise_for_status().json()
            served += [path for path in stats.get("requests", stats) if "_control" not in path]
    return served


@pytest.mark.parametrize(
    "sent,field",
    [
        ({"credentials": {"crm": {"token": ["{crm}"]}, "accounting": {"api_key": "{acc}"}}}, "credentials.crm.token"),
        ({"credentials": {"crm": {"tokn": "{crm}"}, "accounting": {"api_key": "{acc}"}}}, "credentials.crm.tokn"),
        ({"credentials": {"crm": "{crm}", "accounting": {"api_key": "{acc}"}}}, "credentials.crm"),
        ({"credential": {"crm": {"token": "{crm}"}, "accounting": {"api_key": "{acc}"}}}, None),
    ],
    ids=["wrong-type", "misspelt-field", "not-an-object", "misspelt-parameter"],
)
async def test_a_malformed_run_through_the_deployment_is_refused_by_the_batch_and_echoes_nothing(
    prefect_server: PrefectServer,
    served: Served,
    apis: DemoApis,
    caplog: pytest.LogCaptureFixture,
    sent: dict[str, Any],
    field: str | None,
) -> None:
    """Prefect's own parameter check would answer `create_flow_run_from_deployment` with a 409 quoting the
    value sent. The deployment leaves the parameters to the batch, which masks them first."""
    caplog.set_level(logging.DEBUG)
    parameters = json.loads(
        json.dumps({"tenant_id": "typo", **sent})
        .replace("{crm}", apis.crm_token)
        .replace("{acc}", apis.accounting_api_key)
    )
    apis.reset()
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        async with get_client() as client:
            flow_run = await client.create_flow_run_from_deployment(served.deployment()["id"], parameters=parameters)

    run = await ended(served, str(flow_run.id))

    secrets = secrets_of(apis)
    assert run["state"]["type"] in {"FAILED", "CRASHED"}
    if field is not None:
        assert run["state"]["message"].startswith(f"Flow run encountered an exception: ConfigError: {field}: ")
    assert not any(s in json.dumps(run) for s in secrets)  # its parameters, state and message
    assert not any(s in line for line in logs(served, str(flow_run.id)) for s in secrets)
    assert not any(s in caplog.text for s in secrets)
    assert rows_holding(prefect_server.database, secrets) == []
    assert requests_served(apis) == [], "a bad configuration fails before any request"


_SERVE_HOOKS = """
import sys
from prefect import serve
from prefect_restful_etl.deployments.serve import hooks_deployment
deployment = hooks_deployment()
deployment.name = sys.argv[1]  # the test's own: the session's server is shared
serve(deployment, print_starting_message=False)
"""


class ServedHooks(Served):
    """The hooks' micro-batch deployment as `restful-etl serve` makes it, served the way `Served` serves."""

    def deployment_id(self) -> str | None:
        response = self.api.get(f"/deployments/name/{FLOW_NAME}/{self.name}")
        return str(response.json()["id"]) if response.status_code == 200 else None

    def deployment(self) -> dict[str, Any]:
        return dict(self.api.get(f"/deployments/name/{FLOW_NAME}/{self.name}").raise_for_status().json())


@pytest.fixture
async def served_hooks(
    prefect_server: PrefectServer, etl_home: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Served]:
    monkeypatch.setattr(served_support, "_SERVE", _SERVE_HOOKS)
    runner = ServedHooks(prefect_server, {"RESTFUL_ETL_HOME": str(etl_home)}, etl_home / "serve.log", "secrets-hooks")
    try:
        await wait_for(lambda: runner.deployment_id() is not None, "the served hooks deployment registered")
        yield runner
    finally:
        runner.stop()


async def test_a_malformed_hooks_run_through_the_deployment_is_refused_by_the_batch_and_echoes_nothing(
    prefect_server: PrefectServer, served_hooks: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """The hooks' micro-batches take plain credentials too: a token sent where an object belongs would be
    quoted back by Prefect's 409. The run is created, and the batch refuses it once it has masked it."""
    caplog.set_level(logging.DEBUG)
    secret = "hooks-plain-token-5d2e"
    parameters = {
        "tenant_id": "typo",
        "batch_type": "crm-to-accounting",
        "segments": [],
        "feed": {"job": "Extract CRM customers"},
        "credentials": secret,
    }
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        async with get_client() as client:
            flow_run = await client.create_flow_run_from_deployment(
                served_hooks.deployment()["id"], parameters=parameters
            )

    run = await ended(served_hooks, str(flow_run.id))

    assert run["state"]["type"] == "FAILED", served_hooks.log_tail()
    assert run["state"]["message"].startswith("Flow run encountered an exception: ConfigError: credentials: ")
    assert run["parameters"]["credentials"] == MASK
    assert secret not in json.dumps(run)  # its parameters, state and message
    assert not any(secret in line for line in logs(served_hooks, str(flow_run.id)))
    assert secret not in caplog.text
    assert rows_holding(prefect_server.database, [secret]) == []


async def test_the_deployments_schema_still_describes_the_parameters(served: Served) -> None:
    """Not enforced, the schema still drives the UI's run form: credentials as password fields."""
    deployment = served.deployment()
    assert deployment["enforce_parameter_schema"] is False
    properties = deployment["parameter_openapi_schema"]["properties"]
    assert {"tenant_id", "credentials", "sealed_credentials", "base_urls"} <= set(properties)
    assert crm_to_accounting.name == "crm-to-accounting"


@pytest.mark.parametrize("ending", ["password-refused", "batch-failed"])
async def test_the_audit_databases_password_never_shows_in_a_failed_batch(
    prefect_harness: Path,
    etl_home: Path,
    demo_apis: DemoApis,
    private_postgres_server: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
) -> None:
    """A PostgreSQL audit URL carries a password: a refused login, or a batch failing with its audit rows
    written there, shows it in no message, log line or audit row."""
    import asyncpg
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from pydantic import SecretStr

    from prefect_restful_etl.tasks.engine.credentials import Credentials

    server = private_postgres_server
    wrong = "wr0ng-pg-p4ss-never-shown"
    demo_apis.reset()
    caplog.set_level(logging.DEBUG)
    if ending == "password-refused":
        monkeypatch.setenv("RESTFUL_ETL_AUDIT_URL", server.url.replace(server.password, wrong))
    else:
        monkeypatch.setenv("RESTFUL_ETL_AUDIT_URL", server.url)
        with httpx.Client(base_url=demo_apis.accounting_url) as accounting:  # the load's read of the destination
            accounting.post(
                "/_control/faults", json={"path": "/customers", "method": "GET", "status": 403}
            ).raise_for_status()
    state = await crm_to_accounting(
        tenant_id="vault",
        credentials={
            "crm": Credentials(token=SecretStr(demo_apis.crm_token)),
            "accounting": Credentials(api_key=SecretStr(demo_apis.accounting_api_key)),
        },
        full_refresh=True,
        return_state=True,
        base_urls={"crm": demo_apis.crm_url, "accounting": demo_apis.accounting_url},
    )

    assert state.is_failed()
    with pytest.raises(Exception) as raised:
        await state.result()
    shown = [state.message or "", str(raised.value), repr(raised.value), caplog.text]
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    async with get_client() as client:
        for _ in range(150):  # the final log line is shipped in the background
            found = await client.read_logs(log_filter=log_filter, limit=200, offset=0)
            if any("Finished in state" in log.message for log in found):
                break
            await asyncio.sleep(0.2)
    shown += [log.message for log in found]
    if ending == "password-refused":
        assert 'password authentication failed for user "etl"' in str(raised.value)
    else:
        connection = await asyncpg.connect(server.url)
        try:
            [batch] = await connection.fetch("SELECT status, message FROM etl_batch")
            for table in ("etl_batch", "etl_job", "etl_error_event", "etl_watermark", "etl_screen"):
                shown += [str(dict(row)) for row in await connection.fetch(f"SELECT * FROM {table}")]
        finally:
            await connection.close()
        assert batch["status"] == "FAILED" and "403" in batch["message"]
    for secret in (server.password, wrong):
        assert not [text for text in shown if secret in text]
