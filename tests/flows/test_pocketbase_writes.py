"""How a load writes to a real PocketBase server, configured from the README's reference alone: a type 1 full
refresh that deletes the keys deleted at the source (single writes shaped per action, and creates and updates
through the batch API), and PocketBase's transactional `/api/batch` refusing rows that break a field rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from prefect_restful_etl.flows.builder import build_flow
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.jobtypes import BatchType

from fixtures.servers.pocketbase import PocketBaseServer

pytestmark = pytest.mark.integration

RECORDS = "/api/collections/{}/records".format
NAME_MAX = 30  # the destination's rule: a longer name is refused by PocketBase, not by a screen of ours
BATCH_API = {
    "path": "/api/batch",
    "item": "request",
    "envelope": "requests",
    "id_path": "body.id",
    "failures_path": "data.requests",
    "failure_message_path": "response.message",
    "transactional": True,
}


def batch_type(name: str, source: str, target: str, load: dict[str, Any]) -> BatchType:
    """Extract every customer, keep three fields, load them as type 1 by `external_id` into the collection
    `target` (read to diff; `load`'s write shapes may write elsewhere)."""
    return BatchType.model_validate(
        {
            "name": name,
            "apis": {
                "pb": {
                    "name": "pb",
                    "base_url": "http://127.0.0.1:9",  # the run's base_urls parameter names the real one
                    "auth": {"type": "login", "login_url": "/api/collections/_superusers/auth-with-password",
                             "body": {"identity": "{username}", "password": "{password}"},
                             "token_path": "token", "prefix": ""},
                    "paginator": {"type": "page_number", "page_param": "page", "size_param": "perPage",
                                  "page_size": 3, "total_path": "totalItems", "concurrent": True},
                }
            },
            "jobs": [
                {"kind": "extract", "name": "Extract customers", "api": "pb", "natural_key": ["external_id"],
                 "endpoint": {"path": RECORDS(source), "records_path": "items", "params": {"sort": "external_id"}}},
                {"kind": "transform", "name": "Shape accounts", "source": "Extract customers",
                 "steps": [{"op": "select", "fields": ["external_id", "name", "email"]}]},
                {"kind": "load", "name": "Load accounts", "source": "Shape accounts", "api": "pb",
                 "endpoint": {"path": RECORDS(target), "records_path": "items"}, "natural_key": ["external_id"],
                 "compare": ["name", "email"], "scd_type": 1, "update_method": "PATCH", **load},
            ],
        }
    )  # fmt: skip


def run_parameters(pb: PocketBaseServer, **more: Any) -> dict[str, Any]:
    credentials = {"pb": Credentials(username=pb.email, password=SecretStr(pb.password))}
    return {"tenant_id": "acme", "credentials": credentials, "base_urls": {"pb": pb.url}, **more}


def customer(n: int, name: str | None = None) -> dict[str, Any]:
    return {"external_id": str(n), "name": name or f"Customer {n}", "email": f"c{n}@example.com"}


def rows_by_key(pb: PocketBaseServer, collection: str) -> dict[str, list[dict[str, Any]]]:
    held: dict[str, list[dict[str, Any]]] = {}
    for row in pb.records(collection, sort="external_id"):
        held.setdefault(row["external_id"], []).append(row)
    return held


def writes(counts: dict[str, int]) -> tuple[int, ...]:
    return tuple(counts[name] for name in ("inserted", "updated", "deleted", "failed_writes"))


async def load_events(etl_home: Path, batch_id: str) -> dict[str, str]:
    """The load's error events of a batch: natural key -> message."""
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        return {e.natural_key: e.message for e in await audit.error_events(batch_id) if e.screen == "load"}
    finally:
        await audit.close()


# Single writes read a read-only view of the destination and write the collection through their URL templates:
# a write sent to the default URL (the view's) would be refused.
SINGLE = {
    "shape_values": {"table": "{target}"},
    "writes": {
        "create": {"path": "/api/collections/{table}/records", "body": {"origin": "single"}, "id_path": "id"},
        "update": {"method": "PATCH", "path": "/api/collections/{table}/records/{id}"},
        "delete": {"method": "DELETE", "path": "/api/collections/{table}/records/{id}"},
    },
}
BATCH = {"writes": {"create": {"body": {"origin": "batch"}}}, "bulk": {**BATCH_API, "batch_size": 4}}


@pytest.mark.parametrize("shape", [SINGLE, BATCH], ids=["single-writes", "batch-api"])
async def test_a_full_refresh_deletes_the_keys_deleted_at_the_source(
    prefect_harness: Path,
    etl_home: Path,
    pocketbase_server: PocketBaseServer,
    unique_name: str,
    shape: dict[str, Any],
) -> None:
    pb, source, target = pocketbase_server, f"{unique_name}_source", f"{unique_name}_target"
    text = [{"name": f, "type": "text"} for f in ("external_id", "name", "email")]
    pb.create_collection(source, text, unique=["external_id"])
    pb.create_collection(target, [*text, {"name": "origin", "type": "text"}])
    ids = {str(n): pb.create(source, customer(n))["id"] for n in range(1, 7)}
    load = {**shape, "missing": {"action": "delete", "max_fraction": 0.5}}
    read = target
    if "shape_values" in shape:
        load["shape_values"] = {"table": target}
        read = f"{unique_name}_view"
        pb.create_view(read, f"SELECT id, external_id, name, email, origin FROM {target}")
    flow = build_flow(batch_type(f"pocketbase-deletes-{unique_name}", source, read, load))
    origin = shape["writes"]["create"]["body"]["origin"]

    first = await flow(**run_parameters(pb, full_refresh=True))
    assert first.status == "COMPLETED"
    assert writes(first.counts) == (6, 0, 0, 0)
    held = rows_by_key(pb, target)
    assert sorted(held, key=int) == ["1", "2", "3", "4", "5", "6"]
    assert all(len(rows) == 1 and rows[0]["origin"] == origin for rows in held.values())  # the create's body

    pb.delete(source, ids["2"])
    pb.delete(source, ids["5"])
    pb.update(source, ids["3"], {"name": "Customer 3, renamed"})
    refresh = await flow(**run_parameters(pb, full_refresh=True))
    assert refresh.status == "COMPLETED"
    assert writes(refresh.counts) == (0, 1, 2, 0)
    after = rows_by_key(pb, target)
    assert sorted(after, key=int) == ["1", "3", "4", "6"]  # 2 and 5 are gone from the destination, not marked
    assert {k: rows[0]["id"] for k, rows in after.items()} == {k: held[k][0]["id"] for k in after}  # same rows
    assert after["3"][0]["name"] == "Customer 3, renamed"

    rerun = await flow(**run_parameters(pb, full_refresh=True))
    assert rerun.status == "COMPLETED"
    assert writes(rerun.counts) == (0, 0, 0, 0) and rerun.counts["unchanged"] == 4
    assert rows_by_key(pb, target) == after


@pytest.mark.parametrize("refused", [["3"], ["3", "6"]], ids=["one-refused", "two-refused"])
async def test_a_row_the_batch_api_refuses_is_an_error_event_and_the_others_land_once(
    prefect_harness: Path, etl_home: Path, pocketbase_server: PocketBaseServer, unique_name: str, refused: list[str]
) -> None:
    pb, source, target = pocketbase_server, f"{unique_name}_source", f"{unique_name}_target"
    text = [{"name": f, "type": "text"} for f in ("external_id", "name", "email")]
    pb.create_collection(source, text, unique=["external_id"])
    bounded = [{"name": "external_id", "type": "text"}, {"name": "name", "type": "text", "max": NAME_MAX},
               {"name": "email", "type": "text"}]  # fmt: skip
    pb.create_collection(target, bounded)
    too_long = "a name far longer than the destination allows"
    ids = {str(n): pb.create(source, customer(n, too_long if str(n) in refused else None))["id"] for n in range(1, 8)}
    load = {"bulk": {**BATCH_API, "batch_size": 10}}  # every row in one transaction
    flow = build_flow(batch_type(f"pocketbase-refusals-{unique_name}", source, target, load))

    first = await flow(**run_parameters(pb))
    assert first.status == "COMPLETED"
    assert writes(first.counts) == (7 - len(refused), 0, 0, len(refused))
    events = await load_events(etl_home, first.batch_id)
    assert sorted(events) == refused
    assert all("/api/batch" in message and "refusing the record" in message for message in events.values())
    held = rows_by_key(pb, target)
    assert sorted(held, key=int) == [str(n) for n in range(1, 8) if str(n) not in refused]
    assert all(len(rows) == 1 for rows in held.values())  # none twice: the rolled-back rows were sent again once

    # One transaction again, of creates and updates: 3 fixed, 8 new, 1 renamed, 2 now refused as an update.
    pb.update(source, ids["3"], {"name": "Customer 3"})
    pb.update(source, ids["1"], {"name": "Customer 1, renamed"})
    pb.update(source, ids["2"], {"name": too_long})
    pb.create(source, customer(8))
    still = [key for key in refused if key != "3"]
    second = await flow(**run_parameters(pb))
    assert second.status == "COMPLETED"
    assert writes(second.counts) == (2, 1, 0, 1 + len(still))
    assert sorted(await load_events(etl_home, second.batch_id)) == sorted(["2", *still])
    after = rows_by_key(pb, target)
    assert sorted(after, key=int) == [str(n) for n in range(1, 9) if str(n) not in still]
    assert all(len(rows) == 1 for rows in after.values())
    assert after["1"][0]["name"] == "Customer 1, renamed" and after["2"][0]["name"] == "Customer 2"
    assert {k: after[k][0]["id"] for k in held} == {k: rows[0]["id"] for k, rows in held.items()}
