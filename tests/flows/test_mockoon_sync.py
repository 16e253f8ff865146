"""A batch type for a Mockoon CRUD API, configured from the README's reference alone, against a real Mockoon CLI
server: numbered pages (`page`/`limit`) planned by the `X-Filtered-Count` header and fetched concurrently, an
incremental `<field>_gte` filter, screens, an SCD type 2 load and an SCD type 1 load that deletes missing keys.

Mockoon's CRUD route never refuses a create: a POST of a record it holds already is appended as a duplicate
(`tests/fixtures/test_mockoon_server.py` shows it). So nothing here may rely on a refusal; the tests count every
row of every bucket, duplicates included.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from prefect_restful_etl.flows.builder import build_flow
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.jobtypes import BatchType

from fixtures.mockoon_server import MockoonFactory
from fixtures.servers.mockoon import MockoonServer

pytestmark = pytest.mark.integration

COUNTRIES = {"DE": "Germany", "FR": "France", "NL": "Netherlands"}


def stamp(day: int, second: int) -> str:
    """The source's own cursor text: ISO 8601 with milliseconds, compared by Mockoon as text."""
    return f"2026-03-{day:02d}T10:00:{second:02d}.000Z"


def customers() -> list[dict[str, Any]]:
    rows = []
    for n in range(1, 9):
        rows.append({
            "id": n, "name": f"Customer {n}", "email": None if n == 7 else f"c{n}@example.com",
            "country": "ZZ" if n == 8 else ("DE", "FR", "NL")[n % 3], "updated_at": stamp(1, n),
        })  # fmt: skip
    return rows


BATCH_TYPE: dict[str, Any] = {
    "name": "mockoon-customers",
    "apis": {
        "mock": {
            "name": "mock",
            "base_url": "http://127.0.0.1:9",  # the run's base_urls parameter names the real one
            "paginator": {"type": "page_number", "page_param": "page", "size_param": "limit", "page_size": 3,
                          "total_header": "X-Filtered-Count", "concurrent": True},
            "concurrency": 3,
        }
    },
    "jobs": [
        {"kind": "extract", "name": "Extract customers", "api": "mock", "natural_key": ["id"],
         "endpoint": {"path": "/customers", "params": {"sort": "updated_at"}},
         "incremental": {"cursor_field": "updated_at", "param": "updated_at_gte"}},
        {"kind": "transform", "name": "Shape accounts", "source": "Extract customers",
         "steps": [{"op": "rename", "fields": {"id": "external_id"}},
                   {"op": "lookup", "field": "country", "target": "country_name", "source": "countries",
                    "on_miss": "default"},
                   {"op": "select", "fields": ["external_id", "name", "email", "country", "country_name"]}],
         "lookups": {"countries": {"type": "static", "values": COUNTRIES}},
         "screens": [{"name": "email present", "check": "not_null", "column": "email", "severity": 8},
                     {"name": "known country", "check": "exists", "column": "country", "lookup": "countries"}]},
        {"kind": "load", "name": "Load accounts", "source": "Shape accounts", "api": "mock",
         "endpoint": {"path": "/accounts"}, "natural_key": ["external_id"],
         "compare": ["name", "email", "country_name"], "scd_type": 2,
         "history": {"valid_from": "valid_from", "valid_to": "valid_to", "current": "is_current",
                     "version": "version"},
         "datetime_format": "%Y-%m-%dT%H:%M:%S.%3fZ", "missing": "expire", "update_method": "PATCH",
         # a few staged keys are looked up one by one through Mockoon's filter; a full refresh pulls them all
         "lookup": {"mode": "auto", "by_key_max": 3, "params": {"external_id": "external_id_eq"}},
         "audit_columns": {"batch_id": "etl_batch_id", "loaded_at": "etl_loaded_at"}},
        {"kind": "load", "name": "Load contacts", "source": "Shape accounts", "api": "mock",
         "endpoint": {"path": "/contacts"}, "natural_key": ["external_id"], "update_method": "PATCH",
         "missing": "delete"},
    ],
}  # fmt: skip


def run_parameters(mock: MockoonServer, **more: Any) -> dict[str, Any]:
    return {"tenant_id": "acme", "credentials": {}, "base_urls": {"mock": mock.url}, **more}


def versions(mock: MockoonServer) -> dict[int, list[dict[str, Any]]]:
    """Each key's rows in the accounts bucket, oldest version first."""
    held: dict[int, list[dict[str, Any]]] = {}
    for row in sorted(mock.records("accounts"), key=lambda row: row["version"]):
        held.setdefault(row["external_id"], []).append(row)
    return held


def one_row_per_key(mock: MockoonServer, bucket: str) -> dict[int, dict[str, Any]]:
    rows = mock.records(bucket)
    assert [key for key, n in Counter(row["external_id"] for row in rows).items() if n > 1] == []
    assert len({row["id"] for row in rows}) == len(rows)  # Mockoon would take a duplicate id too
    return {row["external_id"]: row for row in rows}


async def test_mockoon_full_sync_rerun_incremental_change_and_full_refresh(
    prefect_harness: Path, etl_home: Path, mockoon: MockoonFactory
) -> None:
    mock = mockoon({"customers": customers(), "accounts": [], "contacts": []})
    flow = build_flow(BatchType.model_validate(BATCH_TYPE))

    first = await flow(**run_parameters(mock, full_refresh=True))
    assert first.status == "COMPLETED"
    assert (first.counts["extracted"], first.counts["rejected"], first.counts["inserted"]) == (8, 2, 12)
    held = versions(mock)
    assert sorted(held) == [1, 2, 3, 4, 5, 6]
    assert all(len(rows) == 1 and rows[0]["is_current"] and rows[0]["version"] == 1 for rows in held.values())
    assert held[1][0]["country_name"] == "France" and held[1][0]["etl_batch_id"] == first.batch_id
    assert held[1][0]["valid_from"].endswith("Z") and len(held[1][0]["valid_from"]) == 24  # milliseconds
    assert sorted(one_row_per_key(mock, "contacts")) == [1, 2, 3, 4, 5, 6]
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        events = await audit.error_events(first.batch_id)
        assert sorted((e.natural_key, e.screen) for e in events) == [("7", "email present"), ("8", "known country")]
    finally:
        await audit.close()

    before = (mock.records("accounts"), mock.records("contacts"))
    rerun = await flow(**run_parameters(mock))
    assert rerun.status == "COMPLETED"
    assert (rerun.counts["inserted"], rerun.counts["updated"], rerun.counts["expired"]) == (0, 0, 0)
    assert (mock.records("accounts"), mock.records("contacts")) == before  # nothing written, not even a stamp

    mock.update("customers", 2, {"name": "Customer 2, renamed", "updated_at": stamp(2, 1)})
    mock.create("customers", {"id": 9, "name": "Customer 9", "email": "c9@example.com", "country": "NL",
                              "updated_at": stamp(2, 2)})  # fmt: skip
    changed = await flow(**run_parameters(mock))
    assert changed.status == "COMPLETED"
    # only what changed, through updated_at_gte: `gte` serves customer 8 at the watermark again too, which the
    # extract knows it read (the keys at the watermark) and leaves out
    assert changed.counts["extracted"] == 2
    assert (changed.counts["inserted"], changed.counts["updated"], changed.counts["expired"]) == (2, 2, 1)
    history = versions(mock)[2]
    assert [(r["version"], r["is_current"], r["name"]) for r in history] == [
        (1, False, "Customer 2"),
        (2, True, "Customer 2, renamed"),
    ]
    assert history[0]["valid_to"] == history[1]["valid_from"]  # the old version ends where the new begins
    assert one_row_per_key(mock, "contacts")[2]["name"] == "Customer 2, renamed"

    mock.delete("customers", 3)
    refresh = await flow(**run_parameters(mock, full_refresh=True))
    assert refresh.status == "COMPLETED"
    assert (refresh.counts["expired"], refresh.counts["deleted"], refresh.counts["inserted"]) == (1, 1, 0)
    after = versions(mock)
    assert [r["is_current"] for r in after[3]] == [False]  # the deleted key's version is closed
    assert sorted(k for k, rows in after.items() if rows[-1]["is_current"]) == [1, 2, 4, 5, 6, 9]
    assert sorted(one_row_per_key(mock, "contacts")) == [1, 2, 4, 5, 6, 9]  # removed from the type 1 copy


class LosingProxy:
    """A gateway in front of Mockoon on a free loopback port that forwards every request, and for the create of
    `lose_key` answers 502 once Mockoon has stored it: the write landed, its answer was lost on the way back."""

    def __init__(self, upstream: str, lose_key: int) -> None:
        self.creates: Counter[Any] = Counter()  # POSTs of each external_id that reached Mockoon
        proxy, client = self, httpx.Client(base_url=upstream)

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                answer = client.request(self.command, self.path, content=body, headers=headers)
                key = json.loads(body).get("external_id") if self.command == "POST" and body else None
                if key is not None:
                    proxy.creates[key] += 1
                lost = key == lose_key and proxy.creates[key] == 1
                status, content = (502, b"upstream timed out") if lost else (answer.status_code, answer.content)
                self.send_response(status)
                for name in ("Content-Type", "X-Total-Count", "X-Filtered-Count"):
                    if name in answer.headers and not lost:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._client = client
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._client.close()


@pytest.fixture
def losing_proxy(mockoon: MockoonFactory) -> Iterator[tuple[MockoonServer, LosingProxy]]:
    mock = mockoon({"customers": customers(), "accounts": []})
    proxy = LosingProxy(mock.url, lose_key=5)
    try:
        yield mock, proxy
    finally:
        proxy.close()


async def test_a_create_whose_answer_is_lost_is_looked_up_not_sent_again(
    prefect_harness: Path, etl_home: Path, losing_proxy: tuple[MockoonServer, LosingProxy]
) -> None:
    mock, proxy = losing_proxy
    config = {**BATCH_TYPE, "name": "mockoon-lost-answer", "jobs": BATCH_TYPE["jobs"][:3]}  # no contacts load
    flow = build_flow(BatchType.model_validate(config))

    report = await flow(tenant_id="acme", credentials={}, base_urls={"mock": proxy.url}, full_refresh=True)

    assert report.status == "COMPLETED"
    assert (report.counts["inserted"], report.counts["failed_writes"]) == (6, 0)
    assert proxy.creates[5] == 1  # the load found the row its lost create made, rather than POST it again
    held = one_row_per_key(mock, "accounts")  # a second POST would have been a second row: Mockoon takes it
    assert sorted(held) == [1, 2, 3, 4, 5, 6] and held[5]["version"] == 1
