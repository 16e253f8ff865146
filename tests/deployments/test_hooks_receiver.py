"""The receiver's HTTP handling, in process (httpx's ASGI transport) on a memory stage: where the tenant is found,
what each refusal answers, ids in place of records, a stage outage, and the micro-batch it starts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from prefect_restful_etl.deployments.hooks import Endpoint, HookReceiver
from prefect_restful_etl.tasks.engine.exceptions import StageUnavailable
from prefect_restful_etl.tasks.engine.hooks.config import HookEndpoint, HookFeed, HooksConfig
from prefect_restful_etl.tasks.engine.hooks.intake import Intake
from prefect_restful_etl.tasks.engine.hooks.signature import sign
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage

SECRET = "whsec-receiver-test-secret"


class Runs:
    """A dispatcher that records each micro-batch and completes it."""

    def __init__(self) -> None:
        self.started: list[tuple[dict[str, Any], list[str]]] = []

    async def run(self, parameters: dict[str, Any], tags: list[str]) -> tuple[str, str]:
        self.started.append((parameters, tags))
        return str(uuid.uuid4()), "COMPLETED"


class BrokenStage(MemoryStage):
    async def append(self, key: StageKey, records: list[dict[str, Any]]) -> None:
        raise StageUnavailable("append", str(key), "redis://127.0.0.1:1/0: Connection refused")


def endpoint(name: str, **fields: Any) -> HookEndpoint:
    base: dict[str, Any] = {
        "batch_type": "crm-to-accounting",
        "signature": {"type": "hmac"},
        "records": "data.object",
        "debounce_seconds": 0,
        "tenants": {name: {"secret": {"sealed": "not-opened-here"}, "sealed_credentials": "gAAAA-sealed"}},
    }
    return HookEndpoint.model_validate(base | fields)


async def receiver_for(config: HookEndpoint, stage: MemoryStage | None = None) -> tuple[HookReceiver, Runs]:
    runs = Runs()
    tenant = next(iter(config.tenants))
    opened = Endpoint(config, HookFeed(job="Extract CRM customers"), {tenant: SecretStr(SECRET)})
    intake = Intake(stage or MemoryStage(), "main")
    receiver = HookReceiver(HooksConfig(endpoints=[config]), [opened], intake, runs, emit=False)
    await receiver.start()
    return receiver, runs


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    made: list[tuple[HookReceiver, httpx.AsyncClient]] = []

    async def make(
        config: HookEndpoint, stage: MemoryStage | None = None
    ) -> tuple[httpx.AsyncClient, HookReceiver, Runs]:
        receiver, runs = await receiver_for(config, stage)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app), base_url="http://receiver")
        made.append((receiver, http))
        return http, receiver, runs

    yield make
    for receiver, http in made:
        await http.aclose()
        await receiver.stop()


def signed(payload: Any, **headers: str) -> dict[str, Any]:
    body = orjson.dumps(payload)
    return {"content": body, "headers": {**sign(endpoint("x").signature, SECRET, body), **headers}}


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


async def test_a_hook_is_accepted_stored_and_run_as_one_micro_batch(client: Any, tenant: str) -> None:
    http, receiver, runs = await client(endpoint(tenant))
    for n in range(3):
        answer = await http.post(
            f"/hooks/crm-to-accounting/{tenant}", **signed({"id": f"e{n}", "data": {"object": {"id": n}}})
        )
        assert (answer.status_code, answer.json()) == (202, {"status": "accepted", "event_id": f"e{n}"})
    await until(lambda: runs.started and receiver.debouncer.running() == 0)
    parameters, tags = runs.started[0]
    assert parameters["tenant_id"] == tenant and parameters["feed"]["job"] == "Extract CRM customers"
    assert parameters["sealed_credentials"] == "gAAAA-sealed" and "credentials" not in parameters
    assert tags == [f"tenant:{tenant}", "batch-type:crm-to-accounting", "hooks"]
    assert await receiver.intake.waiting(tenant, "crm-to-accounting") == 0  # done: forgotten


@pytest.mark.parametrize(
    ("where", "place"),
    [({"type": "header", "name": "X-Tenant"}, "header"), ({"type": "body", "path": "account"}, "body")],
    ids=["header", "body"],
)
async def test_the_tenant_can_come_in_a_header_or_the_body(
    client: Any, tenant: str, where: dict[str, str], place: str
) -> None:
    http, _, _ = await client(endpoint(tenant, tenant=where))
    payload = {"id": "e1", "data": {"object": {"id": 1}}, **({"account": tenant} if place == "body" else {})}
    extra = {"X-Tenant": tenant} if place == "header" else {}
    assert (await http.post("/hooks/crm-to-accounting", **signed(payload, **extra))).status_code == 202
    other = {"X-Tenant": "nobody"} if place == "header" else {}
    payload = {**payload, "account": "nobody"} if place == "body" else payload
    refused = await http.post("/hooks/crm-to-accounting", **signed(payload, **other))
    assert (refused.status_code, refused.json()["reason"]) == (404, "unknown_tenant")


async def test_refusals_answer_their_status_and_are_counted_per_reason(client: Any, tenant: str) -> None:
    config = endpoint(tenant, rate={"per_second": 0.001, "burst": 2}, max_body_bytes=200)
    http, receiver, _ = await client(config)
    url = f"/hooks/crm-to-accounting/{tenant}"
    shapeless = await http.post(url, **signed({"id": "e0", "data": {"object": "not a record"}}))
    assert (shapeless.status_code, shapeless.json()["reason"]) == (422, "shape")
    listed = await http.post(url, **signed([1, 2]))
    assert (listed.status_code, listed.json()["reason"]) == (400, "not_json")
    large = await http.post(url, **signed({"id": "e9", "data": {"object": {"id": 1, "notes": "x" * 300}}}))
    assert (large.status_code, large.json()["reason"]) == (413, "too_large")
    answers = [await http.post(url, **signed({"id": f"e{n}", "data": {"object": {"id": n}}})) for n in range(1, 4)]
    assert [a.status_code for a in answers] == [202, 429, 429]  # the bucket held two: the shapeless one took one
    assert int(answers[1].headers["Retry-After"]) >= 1
    counts = receiver.counts.snapshot()[f"crm-to-accounting/{tenant}"]
    assert {k: v for k, v in counts.items() if k not in ("batched", "micro_batches")} == {
        "refused.shape": 1,
        "refused.not_json": 1,
        "refused.too_large": 1,
        "accepted": 1,
        "refused.rate": 2,
    }


async def test_a_hook_with_only_an_id_is_stored_as_an_id_to_fetch(client: Any, tenant: str) -> None:
    config = endpoint(tenant, records=None, ids="data.id", fetch={"path": "/customers/{id}"}, debounce_seconds=3600)
    http, receiver, _ = await client(config)
    assert (
        await http.post(f"/hooks/crm-to-accounting/{tenant}", **signed({"id": "e1", "data": {"id": 7}}))
    ).status_code == 202
    segments = await receiver.intake.seal(tenant, "crm-to-accounting")
    stored = [e async for chunk in receiver.intake.read(tenant, "crm-to-accounting", segments[0]) for e in chunk]
    assert [(e["event_id"], e["ids"], "records" in e) for e in stored] == [("e1", [7], False)]


async def test_an_event_without_an_id_is_known_by_its_body(client: Any, tenant: str) -> None:
    http, _, _ = await client(endpoint(tenant, debounce_seconds=3600))
    hook = signed({"data": {"object": {"id": 1}}})
    first, again = [await http.post(f"/hooks/crm-to-accounting/{tenant}", **hook) for _ in range(2)]
    assert first.status_code == 202 and first.json()["event_id"].startswith("sha256:")
    assert (again.status_code, again.json()) == (200, {"status": "duplicate", "event_id": first.json()["event_id"]})


async def test_a_stage_that_cannot_be_written_is_503_so_the_source_retries(client: Any, tenant: str) -> None:
    http, _, runs = await client(endpoint(tenant), BrokenStage())
    answer = await http.post(
        f"/hooks/crm-to-accounting/{tenant}", **signed({"id": "e1", "data": {"object": {"id": 1}}})
    )
    assert (answer.status_code, answer.json()["reason"], answer.headers["Retry-After"]) == (503, "stage", "5")
    assert "Connection refused" not in answer.text and runs.started == []


async def test_the_status_page_answers_on_loopback_only(tenant: str) -> None:
    receiver, _ = await receiver_for(endpoint(tenant))
    try:
        for client_host, status in (("127.0.0.1", 200), ("203.0.113.5", 404)):
            transport = httpx.ASGITransport(app=receiver.app, client=(client_host, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as http:
                answer = await http.get("/_status")
            assert answer.status_code == status
            assert (tenant in answer.text) == (status == 200)
    finally:
        await receiver.stop()


class HeldRuns(Runs):
    """A dispatcher whose runs wait for `release`: hooks arrive while a micro-batch runs."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def run(self, parameters: dict[str, Any], tags: list[str]) -> tuple[str, str]:
        self.started.append((parameters, tags))
        await self.release.wait()
        return str(uuid.uuid4()), "COMPLETED"


async def test_hooks_arriving_during_a_micro_batch_are_sealed_in_bounded_segments_and_run_in_bounded_batches(
    tenant: str,
) -> None:
    runs = HeldRuns()
    config = endpoint(tenant, max_events=3, debounce_seconds=0)
    opened = Endpoint(config, HookFeed(job="Extract CRM customers"), {tenant: SecretStr(SECRET)})
    receiver = HookReceiver(HooksConfig(endpoints=[config]), [opened], Intake(MemoryStage()), runs, emit=False)
    await receiver.start()
    transport = httpx.ASGITransport(app=receiver.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as http:
            url = f"/hooks/crm-to-accounting/{tenant}"
            await http.post(url, **signed({"id": "first", "data": {"object": {"id": 0}}}))
            await until(lambda: len(runs.started) == 1)
            for n in range(1, 31):  # while the first micro-batch runs
                assert (
                    await http.post(url, **signed({"id": f"e{n}", "data": {"object": {"id": n}}}))
                ).status_code == 202
            sealed: list[str] = []

            async def sealed_now() -> list[str]:
                registry = await receiver.intake.registry(tenant, "crm-to-accounting")
                return [segment for segment, state in registry.items() if state == "sealed"]

            deadline = asyncio.get_running_loop().time() + 10
            while len(sealed := await sealed_now()) < 9:  # a segment per three events, while the run still runs
                assert asyncio.get_running_loop().time() < deadline, f"{len(sealed)} segments sealed during the run"
                await asyncio.sleep(0.01)
            runs.release.set()
            await until(lambda: receiver.debouncer.running() == 0 and len(runs.started) > 1)
            await until(lambda: receiver.debouncer.running() == 0)
        assert all(len(parameters["segments"]) <= 4 for parameters, _ in runs.started)
        taken = [segment for parameters, _ in runs.started for segment in parameters["segments"]]
        assert sorted(taken) == sorted(set(taken)) and set(sealed) <= set(taken)
        assert await receiver.intake.waiting(tenant, "crm-to-accounting") == 0
    finally:
        await receiver.stop()
