"""A batch type for PocketBase, configured from the README's reference alone, against a real PocketBase server:
a login for the token, numbered pages with `totalItems` fetched concurrently, an incremental filter expression,
a staged lookup, screens, and an SCD type 2 load through PocketBase's transactional batch API."""

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

TEXT = ("external_id", "name", "email", "country")


def batch_type(names: dict[str, str]) -> BatchType:
    collection = "/api/collections/{}/records".format
    return BatchType.model_validate(
        {
            "name": f"pocketbase-{names['source'].replace('_', '-')}",
            "apis": {
                "pb": {
                    "name": "pb",
                    "base_url": "http://127.0.0.1:9",  # the run's base_urls parameter names the real one
                    "auth": {
                        "type": "login",
                        "login_url": "/api/collections/_superusers/auth-with-password",
                        "body": {"identity": "{username}", "password": "{password}"},
                        "token_path": "token",
                        "prefix": "",
                    },
                    "paginator": {"type": "page_number", "page_param": "page", "size_param": "perPage",
                                  "page_size": 3, "total_path": "totalItems", "concurrent": True},
                    "concurrency": 3,
                }
            },
            "jobs": [
                {"kind": "extract", "name": "Extract countries", "api": "pb", "natural_key": ["code"],
                 "endpoint": {"path": collection(names["countries"]), "records_path": "items"}},
                {"kind": "extract", "name": "Extract customers", "api": "pb", "natural_key": ["external_id"],
                 "endpoint": {"path": collection(names["source"]), "records_path": "items",
                              "params": {"sort": "updated,external_id"}},
                 "incremental": {"cursor_field": "updated", "param": "filter",
                                 "template": '(updated >= "{watermark}")', "escape": "backslash"}},
                {"kind": "transform", "name": "Shape accounts", "source": "Extract customers",
                 "steps": [{"op": "select", "fields": ["external_id", "name", "email", "country"]},
                           {"op": "lookup", "field": "country", "target": "country_name", "source": "countries",
                            "on_miss": "default"}],
                 "lookups": {"countries": {"type": "staged", "job": "Extract countries", "key_field": "code",
                                           "value_field": "name"}},
                 "screens": [{"name": "email present", "check": "pattern", "column": "email",
                              "pattern": "^[^@ ]+@[^@ ]+$", "severity": 8},
                             {"name": "known country", "check": "exists", "column": "country",
                              "lookup": "countries"}]},
                {"kind": "load", "name": "Load accounts", "source": "Shape accounts", "api": "pb",
                 "endpoint": {"path": collection(names["target"]), "records_path": "items"},
                 "natural_key": ["external_id"], "compare": ["name", "email", "country_name"], "scd_type": 2,
                 "history": {"valid_from": "valid_from", "valid_to": "valid_to", "current": "is_current",
                             "version": "version", "open_end": ""},
                 "datetime_format": "%Y-%m-%d %H:%M:%S.%3fZ", "missing": {"action": "expire"},
                 "writes": {"update": {"method": "PATCH"}},
                 "bulk": {"path": "/api/batch", "item": "request", "envelope": "requests", "id_path": "body.id",
                          "batch_size": 4, "failures_path": "data.requests",
                          "failure_message_path": "response.message", "transactional": True},
                 "audit_columns": {"batch_id": "etl_batch_id", "loaded_at": "etl_loaded_at"}},
            ],
        }
    )  # fmt: skip


@pytest.fixture
def collections(pocketbase_server: PocketBaseServer, unique_name: str) -> dict[str, str]:
    pb = pocketbase_server
    names = {part: f"{unique_name}_{part}" for part in ("countries", "source", "target")}
    pb.create_collection(names["countries"], [{"name": "code", "type": "text"}, {"name": "name", "type": "text"}])
    pb.create_collection(names["source"], [{"name": f, "type": "text"} for f in TEXT], unique=["external_id"])
    target_fields = [{"name": f, "type": "text"} for f in (*TEXT, "country_name", "valid_from", "valid_to")]
    target_fields += [{"name": "is_current", "type": "bool"}, {"name": "version", "type": "number"}]
    target_fields += [{"name": "etl_batch_id", "type": "text"}, {"name": "etl_loaded_at", "type": "text"}]
    pb.create_collection(names["target"], target_fields)
    for code, name in (("DE", "Germany"), ("FR", "France"), ("NL", "Netherlands")):
        pb.create(names["countries"], {"code": code, "name": name})
    for n in range(1, 9):
        email = None if n == 7 else f"c{n}@example.com"  # 7: no email (PocketBase answers ""); 8: unknown country
        pb.create(names["source"], {"external_id": str(n), "name": f"Customer {n}", "email": email,
                                    "country": "ZZ" if n == 8 else ("DE", "FR", "NL")[n % 3]})  # fmt: skip
    return names


def run_parameters(pb: PocketBaseServer, **more: Any) -> dict[str, Any]:
    credentials = {"pb": Credentials(username=pb.email, password=SecretStr(pb.password))}
    return {"tenant_id": "acme", "credentials": credentials, "base_urls": {"pb": pb.url}, **more}


def versions(pb: PocketBaseServer, collection: str) -> dict[str, list[dict[str, Any]]]:
    held: dict[str, list[dict[str, Any]]] = {}
    for row in pb.records(collection, sort="version"):
        held.setdefault(row["external_id"], []).append(row)
    return held


async def test_pocketbase_full_sync_rerun_incremental_change_and_full_refresh(
    prefect_harness: Path, etl_home: Path, pocketbase_server: PocketBaseServer, collections: dict[str, str]
) -> None:
    pb, target = pocketbase_server, collections["target"]
    flow = build_flow(batch_type(collections))

    first = await flow(**run_parameters(pb, full_refresh=True))
    assert first.status == "COMPLETED"
    assert (first.counts["extracted"], first.counts["rejected"], first.counts["inserted"]) == (8, 2, 6)
    countries = next(job for job in first.jobs if job.job == "Extract countries")
    assert countries.counts["extracted"] == 3  # its own count, out of the batch's
    held = versions(pb, target)
    assert sorted(held, key=int) == ["1", "2", "3", "4", "5", "6"]
    assert all(rows[0]["is_current"] and rows[0]["version"] == 1 for rows in held.values())
    assert held["1"][0]["country_name"] == "France" and held["1"][0]["etl_batch_id"] == first.batch_id
    assert held["1"][0]["valid_from"].endswith("Z") and held["1"][0]["valid_from"][10] == " "  # its own format
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        events = await audit.error_events(first.batch_id)
        assert sorted((e.natural_key, e.screen) for e in events) == [("7", "email present"), ("8", "known country")]
    finally:
        await audit.close()

    rerun = await flow(**run_parameters(pb))
    assert rerun.status == "COMPLETED"
    assert (rerun.counts["inserted"], rerun.counts["updated"], rerun.counts["expired"]) == (0, 0, 0)
    assert versions(pb, target) == held  # nothing written: same rows, same ids, same stamps

    source_ids = {row["external_id"]: row["id"] for row in pb.records(collections["source"])}
    pb.update(collections["source"], source_ids["2"], {"name": "Customer 2, renamed"})
    pb.create(collections["source"], {"external_id": "9", "name": "Customer 9", "email": "c9@example.com",
                                      "country": "NL"})  # fmt: skip
    changed = await flow(**run_parameters(pb))
    assert changed.counts["extracted"] == 2  # only what changed since the watermark, through the filter
    assert (changed.counts["inserted"], changed.counts["updated"], changed.counts["expired"]) == (1, 1, 1)
    history = versions(pb, target)["2"]
    assert [(r["version"], r["is_current"], r["name"]) for r in history] == [
        (1, False, "Customer 2"),
        (2, True, "Customer 2, renamed"),
    ]
    assert history[0]["valid_to"] == history[1]["valid_from"] != ""  # the old version ends where the new begins

    pb.delete(collections["source"], source_ids["3"])
    refresh = await flow(**run_parameters(pb, full_refresh=True))
    assert refresh.counts["expired"] == 1 and refresh.counts["inserted"] == 0
    after = versions(pb, target)
    assert [r["is_current"] for r in after["3"]] == [False]  # the deleted key's version is closed
    assert sum(r["is_current"] for rows in after.values() for r in rows) == 6  # 1, 2, 4, 5, 6, 9
