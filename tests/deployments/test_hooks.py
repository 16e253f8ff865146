"""Real-time hooks end to end, on real sockets: the receiver (`restful-etl hooks serve`) in a subprocess, a real
redis-server as its stage, the real `prefect server` with the hooks deployment served by `restful-etl serve`,
and the demo APIs: signed hooks land in the accounting API through micro-batches; refused ones are counted."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hooks_support import ReceiverProcess, customer, hook, hooks_config, tenant_secret
from operations_support import Operations, until

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, generate_key
from prefect_restful_etl.tasks.engine.audit.store import AuditStore

from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

TENANTS = ["hooked", "refused", "replayed", "burst", "killed", "reconciled"]
HOOKS_DEPLOYMENT = "restful-etl-hooks/hooks"


@pytest.fixture(scope="module")
def ops(
    prefect_server: PrefectServer, module_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operations]:
    """`restful-etl serve` (the batch types and the hooks deployment), a Redis stage, a sealing key."""
    home = tmp_path_factory.mktemp("hooks")
    settings = {
        "RESTFUL_ETL_HOME": str(home),
        "RESTFUL_ETL_AUDIT_URL": f"sqlite:///{home / 'audit.db'}",
        "RESTFUL_ETL_STAGE_URL": module_redis_url,
        SEAL_KEY_ENV: generate_key(),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    operations = Operations(prefect_server, home, settings)
    try:
        operations.serve()
        until(lambda: operations.deployment(HOOKS_DEPLOYMENT), "the hooks deployment served")
        yield operations
    finally:
        operations.stop()


@pytest.fixture(scope="module")
def config(ops: Operations, demo_apis: DemoApis) -> dict[str, Any]:
    return hooks_config(demo_apis, ops.settings[SEAL_KEY_ENV], TENANTS, max_body_bytes=20_000, max_events=400)


@pytest.fixture(scope="module")
def receiver(ops: Operations, config: dict[str, Any]) -> Iterator[ReceiverProcess]:
    process = ReceiverProcess(config, ops.home, ops.env).start()
    try:
        yield process
    finally:
        process.stop()


def accounting(apis: DemoApis) -> list[dict[str, Any]]:
    headers = {"X-API-Key": apis.accounting_api_key}
    body = httpx.get(f"{apis.accounting_url}/customers", params={"per_page": 1000}, headers=headers, timeout=10)
    rows: list[dict[str, Any]] = body.raise_for_status().json()["data"]
    while len(rows) < body.json().get("total", 0):  # more than a page
        page = len(rows) // 1000 + 1
        more = httpx.get(
            f"{apis.accounting_url}/customers", params={"per_page": 1000, "page": page}, headers=headers, timeout=10
        )
        rows += more.raise_for_status().json()["data"]
    return rows


def hook_runs(ops: Operations, tenant: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"tags": {"all_": [f"tenant:{tenant}", "hooks"]}}, "limit": 200}
    return list(ops.rest.post("/flow_runs/filter", json=body).raise_for_status().json())


def ended(runs: list[dict[str, Any]]) -> bool:
    return bool(runs) and all(r["state_type"] == "COMPLETED" for r in runs)


def intake(ops: Operations, tenant: str) -> dict[str, Any]:
    done = ops.console("hooks", "status", "--tenant", tenant, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    return rows[0] if rows else {}


def post(receiver: ReceiverProcess, tenant: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{receiver.url}/hooks/crm-to-accounting/{tenant}", content=body, headers=headers, timeout=30)


def test_a_change_in_the_crm_arrives_by_signed_hook_and_lands_through_a_micro_batch(
    ops: Operations, receiver: ReceiverProcess, demo_state: DemoApis
) -> None:
    apis = demo_state
    url = f"{receiver.url}/hooks/crm-to-accounting/hooked"
    subscribed = httpx.post(f"{apis.crm_url}/_control/hooks", json={"url": url, "secret": tenant_secret("hooked")})
    assert subscribed.status_code == 201
    try:
        crm = httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"})
        crm.patch("/customers/3", json={"email": "pushed@changed.example"}).raise_for_status()
        crm.patch("/customers/7", json={"company": "Pushed Ltd"}).raise_for_status()
        landed = until(
            lambda: {r["external_id"]: r for r in accounting(apis)}.keys() >= {"3", "7"} and accounting(apis),
            "customers 3 and 7 in the accounting API",
            timeout=120,
        )
    finally:
        httpx.delete(f"{apis.crm_url}/_control/hooks")
    rows = {r["external_id"]: r for r in landed}
    assert set(rows) == {"3", "7"}  # only what was pushed: nothing polled
    assert rows["3"]["email"] == "pushed@changed.example" and rows["7"]["name"] == "Pushed Ltd"
    runs = until(lambda: [r for r in hook_runs(ops, "hooked") if r["state_type"] == "COMPLETED"], "a completed run")
    batch = ops.flow_run(runs[0]["id"])
    assert batch["parameters"]["batch_type"] == "crm-to-accounting" and "hooks" in batch["tags"]
    artifacts = until(lambda: ops.artifacts(runs[0]["id"]), "the micro-batch's artifacts")
    assert "crm-to-accounting-hooked-audit" in artifacts and "crm-to-accounting-hooked-hooks" in artifacts
    status = ops.console("status", "--tenant", "hooked", "--json")
    shown = json.loads(status.stdout)
    assert shown["batch"]["status"] == "COMPLETED" and shown["batch"]["batch_type"] == "crm-to-accounting"
    assert shown["hooks"][0]["accepted"] == 2 and shown["hooks"][0]["micro_batches"] >= 1
    # the server stores events as they reach it, in no set order: wait for both kinds (a deadline, not a sleep)
    wanted = {"restful-etl.hook.received", "restful-etl.hook.batched"}
    until(lambda: wanted <= {e["event"] for e in _tenant_events(ops, "hooked")}, "the hook events stored")


def _tenant_events(ops: Operations, tenant: str) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "event": {"prefix": ["restful-etl.hook."]},
            "related": {"id": [f"restful-etl.tenant.{tenant}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
        },
        "limit": 50,
    }
    return list(ops.rest.post("/events/filter", json=body).raise_for_status().json()["events"])


def test_bad_stale_unknown_oversize_and_unparsable_hooks_are_refused_and_counted(
    ops: Operations, receiver: ReceiverProcess, demo_state: DemoApis
) -> None:
    body, headers = hook(customer(9001), "refused")
    cases = [
        ("bad signature", post(receiver, "refused", body + b" ", headers), 401, "signature"),
        ("stale", post(receiver, "refused", *hook(customer(9002), "refused", now=time.time() - 3600)), 401, "stale"),
        ("unknown tenant", post(receiver, "nobody", body, headers), 404, "unknown_tenant"),
        ("oversize", post(receiver, "refused", *hook(customer(9003, notes="x" * 30_000), "refused")), 413, "too_large"),
        ("not json", _signed_garbage(receiver), 400, "not_json"),
        ("unsigned", post(receiver, "refused", body, {"Content-Type": "application/json"}), 401, "signature"),
    ]
    for what, response, status, reason in cases:
        assert (response.status_code, response.json()["reason"]) == (status, reason), what
        assert tenant_secret("refused") not in response.text
    counts = until(lambda: intake(ops, "refused").get("refused") == 5 and intake(ops, "refused"), "counts written")
    assert counts["accepted"] == 0
    assert {k: v for k, v in counts.items() if k.startswith("refused.")} == {
        "refused.signature": 2,
        "refused.stale": 1,
        "refused.too_large": 1,
        "refused.not_json": 1,
    }
    status = httpx.get(f"{receiver.url}/_status").json()
    assert status["unknown_tenant"]["crm-to-accounting.unknown_tenant"] >= 1
    assert hook_runs(ops, "refused") == [] and accounting(demo_state) == []


def _signed_garbage(receiver: ReceiverProcess) -> httpx.Response:
    from hooks_support import SIGNATURE

    from prefect_restful_etl.tasks.engine.hooks.signature import sign

    body = b"{not json"
    return post(receiver, "refused", body, sign(SIGNATURE, tenant_secret("refused"), body))


def test_a_replayed_event_is_acknowledged_and_writes_nothing(
    ops: Operations, receiver: ReceiverProcess, demo_state: DemoApis
) -> None:
    body, headers = hook(customer(20001), "replayed", event_id="evt_replayed_once")
    assert post(receiver, "replayed", body, headers).status_code == 202
    again = post(receiver, "replayed", body, headers)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    until(lambda: [r["external_id"] for r in accounting(demo_state)] == ["20001"], "the event landed")
    until(lambda: ended(hook_runs(ops, "replayed")), "its micro-batch ended")
    writes = httpx.get(f"{demo_state.accounting_url}/_control/stats").json()
    retry = hook(customer(20001, email="x@y.example"), "replayed", event_id="evt_replayed_once")
    for _ in range(3):  # the source retries after the micro-batch: still the same event
        assert post(receiver, "replayed", *retry).json()["status"] == "duplicate"
    counts = until(lambda: intake(ops, "replayed").get("duplicates") == 4 and intake(ops, "replayed"), "counts")
    assert counts["accepted"] == 1
    assert httpx.get(f"{demo_state.accounting_url}/_control/stats").json() == writes
    assert len(hook_runs(ops, "replayed")) == 1 and accounting(demo_state)[0]["email"] == "c20001@example.com"


def test_a_burst_of_1000_events_becomes_a_handful_of_micro_batches_and_lands_once_each(
    ops: Operations, receiver: ReceiverProcess, demo_state: DemoApis
) -> None:
    hooks = [hook(customer(30000 + n), "burst") for n in range(1000)]
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(16) as pool:
        url = f"{receiver.url}/hooks/crm-to-accounting/burst"
        answers = list(pool.map(lambda h: client.post(url, content=h[0], headers=h[1]).status_code, hooks))
    assert Counter(answers) == {202: 1000}
    rows = until(lambda: len(got := accounting(demo_state)) >= 1000 and got, "1000 customers landed", timeout=300)
    assert Counter(r["external_id"] for r in rows) == {str(30000 + n): 1 for n in range(1000)}
    runs = until(lambda: ended(got := hook_runs(ops, "burst")) and got, "the burst's micro-batches ended")
    assert 1 <= len(runs) <= 10, f"{len(runs)} micro-batches for 1000 events"
    counts = until(lambda: intake(ops, "burst").get("batched") == 1000 and intake(ops, "burst"), "counts")
    assert counts["accepted"] == 1000 and counts["micro_batches"] == len(runs)


def test_a_receiver_killed_after_its_202_loses_nothing(
    ops: Operations, receiver: ReceiverProcess, demo_state: DemoApis, tmp_path: Path
) -> None:
    key = ops.settings[SEAL_KEY_ENV]
    waiting = hooks_config(demo_state, key, ["killed"], receiver="second", debounce_seconds=3600, max_events=1000)
    first = ReceiverProcess(waiting, tmp_path, ops.env, name="first").start()
    try:
        accepted = [post(first, "killed", *hook(customer(40000 + n), "killed")).status_code for n in range(3)]
        assert accepted == [202, 202, 202]
    finally:
        first.kill()  # before its debounce: no micro-batch started, nothing but the stage knows the events
    assert accounting(demo_state) == [] and hook_runs(ops, "killed") == []
    soon = hooks_config(demo_state, key, ["killed"], receiver="second", debounce_seconds=0.5)
    second = ReceiverProcess(soon, tmp_path, ops.env, name="second").start()
    try:
        rows = until(lambda: len(got := accounting(demo_state)) >= 3 and got, "the stored events landed", 120)
    finally:
        second.stop()
    assert sorted(r["external_id"] for r in rows) == ["40000", "40001", "40002"]


def test_a_hook_that_names_only_an_id_is_read_from_the_source_by_key(
    ops: Operations, receiver: ReceiverProcess, demo_state: DemoApis, tmp_path: Path
) -> None:
    apis, key = demo_state, ops.settings[SEAL_KEY_ENV]
    config = hooks_config(
        apis, key, ["by-id"], receiver="ids", records=None, ids="data.id", fetch={"path": "/customers/{id}"}
    )
    ids = ReceiverProcess(config, tmp_path, ops.env, name="ids").start()
    url = f"{ids.url}/hooks/crm-to-accounting/by-id"
    subscription = {"url": url, "secret": tenant_secret("by-id"), "mode": "id"}
    try:
        assert httpx.post(f"{apis.crm_url}/_control/hooks", json=subscription).status_code == 201
        crm = httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"})
        crm.patch("/customers/11", json={"company": "Fetched By Key Ltd"}).raise_for_status()
        rows = until(lambda: (got := accounting(apis)) and got, "customer 11 in the accounting API", timeout=120)
    finally:
        httpx.delete(f"{apis.crm_url}/_control/hooks")
        ids.stop()
    assert [(r["external_id"], r["name"]) for r in rows] == [("11", "Fetched By Key Ltd")]
    assert crm.get("/customers/11").json()["email"] == rows[0]["email"]  # the whole record, read from the CRM


def polling_run(ops: Operations, config: dict[str, Any], tenant: str, **parameters: Any) -> str:
    """A batch of the tenant through the batch type's own deployment, as its schedule starts one."""
    given = config["endpoints"][0]["tenants"][tenant]
    body = {"parameters": {"tenant_id": tenant, "sealed_credentials": given["sealed_credentials"],
                           "base_urls": given["base_urls"], **parameters}}  # fmt: skip
    deployment = ops.deployment("crm-to-accounting/crm-to-accounting")
    assert deployment is not None
    run = ops.rest.post(f"/deployments/{deployment['id']}/create_flow_run", json=body).raise_for_status().json()
    until(lambda: ops.flow_run(run["id"])["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED"}, "the batch ended")
    assert ops.flow_run(run["id"])["state"]["type"] == "COMPLETED"
    return str(run["id"])


def watermark(ops: Operations, tenant: str) -> str | None:
    async def read() -> str | None:
        store = await AuditStore.open(ops.settings["RESTFUL_ETL_AUDIT_URL"])
        try:
            found = await store.get_watermark(tenant, "crm-to-accounting", "extract-crm-customers")
            return found.value if found else None
        finally:
            await store.close()

    return asyncio.run(read())


def test_hooks_and_polling_meet_without_going_back_in_time_or_moving_the_watermark(
    ops: Operations, receiver: ReceiverProcess, config: dict[str, Any], demo_state: DemoApis
) -> None:
    apis, tenant = demo_state, "reconciled"
    crm = httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"})
    polling_run(ops, config, tenant, full_refresh=True)
    synced, polled_at = watermark(ops, tenant), {r["external_id"]: r for r in accounting(apis)}
    assert synced is not None and len(polled_at) > 100
    older = {**crm.get("/customers/5").json(), "email": "stale@pushed.example", "updated_at": "2020-01-01T00:00:00Z"}
    assert post(receiver, tenant, *hook(older, tenant)).status_code == 202  # a late hook of an old version
    until(lambda: ended(hook_runs(ops, tenant)), "the stale hook's micro-batch ended")
    assert {r["external_id"]: r["email"] for r in accounting(apis)}["5"] == polled_at["5"]["email"]
    current = crm.patch("/customers/5", json={"email": "pushed@current.example"}).raise_for_status().json()
    assert post(receiver, tenant, *hook(current, tenant)).status_code == 202
    until(lambda: {r["external_id"]: r["email"] for r in accounting(apis)}["5"] == "pushed@current.example", "landed")
    until(lambda: len(hook_runs(ops, tenant)) == 2 and ended(hook_runs(ops, tenant)), "both micro-batches ended")
    assert watermark(ops, tenant) == synced  # the micro-batches moved no watermark: it is the polling's
    writes = httpx.get(f"{apis.accounting_url}/_control/stats").json()
    batch_id = polling_run(ops, config, tenant)  # the safety net reads the change again and finds it loaded
    assert watermark(ops, tenant) == current["updated_at"] != synced
    assert httpx.get(f"{apis.accounting_url}/_control/stats").json()["writes"] == writes["writes"]
    status = ops.console("status", "--tenant", tenant, batch_id, "--json")
    assert json.loads(status.stdout)["batch"]["unchanged"] >= 1
