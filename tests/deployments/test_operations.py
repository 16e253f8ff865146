"""Operating restful-etl with Prefect, on real parts: a `prefect server`, `restful-etl serve` in a subprocess
(on a Redis stage), the demo APIs, a callback receiver, the CLI, the events websocket, Prefect's Retry, and
`prefect deploy --all` of prefect.yaml run by a `prefect worker`.

One served deployment for the module. The sealed batch runs first and its secrets are searched for in every
file of Prefect's home (the database, its WAL, the server's log) at once, before any plain batch runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from callback_support import CallbackReceiver
from operations_support import Operations, until
from restart_support import add_fault, clear_faults, extract_requests
from secrets_support import files_holding, rows_holding

from prefect_restful_etl.blocks import AuditDatabase, RestApi
from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.callback import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from prefect_restful_etl.flows.hooks import DEPLOYMENT as HOOKS_DEPLOYMENT
from prefect_restful_etl.flows.keys import PRIVATE_KEY_ENV, generate_key_pair
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, generate_key
from prefect_restful_etl.tasks.engine.redaction import MASK

from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
JOBS = ["Extract CRM customers", "Shape accounting customers", "Load accounting customers"]
SEALED_HOOK, PLAIN_HOOK = "sealed-hook-secret-4b1d", "plain-hook-secret-9e2c"
CANCELLED_SECRETS = ["never-run-crm-token-71c3", "never-run-api-key-0a6f"]


@dataclass
class Batch:
    batch_id: str
    view: dict[str, Any]  # what `--watch --json` printed: the batch as its events told it
    output: str  # everything the CLI printed


@pytest.fixture(scope="module")
def apis() -> Iterator[DemoApis]:
    """Demo APIs of this module's own, so their secrets are this module's: no other test sent them anywhere."""
    with DemoApis(crm_customers=200) as demo:
        yield demo


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def ops(
    prefect_server: PrefectServer, module_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operations]:
    """Workers' settings as in production: a Redis stage (a Retry's new process finds the staged records),
    an AuditDatabase block, the workers' private key (the CLI, run with the same settings, seals with its public
    key by default) and a Fernet key."""
    home = tmp_path_factory.mktemp("operations")
    settings = {
        "RESTFUL_ETL_HOME": str(home),
        "RESTFUL_ETL_STAGE_URL": module_redis_url,
        SEAL_KEY_ENV: generate_key(),
        PRIVATE_KEY_ENV: generate_key_pair().private,
        "RESTFUL_ETL_AUDIT_BLOCK": "ops-audit",
        "RESTFUL_ETL_PROGRESS_EVERY": "50",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # the runner picks a new run up within a second, not ten
    }
    operations = Operations(prefect_server, home, settings)
    registered = operations.console("blocks", "register")
    assert registered.returncode == 0, registered.stderr
    with operations.prefect():
        AuditDatabase(url=f"sqlite:///{home / 'audit-from-block.db'}").save("ops-audit", overwrite=True)
    try:
        operations.serve()
        yield operations
    finally:
        operations.stop()


def write_credentials(path: Path, apis: DemoApis, hook_secret: str) -> Path:
    credentials = {
        "crm": {"token": apis.crm_token},
        "accounting": {"api_key": apis.accounting_api_key},
        "callback": {"token": hook_secret},
    }
    path.write_text(json.dumps(credentials))
    return path


def secrets(apis: DemoApis, hook_secret: str) -> list[str]:
    return [apis.crm_token, apis.accounting_api_key, hook_secret]


def base_urls(apis: DemoApis) -> list[str]:
    return ["--base-url", f"crm={apis.crm_url}", "--base-url", f"accounting={apis.accounting_url}"]


@pytest.fixture(scope="module")
def sealed(ops: Operations, apis: DemoApis, receiver: CallbackReceiver) -> Batch:
    """A full sync with credentials sealed by the console script, followed to its end over the websocket."""
    apis.reset()
    creds = write_credentials(ops.home / "sealed-creds.json", apis, SEALED_HOOK)
    done = ops.console(
        "run",
        "--tenant",
        "sealed-co",
        "--credentials",
        str(creds),
        "--full-refresh",
        *base_urls(apis),
        "--callback-url",
        receiver.url,
        "--watch",
        "--json",
    )
    creds.unlink()  # from here on, the secrets exist only in the demo APIs and this test's memory
    assert done.returncode == 0, done.stdout + done.stderr
    view = json.loads(done.stdout)
    return Batch(view["batch_id"], view, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def sealed_hits(ops: Operations, apis: DemoApis, sealed: Batch) -> list[str]:
    """Searched for before a plain batch sends the same secrets through Prefect, and once the sealed batch's
    run has ended and its logs and events are stored: `--watch` returns before they are."""
    logs = ops.settled(sealed.batch_id)
    found = secrets(apis, SEALED_HOOK)
    return (
        files_holding(ops.server.home, found)
        + files_holding(ops.home, found)
        + [f"CLI output holds secret #{i}" for i, s in enumerate(found) if s in sealed.output]
        + [f"a log line holds secret #{i}" for i, s in enumerate(found) if any(s in line for line in logs)]
    )


@pytest.fixture(scope="module")
def plain(ops: Operations, apis: DemoApis, receiver: CallbackReceiver, sealed_hits: list[str]) -> Batch:
    """An incremental batch with plain credentials, after CRM edits that screens flag; the CRM's API from a
    RestApi block."""
    with httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}) as crm:
        crm.patch("/customers/5", json={"email": "not-an-email"}).raise_for_status()
        crm.patch("/customers/6", json={"company": "Renamed Ltd"}).raise_for_status()
    with ops.prefect():
        RestApi(
            name="crm",
            base_url=apis.crm_url,
            auth={"type": "bearer"},
            paginator={"type": "page_number", "page_size": 100, "total_path": "total"},
        ).save("ops-crm", overwrite=True)
    creds = write_credentials(ops.home / "plain-creds.json", apis, PLAIN_HOOK)
    done = ops.cli(
        "run",
        "-t",
        "sealed-co",
        "-c",
        str(creds),
        "--no-seal",
        "--api-block",
        "crm=ops-crm",
        "--base-url",
        f"accounting={apis.accounting_url}",
        "--callback-url",
        receiver.url,
        "--watch",
        "--json",
    )
    creds.unlink()
    assert done.exit_code == 0, done.output
    view = json.loads(done.stdout)
    return Batch(view["batch_id"], view, done.output)


# --- a sealed batch -----------------------------------------------------------------------------------------


def test_a_sealed_batch_runs_and_its_jobs_are_followed_to_the_end(sealed: Batch) -> None:
    assert sealed.view["finished"] and sealed.view["status"] == "COMPLETED"
    assert [(j["job"], j["status"]) for j in sealed.view["jobs"]] == [(job, "COMPLETED") for job in JOBS]
    assert sealed.view["counts"]["inserted"] == 200


def test_prefect_keeps_only_the_ciphertext_so_a_retry_could_open_it_again(ops: Operations, sealed: Batch) -> None:
    """`run` sealed the credentials by default, with the workers' public key."""
    run = ops.flow_run(sealed.batch_id)
    assert run["parameters"]["sealed_credentials"].startswith("rpk1.")  # a sealed box, untouched by redaction
    assert run["parameters"]["credentials"] == {}
    assert {"tenant:sealed-co", "batch-type:crm-to-accounting"} <= set(run["tags"])


def test_no_file_of_prefect_or_the_audit_database_holds_a_sealed_secret(sealed_hits: list[str]) -> None:
    assert sealed_hits == []


def test_the_callback_got_the_report_signed_with_the_sealed_secret(receiver: CallbackReceiver, sealed: Batch) -> None:
    (call,) = [c for c in receiver.received if json.loads(c.body)["batch_id"] == sealed.batch_id]
    assert verify(call.body, SEALED_HOOK, call.headers[SIGNATURE_HEADER], call.headers[TIMESTAMP_HEADER])
    assert json.loads(call.body)["status"] == "COMPLETED"


def test_the_batch_published_its_artifacts(ops: Operations, sealed: Batch) -> None:
    artifacts = ops.artifacts(sealed.batch_id)
    keys = {f"crm-to-accounting-sealed-co-{kind}" for kind in ("audit", "quality", "errors", "progress")}
    assert set(artifacts) == keys
    audit = json.loads(artifacts["crm-to-accounting-sealed-co-audit"]["data"])
    assert [row["job"] for row in audit] == [*JOBS, "batch"] and audit[-1]["inserted"] == 200
    assert artifacts["crm-to-accounting-sealed-co-progress"]["data"] == 100.0
    assert "Quality score" in artifacts["crm-to-accounting-sealed-co-quality"]["data"]


def test_the_events_say_who_and_what_with_progress_between(ops: Operations, apis: DemoApis, sealed: Batch) -> None:
    expected = {
        "restful-etl.batch.started",
        "restful-etl.batch.finished",
        "restful-etl.job.started",
        "restful-etl.job.progress",
        "restful-etl.job.finished",
    }
    # the websocket has them at once; the server's database a moment later, as it persists events in batches
    events = until(
        lambda: (found := ops.events(sealed.batch_id)) and {e["event"] for e in found} == expected and found,
        "the batch's events persisted",
    )
    job_events = [e for e in events if e["event"].startswith("restful-etl.job.")]
    for event in job_events:
        roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]}
        assert roles["tenant"] == "restful-etl.tenant.sealed-co"
        assert roles["batch-type"] == "restful-etl.batch-type.crm-to-accounting"
        assert roles["batch"] == f"restful-etl.batch.{sealed.batch_id}"
    progress = [e["payload"]["records"] for e in job_events if e["event"] == "restful-etl.job.progress"]
    assert progress and all(records >= 50 for records in progress)  # RESTFUL_ETL_PROGRESS_EVERY=50
    assert not any(s in json.dumps(events) for s in secrets(apis, SEALED_HOOK))


# --- a plain batch -------------------------------------------------------------------------------------------


def test_a_plain_batch_through_a_rest_api_block_moves_only_the_changes(plain: Batch) -> None:
    assert plain.view["status"] == "COMPLETED"
    counts = plain.view["counts"]
    assert (counts["updated"], counts["rejected"]) == (1, 1)  # the rename, and the email the screen refused


def test_after_a_plain_batch_no_table_row_holds_a_secret(ops: Operations, apis: DemoApis, plain: Batch) -> None:
    logs = ops.settled(plain.batch_id)  # searched once the run's logs and events are stored
    found = secrets(apis, PLAIN_HOOK)
    assert ops.flow_run(plain.batch_id)["parameters"]["credentials"]["crm"]["token"] == "**********"
    assert rows_holding(ops.server.database, found) == []
    assert rows_holding(ops.home / "audit-from-block.db", found) == []
    assert files_holding(ops.home, found) == []  # the audit database's files, the serve log
    assert not any(s in message for message in logs for s in found)
    assert not any(s in plain.output for s in found)


def test_the_audit_database_block_is_where_batches_were_written(ops: Operations, plain: Batch) -> None:
    assert (ops.home / "audit-from-block.db").exists() and not (ops.home / "audit.db").exists()


def test_the_quality_report_and_error_table_show_the_refused_record(ops: Operations, plain: Batch) -> None:
    artifacts = ops.artifacts(plain.batch_id)
    assert "| email format |" in artifacts["crm-to-accounting-sealed-co-quality"]["data"]
    errors = json.loads(artifacts["crm-to-accounting-sealed-co-errors"]["data"])
    assert [(e["screen"], e["natural_key"], e["value"]) for e in errors] == [("email format", "5", "not-an-email")]


# --- the CLI's questions -------------------------------------------------------------------------------------


def test_history_status_last_sync_and_connected_since(ops: Operations, sealed: Batch, plain: Batch) -> None:
    history = ops.cli_json("history", "-t", "sealed-co")
    assert [row["batch_id"] for row in history][:2] == [plain.batch_id, sealed.batch_id]
    assert history[1]["full_refresh"] and history[1]["inserted"] == 200
    status = ops.cli_json("status", "-t", "sealed-co")
    assert status["run"]["batch_id"] == plain.batch_id and status["run"]["state"] == "Completed"
    assert [job["job"] for job in status["jobs"]] == JOBS
    assert ops.cli_json("last-sync", "-t", "sealed-co")["batch_id"] == plain.batch_id
    assert ops.cli_json("connected-since", "-t", "sealed-co")["batch_id"] == sealed.batch_id
    assert ops.cli_json("last-sync", "-t", "nobody") is None


def test_status_shows_the_batch_that_started_last_not_one_scheduled_for_later(ops: Operations, plain: Batch) -> None:
    deployment = ops.deployment("crm-to-accounting/crm-to-accounting")
    assert deployment is not None
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {
        "parameters": {"tenant_id": "sealed-co"},
        "tags": ["tenant:sealed-co", "batch-type:crm-to-accounting"],
        "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
    }
    scheduled = ops.rest.post(f"/deployments/{deployment['id']}/create_flow_run", json=body).raise_for_status().json()
    try:
        assert ops.cli_json("history", "-t", "sealed-co")[0]["batch_id"] == scheduled["id"]  # listed, by when due
        for narrowed in ([], ["-b", "crm-to-accounting"]):
            status = ops.cli_json("status", "-t", "sealed-co", *narrowed)
            assert status["run"]["batch_id"] == plain.batch_id and status["batch"]["status"] == "COMPLETED"
    finally:
        ops.cli_json("cancel", scheduled["id"], "-t", "sealed-co")


def test_errors_lists_the_batchs_error_events_for_its_tenant_only(ops: Operations, plain: Batch) -> None:
    errors = ops.cli_json("errors", plain.batch_id, "-t", "sealed-co")
    assert [(e["screen"], e["column"]) for e in errors] == [("email format", "email")]
    assert ops.cli_json("errors", plain.batch_id, "-t", "another-tenant") == []


def test_watch_of_an_ended_batch_replays_it_and_tables_read_as_tables(ops: Operations, plain: Batch) -> None:
    view = ops.cli_json("watch", plain.batch_id, "-t", "sealed-co")
    assert view["finished"] and [j["status"] for j in view["jobs"]] == ["COMPLETED"] * 3
    table = ops.cli("history", "-t", "sealed-co")
    assert table.exit_code == 0 and "history of sealed-co" in table.stdout
    refused = ops.cli("watch", plain.batch_id, "-t", "another-tenant")
    assert refused.exit_code == 2 and "not tenant" in refused.output


def test_cancel_a_scheduled_batch_of_the_tenant_masks_its_plain_credentials(ops: Operations) -> None:
    """Due in an hour, so no runner picks it up: no flow code and no hook ever runs for it, and only the
    CLI's cancel can mask the credentials Prefect stored in clear."""
    deployment = ops.deployment("crm-to-accounting/crm-to-accounting")
    assert deployment is not None
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    plain = {"crm": {"token": CANCELLED_SECRETS[0]}, "accounting": {"api_key": CANCELLED_SECRETS[1]}}
    body = {
        "parameters": {"tenant_id": "cancel-co", "credentials": plain},
        "tags": ["tenant:cancel-co", "batch-type:crm-to-accounting"],
        "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
    }
    batch_id = (
        ops.rest.post(f"/deployments/{deployment['id']}/create_flow_run", json=body).raise_for_status().json()["id"]
    )
    assert ops.flow_run(batch_id)["parameters"]["credentials"] == plain  # Prefect's API keeps them as given
    assert ops.cli("cancel", batch_id, "-t", "another-tenant").exit_code == 2
    assert ops.flow_run(batch_id)["parameters"]["credentials"] == plain  # another tenant's user changes nothing
    cancelled = ops.cli_json("cancel", batch_id, "-t", "cancel-co")
    assert cancelled["state"] in {"Cancelled", "Cancelling"}
    until(lambda: ops.flow_run(batch_id)["state"]["type"] == "CANCELLED", "the scheduled batch cancelled", 30)
    stored = ops.flow_run(batch_id)["parameters"]
    assert stored["credentials"] == {"crm": {"token": "**********"}, "accounting": {"api_key": "**********"}}
    assert rows_holding(ops.server.database, CANCELLED_SECRETS) == []


def test_a_run_whose_tenant_tag_another_tenant_set_is_listed_and_cancelled_under_nobody(ops: Operations) -> None:
    """Whoever creates a run sets its tags: a run of tenant `attacker` tagged `tenant:iso-a` is not iso-a's
    (its tenant_id parameter says whose it is), and a run whose tag and parameter disagree is refused."""
    deployment = ops.deployment("crm-to-accounting/crm-to-accounting")
    assert deployment is not None
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {
        "parameters": {"tenant_id": "attacker"},
        "tags": ["tenant:iso-a", "batch-type:crm-to-accounting"],
        "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
    }
    spoofed = ops.rest.post(f"/deployments/{deployment['id']}/create_flow_run", json=body).raise_for_status().json()
    try:
        assert spoofed["id"] not in [row["batch_id"] for row in ops.cli_json("history", "-t", "iso-a")]
        for args in (
            ("cancel", "-t", "iso-a"),
            ("status", "-t", "iso-a"),
            ("watch", "-t", "iso-a"),
            ("cancel", "-t", "attacker"),
        ):
            refused = ops.cli(args[0], spoofed["id"], *args[1:])
            assert refused.exit_code == 2 and "disagree" in refused.output, refused.output
        assert ops.flow_run(spoofed["id"])["state"]["type"] == "SCHEDULED"
    finally:
        ops.rest.delete(f"/flow_runs/{spoofed['id']}")


def test_restart_a_failed_batch_then_a_full_resync(ops: Operations, apis: DemoApis, plain: Batch) -> None:
    creds = write_credentials(ops.home / "creds.json", apis, PLAIN_HOOK)
    httpx.post(
        f"{apis.accounting_url}/_control/faults", json={"path": "/customers", "method": "GET", "status": 401}
    ).raise_for_status()  # the load's first read is refused: the batch fails
    failed = ops.cli_json(
        "run", "-t", "restart-co", "-c", str(creds), "--seal", *base_urls(apis), "--watch", exit_code=1
    )
    assert failed["status"] == "FAILED"
    resumed = ops.cli_json("restart", failed["batch_id"], "-t", "restart-co", "-c", str(creds), "--seal", "--watch")
    assert resumed["status"] == "COMPLETED"
    assert ops.flow_run(resumed["batch_id"])["parameters"]["resume_batch_id"] == failed["batch_id"]
    assert ops.cli_json("status", resumed["batch_id"], "-t", "restart-co")["batch"]["batch_id"] == resumed["batch_id"]
    resync = ops.cli_json("resync", "-t", "restart-co", "-c", str(creds), "--seal", *base_urls(apis), "--watch")
    creds.unlink()
    assert resync["status"] == "COMPLETED"
    assert ops.flow_run(resync["batch_id"])["parameters"]["full_refresh"] is True
    assert resync["counts"]["extracted"] == 200  # everything read again; the destination already holds it
    assert (resync["counts"]["inserted"], resync["counts"]["updated"]) == (0, 0)


# --- Prefect's Retry ------------------------------------------------------------------------------------------


def test_prefects_retry_of_a_sealed_batch_resumes_at_the_failed_load(ops: Operations, apis: DemoApis) -> None:
    """What the UI's Retry does: the failed run back to AwaitingRetry; the runner starts it again in a new
    process, which opens the stored ciphertext again and finds the extract's report cached."""
    creds = write_credentials(ops.home / "retry-creds.json", apis, SEALED_HOOK)
    add_fault(apis.accounting_url, path="/customers", method="GET", status=401)  # the load's first read refused
    failed = ops.cli_json("run", "-t", "retry-co", "-c", str(creds), "--seal", *base_urls(apis), "--watch", exit_code=1)
    creds.unlink()
    batch_id = failed["batch_id"]
    assert failed["status"] == "FAILED" and [j["status"] for j in failed["jobs"]] == ["COMPLETED"] * 2 + ["FAILED"]
    ops.settled(batch_id)
    pages = extract_requests(apis)
    clear_faults(apis.accounting_url)

    retry = {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}
    proposed = ops.rest.post(f"/flow_runs/{batch_id}/set_state", json={"state": retry, "force": True})
    assert proposed.raise_for_status().json()["status"] == "ACCEPT"

    until(lambda: ops.flow_run(batch_id)["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED"}, "the retry ended", 120)
    run = ops.flow_run(batch_id)
    assert run["state"]["type"] == "COMPLETED", ops.log.read_text(errors="replace")[-3000:]
    assert run["run_count"] == 2  # the same flow run, run again
    assert extract_requests(apis) == pages  # the extract was not repeated
    states: dict[str, list[str]] = {}
    for task_run in ops.task_runs(batch_id):
        states.setdefault(task_run["name"], []).append(task_run["state"]["name"])
    for job in ("Extract CRM customers", "Shape accounting customers"):
        assert sorted(states[job]) == ["Cached", "Completed"]
    assert sorted(states["Load accounting customers"]) == ["Completed", "Failed"]
    assert run["parameters"]["sealed_credentials"].startswith("rpk1.") and run["parameters"]["credentials"] == {}
    assert not any(s in json.dumps(run["parameters"]) for s in secrets(apis, SEALED_HOOK))
    status = ops.cli_json("status", batch_id, "-t", "retry-co")
    assert status["batch"]["status"] == "COMPLETED" and status["batch"]["extracted"] == 200


# --- prefect.yaml --------------------------------------------------------------------------------------------


def _fastapi_refuses_prefects_null_limits() -> bool:
    import fastapi

    return tuple(int(part) for part in fastapi.__version__.split(".")[:2]) >= (0, 151)


def test_prefect_deploy_all_deploys_both_deployments_and_a_worker_runs_them(ops: Operations, apis: DemoApis) -> None:
    """Last: it replaces the served deployments of the same names, and stops serving them."""
    if _fastapi_refuses_prefects_null_limits():  # an environment installed before pyproject's pin
        message = "fastapi>=0.151 is installed; pyproject pins <0.151 (`make test` reinstalls)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    prefect = [sys.executable, "-m", "prefect"]
    pool = subprocess.run(
        [*prefect, "work-pool", "create", "--type", "process", "restful-etl"],
        check=False,
        env=ops.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # the session's server may hold the pool already (another test deployed a project to it)
    assert pool.returncode == 0 or "already exists" in pool.stdout + pool.stderr, pool.stdout + pool.stderr
    deployed = subprocess.run(
        [*prefect, "--no-prompt", "deploy", "--all"],
        check=False,
        cwd=REPO,
        env=ops.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    incremental = ops.deployment("crm-to-accounting/crm-to-accounting")
    resync = ops.deployment("crm-to-accounting/crm-to-accounting-full-resync")
    assert incremental is not None and resync is not None
    assert incremental["work_pool_name"] == resync["work_pool_name"] == "restful-etl"
    assert incremental["entrypoint"] == "prefect_restful_etl.flows.crm_to_accounting.crm_to_accounting"
    assert not incremental["pull_steps"]
    # by slug: the served deployment's own schedule (slug `hourly`) stays beside prefect.yaml's
    (hourly,) = [s for s in incremental["schedules"] if s["slug"] == "hourly-demo"]
    assert not hourly["active"]
    assert hourly["schedule"]["interval"] == 3600 and hourly["parameters"]["tenant_id"] == "demo"
    assert resync["parameters"] == {"full_refresh": True} and resync["schedules"] == []
    assert incremental["enforce_parameter_schema"] is False and resync["enforce_parameter_schema"] is False
    janitor = ops.deployment("restful-etl-janitor/restful-etl-janitor")
    assert janitor is not None and janitor["work_pool_name"] == "restful-etl"
    assert [(s["schedule"]["interval"], s["active"]) for s in janitor["schedules"]] == [(300, True)]

    ops.stop_serving()  # from here on only the pool's worker can run them
    left = left_holding_credentials(ops, resync["id"])
    creds = write_credentials(ops.home / "worker-creds.json", apis, SEALED_HOOK)
    log = ops.home / "worker.log"
    with ops.worker("restful-etl", log) as worker:
        batch_id = ops.cli_json("resync", "-t", "worker-co", "-c", str(creds), "--seal", *base_urls(apis))["batch_id"]
        creds.unlink()
        final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
        until(
            lambda: ops.flow_run(batch_id)["state"]["type"] in final or worker.poll() is not None,
            "the worker ran the full re-sync",
            180,
        )
        run = ops.flow_run(batch_id)
        assert run["state"]["type"] == "COMPLETED", log.read_text(errors="replace")[-3000:]
    assert (run["deployment_id"], run["work_pool_name"]) == (resync["id"], "restful-etl")
    worker_log = log.read_text(errors="replace")
    assert batch_id in worker_log  # this worker, not a leftover runner, ran it
    # `restful-etl worker` swept before it started the worker: its summary, not the "did not run" warning
    assert re.search(r"janitor: \d+ masked, \d+ crashed, \d+ cancelled, \d+ audited", worker_log), worker_log[-3000:]
    assert "the start-up sweep did not run" not in worker_log
    assert ops.flow_run(left)["parameters"]["credentials"] == {"crm": {"token": MASK}}
    status = ops.cli_json("status", batch_id, "-t", "worker-co")
    assert status["batch"]["full_refresh"] and status["batch"]["extracted"] == 200
    hooks = ops.deployment(HOOKS_DEPLOYMENT)  # it takes plain credentials too: no 409 quoting them
    assert hooks is not None and hooks["enforce_parameter_schema"] is False


def left_holding_credentials(ops: Operations, deployment_id: str) -> str:
    """A run that ended holding plain credentials, as a worker killed before its run could mask them leaves it."""
    parameters = {"tenant_id": "left-co", "credentials": {"crm": {"token": "left-by-a-dead-worker-6a0d"}}}
    created = ops.rest.post(f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters})
    flow_run_id = str(created.raise_for_status().json()["id"])
    state = {"state": {"type": "COMPLETED", "name": "Completed"}, "force": True}
    ops.rest.post(f"/flow_runs/{flow_run_id}/set_state", json=state).raise_for_status()
    return flow_run_id
