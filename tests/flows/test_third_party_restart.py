"""Kill and resume against APIs nobody here wrote: a batch of a user's batch type file, served by `restful-etl
serve` on a real Prefect server and staging on Redis, has its flow run's process SIGKILLed while the load writes
to PocketBase or Mockoon; Prefect marks it Crashed, and a run with `resume_batch_id` finishes it from its stage.
The destination ends with one row per key: none lost, none twice, though Mockoon would take a second create of a
key without a word (its POST of a record it holds appends another).

The destination API of each batch type has a `rate_limit`, so that the load takes long enough to be killed
while it writes (the test polls the destination until rows appear, then kills).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from restart_support import ServedFolder, audit_rows, job_statuses, stage_batches, wait_for, wait_for_audit

from fixtures.mockoon_server import MockoonFactory
from fixtures.servers.mockoon import MockoonServer
from fixtures.servers.pocketbase import PocketBaseServer
from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

CUSTOMERS = 300
KILL_AFTER = 20  # rows in the destination before the kill
EXTRACT, TRANSFORM, LOAD = "Extract customers", "Shape accounts", "Load accounts"


def shape(source_key: str) -> dict[str, Any]:
    """The transform both batch types share: the source's key becomes the destination's natural key (PocketBase
    answers a missing email as "", Mockoon as null: `blank_is_null` screens both)."""
    return {"kind": "transform", "name": TRANSFORM, "source": EXTRACT,
            "steps": [{"op": "rename", "fields": {source_key: "external_id"}},
                      {"op": "select", "fields": ["external_id", "name", "email"]}],
            "screens": [{"name": "email present", "check": "not_null", "column": "email", "blank_is_null": True,
                         "severity": 8}]}  # fmt: skip


def pocketbase_batch_type(name: str, source: str, target: str) -> dict[str, Any]:
    login = {
        "type": "login",
        "login_url": "/api/collections/_superusers/auth-with-password",
        "body": {"identity": "{username}", "password": "{password}"},
        "token_path": "token",
        "prefix": "",
    }
    pages = {
        "type": "page_number",
        "page_param": "page",
        "size_param": "perPage",
        "page_size": 100,
        "total_path": "totalItems",
    }
    records = "/api/collections/{}/records".format
    return {
        "name": name,
        "apis": {"pb": {"name": "pb", "base_url": "http://127.0.0.1:9", "auth": login, "paginator": pages},
                 "pb_out": {"name": "pb_out", "base_url": "http://127.0.0.1:9", "auth": login, "paginator": pages,
                            "rate_limit": 8}},
        "jobs": [
            {"kind": "extract", "name": EXTRACT, "api": "pb", "natural_key": ["external_id"],
             "endpoint": {"path": records(source), "records_path": "items", "params": {"sort": "external_id"}}},
            shape("external_id"),
            {"kind": "load", "name": LOAD, "source": TRANSFORM, "api": "pb_out",
             "endpoint": {"path": records(target), "records_path": "items"}, "natural_key": ["external_id"],
             "scd_type": 2, "history": {"valid_from": "valid_from", "valid_to": "valid_to", "current": "is_current",
                                        "version": "version", "open_end": ""},
             "datetime_format": "%Y-%m-%d %H:%M:%S.%3fZ", "writes": {"update": {"method": "PATCH"}},
             "bulk": {"path": "/api/batch", "item": "request", "envelope": "requests", "id_path": "body.id",
                      "batch_size": 4, "failures_path": "data.requests",
                      "failure_message_path": "response.message", "transactional": True}},
        ],
    }  # fmt: skip


def mockoon_batch_type(name: str) -> dict[str, Any]:
    pages = {
        "type": "page_number",
        "page_param": "page",
        "size_param": "limit",
        "page_size": 100,
        "total_header": "X-Filtered-Count",
    }
    return {
        "name": name,
        "apis": {"mock": {"name": "mock", "base_url": "http://127.0.0.1:9", "paginator": pages},
                 "mock_out": {"name": "mock_out", "base_url": "http://127.0.0.1:9", "paginator": pages,
                              "rate_limit": 20, "concurrency": 2}},
        "jobs": [
            {"kind": "extract", "name": EXTRACT, "api": "mock", "natural_key": ["id"],
             "endpoint": {"path": "/customers", "params": {"sort": "id"}}},
            shape("id"),
            {"kind": "load", "name": LOAD, "source": TRANSFORM, "api": "mock_out", "endpoint": {"path": "/accounts"},
             "natural_key": ["external_id"], "update_method": "PATCH", "concurrency": 2},
        ],
    }  # fmt: skip


def customer(n: int) -> dict[str, Any]:
    return {"name": f"Customer {n}", "email": None if n % 50 == 0 else f"c{n}@example.com"}  # every 50th rejected


KEPT = {n for n in range(1, CUSTOMERS + 1) if n % 50}


@pytest.fixture
def serving(prefect_server: PrefectServer, etl_home: Path, redis_url: str) -> Iterator[Any]:
    """`serving({name: batch type})` starts `restful-etl serve` on them; stopped after the test."""
    started: list[ServedFolder] = []

    def serve(batch_types: dict[str, dict[str, Any]]) -> ServedFolder:
        environment = {"RESTFUL_ETL_HOME": str(etl_home), "RESTFUL_ETL_STAGE_URL": redis_url}
        started.append(ServedFolder(prefect_server, etl_home / "batch_types", batch_types, environment))
        return started[-1]

    yield serve
    for served in started:
        served.stop()


async def kill_mid_load_then_resume(
    served: ServedFolder,
    name: str,
    parameters: dict[str, Any],
    written: Callable[[], int],
    etl_home: Path,
    redis_url: str,
) -> tuple[str, str]:
    """The batch killed once `written()` rows are in the destination, then resumed; (killed id, resumed id)."""
    await wait_for(lambda: served.deployment_id(name) is not None, f"{name} served", timeout=120)
    killed = served.start_run(name, parameters)
    await wait_for(lambda: written() >= KILL_AFTER, f"the load wrote {KILL_AFTER} rows", timeout=180)
    served.kill_flow_run()
    assert written() < len(KEPT), "the load ended before the kill: nothing was cut off"

    await wait_for(lambda: served.state(killed) == "CRASHED", "Prefect says Crashed")
    await wait_for_audit(etl_home, killed, "CRASHED")  # the runner ran the flow's on_crashed hook
    _, jobs = await audit_rows(etl_home, killed)
    assert job_statuses(jobs) == [(EXTRACT, "COMPLETED"), (TRANSFORM, "COMPLETED"), (LOAD, "CRASHED")]
    assert stage_batches(redis_url) == {killed}  # kept for the resume

    resumed = await served.run_to_end(name, {**parameters, "resume_batch_id": killed})
    row, jobs = await audit_rows(etl_home, resumed)
    assert row is not None and (row.status, row.resumed_from) == ("COMPLETED", killed)
    assert [job.message for job in jobs] == [f"reused from batch {killed}"] * 2 + [None]  # no second extract
    assert stage_batches(redis_url) == set()
    return killed, resumed


def assert_one_row_per_key(rows: list[dict[str, Any]]) -> None:
    keys = Counter(int(row["external_id"]) for row in rows)
    assert [key for key, n in keys.items() if n > 1] == []
    assert set(keys) == KEPT


async def test_a_pocketbase_batch_killed_mid_load_is_resumed_with_one_row_per_key(
    serving: Any, etl_home: Path, redis_url: str, pocketbase_server: PocketBaseServer, unique_name: str
) -> None:
    pb = pocketbase_server
    source, target, name = f"{unique_name}_source", f"{unique_name}_target", f"pocketbase-restart-{unique_name}"
    pb.create_collection(source, [{"name": f, "type": "text"} for f in ("external_id", "name", "email")])
    fields = [{"name": f, "type": "text"} for f in ("external_id", "name", "email", "valid_from", "valid_to")]
    fields += [{"name": "is_current", "type": "bool"}, {"name": "version", "type": "number"}]
    pb.create_collection(target, fields)
    seed_pocketbase(pb, source, [{"external_id": f"{n:03d}", **customer(n)} for n in range(1, CUSTOMERS + 1)])
    served = serving({name: pocketbase_batch_type(name, source, target)})
    credentials = {"username": pb.email, "password": pb.password}
    parameters = {"tenant_id": "acme", "credentials": {"pb": credentials, "pb_out": credentials},
                  "base_urls": {"pb": pb.url, "pb_out": pb.url}, "full_refresh": True}  # fmt: skip

    await kill_mid_load_then_resume(served, name, parameters, lambda: len(pb.records(target)), etl_home, redis_url)

    rows = pb.records(target)
    assert_one_row_per_key(rows)
    assert all(row["is_current"] and row["version"] == 1 for row in rows)


async def test_a_mockoon_batch_killed_mid_load_is_resumed_with_one_row_per_key(
    serving: Any, etl_home: Path, redis_url: str, mockoon: MockoonFactory
) -> None:
    mock: MockoonServer = mockoon({"customers": [{"id": n, **customer(n)} for n in range(1, CUSTOMERS + 1)],
                                   "accounts": []})  # fmt: skip
    served = serving({"mockoon-restart": mockoon_batch_type("mockoon-restart")})
    parameters = {"tenant_id": "acme", "credentials": {}, "base_urls": {"mock": mock.url, "mock_out": mock.url},
                  "full_refresh": True}  # fmt: skip

    await kill_mid_load_then_resume(
        served, "mockoon-restart", parameters, lambda: len(mock.records("accounts")), etl_home, redis_url
    )

    rows = mock.records("accounts")
    assert_one_row_per_key(rows)
    assert len({row["id"] for row in rows}) == len(rows)


def seed_pocketbase(pb: PocketBaseServer, collection: str, records: list[dict[str, Any]]) -> None:
    """Many records at once through PocketBase's batch API (100 a request)."""
    with pb.api() as client:
        for start in range(0, len(records), 100):
            requests = [{"method": "POST", "url": f"/api/collections/{collection}/records", "body": record}
                        for record in records[start : start + 100]]  # fmt: skip
            client.post("/api/batch", json={"requests": requests}).raise_for_status()
