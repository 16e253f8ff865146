"""The batch type end to end: a real Prefect flow against the bundled demo APIs on real sockets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING, crm_to_accounting
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlWatermark
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError, ScreenStop

pytestmark = pytest.mark.integration

# the example's static lookup: ISO 3166-1 alpha-2 codes and their names
ISO_COUNTRIES = CRM_TO_ACCOUNTING.job("Shape accounting customers").lookups["countries"].values  # type: ignore[union-attr]


def parameters(apis: DemoApis, tenant_id: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "credentials": {
            "crm": Credentials(token=SecretStr(apis.crm_token)),
            "accounting": Credentials(api_key=SecretStr(apis.accounting_api_key)),
        },
        "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
    }


def crm_customers(apis: DemoApis) -> list[dict[str, Any]]:
    with httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}) as crm:
        return crm.get("/all/customers").raise_for_status().json()


def accounting_customers(apis: DemoApis) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=apis.accounting_url) as accounting:
        dump = accounting.get("/_control/dump").raise_for_status().json()
    return {c["external_id"]: c for c in dump["customers"]}


def expected(customer: dict[str, Any]) -> dict[str, Any]:
    """What the batch type's transform makes of a (clean) CRM customer."""
    return {
        "external_id": str(customer["id"]),
        "name": customer["company"],
        "contact": f"{customer.get('first_name') or ''} {customer.get('last_name') or ''}".strip(),
        "email": customer["email"].strip().lower(),
        "country": customer["country"],
        "country_name": ISO_COUNTRIES[customer["country"]],
        "phone": customer["phone"],
        "lifetime_value": str(customer["lifetime_value"]),
        "status": customer.get("status") or "active",
        "quality_flag": "passed" if customer.get("phone") else "flagged",
    }


@pytest.fixture
def fresh_apis(demo_apis: DemoApis) -> DemoApis:
    demo_apis.reset()
    return demo_apis


async def test_full_sync_then_rerun_then_incremental_change(
    prefect_harness: Path, etl_home: Path, fresh_apis: DemoApis
) -> None:
    params = parameters(fresh_apis, "acme")

    first = await crm_to_accounting(**params, full_refresh=True)
    source = crm_customers(fresh_apis)
    assert first.status == "COMPLETED"
    assert first.counts["extracted"] == len(source) and first.counts["inserted"] == len(source)
    assert first.counts["filtered"] == first.jobs[1].counts["filtered"] == 0  # a report-only count, no column
    destination = accounting_customers(fresh_apis)
    assert {k: {f: v[f] for f in expected(source[0])} for k, v in destination.items()} == {
        str(c["id"]): expected(c) for c in source
    }

    again = await crm_to_accounting(**params)
    assert again.status == "COMPLETED"
    assert (again.counts["inserted"], again.counts["updated"]) == (0, 0)

    with httpx.Client(base_url=fresh_apis.crm_url, headers={"Authorization": f"Bearer {fresh_apis.crm_token}"}) as crm:
        crm.patch("/customers/5", json={"email": "changed@example.org"}).raise_for_status()
    third = await crm_to_accounting(**params)
    assert third.counts["extracted"] >= 1 and third.counts["extracted"] < len(source)
    assert (third.counts["inserted"], third.counts["updated"]) == (0, 1)
    assert accounting_customers(fresh_apis)["5"]["email"] == "changed@example.org"

    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        batches = await audit.batches("acme")
        assert [b.status for b in batches] == ["COMPLETED"] * 3
        assert [len(await audit.jobs(b.batch_id)) for b in batches] == [3, 3, 3]
        watermark = await audit.get_watermark("acme", "crm-to-accounting", "extract-crm-customers")
        assert watermark is not None and watermark.value is not None
    finally:
        await audit.close()


async def test_a_record_the_destination_refuses_is_an_error_event(
    prefect_harness: Path, etl_home: Path, fresh_apis: DemoApis
) -> None:
    # The `email format` screen passes something@somewhere; the accounting API also wants a dotted domain.
    with httpx.Client(base_url=fresh_apis.crm_url, headers={"Authorization": f"Bearer {fresh_apis.crm_token}"}) as crm:
        crm.patch("/customers/9", json={"email": "billing@localhost"}).raise_for_status()
    report = await crm_to_accounting(**parameters(fresh_apis, "bolt"), full_refresh=True)

    assert report.status == "COMPLETED"
    assert report.counts["failed_writes"] == 1
    assert report.counts["inserted"] == report.counts["extracted"] - 1
    assert "9" not in accounting_customers(fresh_apis)
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        [event] = await audit.error_events(report.batch_id)
        assert (event.tenant_id, event.screen, event.natural_key) == ("bolt", "load", "9")
        assert "422" in event.message and "email" in event.message
    finally:
        await audit.close()


@pytest.mark.parametrize(
    "change,env,field",
    [
        ({"base_urls": {"erp": "http://127.0.0.1:1"}}, {}, "base_urls"),
        ({"base_urls": {"crm": "not a url"}}, {}, "base_urls.crm"),
        ({"credentials": {"crm": Credentials(api_key=SecretStr("x"))}}, {}, "credentials.crm.token"),
        ({"credentials": {}}, {}, "credentials.crm.token"),
        ({"tenant_id": ""}, {}, "tenant_id"),
        ({"full_refresh": "sometimes"}, {}, "full_refresh"),
        ({}, {"RESTFUL_ETL_AUDIT_URL": "postgresql//etl:pw@nowhere"}, "RESTFUL_ETL_AUDIT_URL"),
    ],
    ids=[
        "unknown-api",
        "bad-base-url",
        "wrong-secret-kind",
        "no-credentials",
        "empty-tenant",
        "not-a-bool",
        "bad-audit-url",
    ],
)
async def test_a_bad_configuration_fails_before_any_request(
    prefect_harness: Path,
    etl_home: Path,
    fresh_apis: DemoApis,
    change: dict,
    env: dict,
    field: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    urls = (fresh_apis.crm_url, fresh_apis.accounting_url)
    with httpx.Client() as api:
        for url in urls:
            api.post(f"{url}/_control/reset-stats").raise_for_status()
        with pytest.raises(ConfigError, match=rf"^{re.escape(field)}: "):
            await crm_to_accounting(**(parameters(fresh_apis, "oops") | change))
        served = [_paths(api.get(f"{url}/_control/stats").raise_for_status().json()) for url in urls]
    assert served == [[], []], "no API was asked anything"


def _paths(stats: dict[str, Any]) -> list[str]:
    return [key for key in stats.get("requests", stats) if "_control" not in key]


# --- quality screens on real sockets: the demo CRM's dirty records ----------------------------------------------

DIRTY_SCREENS = ["email present", "email format", "lifetime value not negative", "known country"]


def add_dirty_customers(apis: DemoApis) -> list[str]:
    """`POST /_control/dirty`: no email, a malformed email, a negative lifetime value, country "ZZ"; their ids."""
    with httpx.Client(base_url=apis.crm_url) as crm:
        added = crm.post("/_control/dirty").raise_for_status().json()["data"]
    return [str(customer["id"]) for customer in added]


async def test_a_screen_rejects_a_malformed_email_before_the_load(
    prefect_harness: Path, etl_home: Path, fresh_apis: DemoApis
) -> None:
    with httpx.Client(base_url=fresh_apis.crm_url, headers={"Authorization": f"Bearer {fresh_apis.crm_token}"}) as crm:
        crm.patch("/customers/9", json={"email": "not-an-email"}).raise_for_status()
    report = await crm_to_accounting(**parameters(fresh_apis, "comet"), full_refresh=True)

    assert report.status == "COMPLETED"
    assert (report.counts["rejected"], report.counts["failed_writes"]) == (1, 0)
    assert report.counts["inserted"] == report.counts["extracted"] - 1
    assert "9" not in accounting_customers(fresh_apis)
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        [event] = await audit.error_events(report.batch_id)
    finally:
        await audit.close()
    assert (event.screen, event.natural_key, event.column) == ("email format", "9", "email")
    assert event.value == "not-an-email"
    assert (event.job, event.severity, event.action) == ("Shape accounting customers", 6, "reject")


async def test_dirty_records_become_error_events_and_only_clean_ones_are_loaded(
    prefect_harness: Path, etl_home: Path, fresh_apis: DemoApis
) -> None:
    dirty = add_dirty_customers(fresh_apis)
    source = crm_customers(fresh_apis)
    report = await crm_to_accounting(**parameters(fresh_apis, "dusty"), full_refresh=True)

    assert report.status == "COMPLETED"
    assert (report.counts["extracted"], report.counts["rejected"]) == (len(source), 4)
    clean = [c for c in source if str(c["id"]) not in dirty]
    destination = accounting_customers(fresh_apis)
    assert sorted(destination) == sorted(str(c["id"]) for c in clean)
    assert {k: {f: v.get(f) for f in expected(clean[0])} for k, v in destination.items()} == {
        str(c["id"]): expected(c) for c in clean
    }

    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        events = await audit.error_events(report.batch_id)
        batch = await audit.get_batch(report.batch_id)
        screens = await _screen_rows(audit)
    finally:
        await audit.close()
    assert [(e.screen, e.natural_key) for e in events] == list(zip(DIRTY_SCREENS, dirty, strict=True))
    assert [(e.column, e.value) for e in events] == [
        ("email", None),
        ("email", "not-an-email"),
        ("lifetime_value", "-250.0"),
        ("country", "ZZ"),
    ]
    assert [(e.severity, e.action, e.tenant_id) for e in events] == [
        (8, "reject", "dusty"),
        (6, "reject", "dusty"),
        (7, "reject", "dusty"),
        (6, "reject", "dusty"),
    ]
    assert batch is not None
    assert (batch.screened, batch.passed, batch.flagged, batch.rejected) == (len(source), len(clean), 0, 4)
    assert batch.max_severity == 8
    assert batch.quality_score == round(100 * (1 - (8 + 6 + 7 + 6) / (10 * len(source))), 2)
    assert report.quality["quality_score"] == batch.quality_score
    assert [name for name, *_ in screens] == ["transform", *DIRTY_SCREENS, "one row per customer", "phone present"]


async def _screen_rows(audit: AuditStore) -> list[tuple[str, str, int, str]]:
    from sqlmodel import col, select

    from prefect_restful_etl.tasks.engine.audit.tables import EtlScreen

    async with audit.session() as session:
        query = select(EtlScreen).where(EtlScreen.batch_type == "crm-to-accounting")
        rows = await session.exec(query.order_by(col(EtlScreen.processing_order)))
        return [(r.name, r.type, r.severity, r.action) for r in rows.all()]


STOP_SCREEN = {
    "name": "no negative lifetime value at all",
    "check": "rule",
    "column": "lifetime_value",
    "expression": "float(lifetime_value) >= 0",
    "severity": 10,
    "action": "stop",
}


def strict_flow() -> Any:
    """crm-to-accounting with one more screen, whose failure stops the batch."""
    from prefect_restful_etl.flows.builder import build_flow
    from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
    from prefect_restful_etl.tasks.engine.jobtypes import TransformJob

    extract, transform, load = CRM_TO_ACCOUNTING.jobs
    strict = TransformJob.model_validate(transform.model_dump() | {"screens": [*transform.screens, STOP_SCREEN]})
    return build_flow(
        CRM_TO_ACCOUNTING.model_copy(update={"name": "crm-to-accounting-strict", "jobs": [extract, strict, load]})
    )


async def test_a_stop_screen_stops_the_batch_before_anything_is_loaded(
    prefect_harness: Path, etl_home: Path, fresh_apis: DemoApis
) -> None:
    dirty = add_dirty_customers(fresh_apis)
    source = crm_customers(fresh_apis)
    state = await strict_flow()(**parameters(fresh_apis, "halt"), full_refresh=True, return_state=True)

    assert state.is_failed()
    assert "ScreenStop" in state.message and STOP_SCREEN["name"] in state.message
    with pytest.raises(ScreenStop, match=STOP_SCREEN["name"]):
        await state.result()
    assert accounting_customers(fresh_apis) == {}  # the load never ran
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        [batch] = await audit.batches("halt")
        jobs = await audit.jobs(batch.batch_id)
        events = await audit.error_events(batch.batch_id)
    finally:
        await audit.close()
    assert batch.status == "STOPPED" and STOP_SCREEN["name"] in (batch.message or "")
    assert [(j.kind, j.status) for j in jobs] == [("extract", "COMPLETED"), ("transform", "STOPPED")]
    # the figures of what was screened before the stop: every record but the last dirty one, which came after
    screened = len(source) - 1
    assert (batch.extracted, batch.screened, batch.passed, batch.flagged, batch.rejected) == (
        len(source),
        screened,
        screened - 3,
        0,
        2,
    )
    assert (batch.transformed, jobs[1].transformed, jobs[1].rejected) == (0, 0, 2)  # nothing handed on to a load
    assert batch.max_severity == 10
    assert batch.quality_score == round(100 * (1 - (8 + 6 + 10) / (10 * screened)), 2)
    # written before the stop: the rejects met on the way, then both failures of the record that stopped it
    assert [(e.screen, e.natural_key, e.action) for e in events] == [
        ("email present", dirty[0], "reject"),
        ("email format", dirty[1], "reject"),
        ("lifetime value not negative", dirty[2], "reject"),
        (STOP_SCREEN["name"], dirty[2], "stop"),
    ]


# --- watermarks: only a completed batch moves one; a full refresh ignores it, then resets it ---------------------


async def watermark(etl_home: Path, tenant_id: str, batch_type: str = "crm-to-accounting") -> Any:
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        return await audit.get_watermark(tenant_id, batch_type, "extract-crm-customers")
    finally:
        await audit.close()


async def extract_job_row(etl_home: Path, batch_id: str) -> Any:
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        return next(j for j in await audit.jobs(batch_id) if j.kind == "extract")
    finally:
        await audit.close()


async def batches_oldest_first(etl_home: Path, tenant_id: str) -> list[Any]:
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        return sorted(await audit.batches(tenant_id), key=lambda b: b.started_at)
    finally:
        await audit.close()


def patch_crm(apis: DemoApis, customer_id: int, changes: dict[str, Any]) -> None:
    with httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}) as crm:
        crm.patch(f"/customers/{customer_id}", json=changes).raise_for_status()


async def test_a_failed_batch_leaves_the_watermark_where_it_was(
    prefect_harness: Path, etl_home: Path, fresh_apis: DemoApis
) -> None:
    params = parameters(fresh_apis, "frail")
    assert (await crm_to_accounting(**params)).status == "COMPLETED"
    before = await watermark(etl_home, "frail")
    patch_crm(fresh_apis, 5, {"email": "moved@example.org"})  # now past the watermark
    with httpx.Client(base_url=fresh_apis.accounting_url) as accounting:  # the load's read of the destination
        accounting.post(
            "/_control/faults", json={"path": "/customers", "method": "GET", "status": 403}
        ).raise_for_status()

    state = await crm_to_accounting(**params, return_state=True)
    assert state.is_failed()
    [_, failed] = await batches_oldest_first(etl_home, "frail")
    extract = await extract_job_row(etl_home, failed.batch_id)
    assert (failed.status, extract.status) == ("FAILED", "COMPLETED")
    assert extract.watermark_after > before.value  # the extract did read further...
    after = await watermark(etl_home, "frail")
    assert (after.value, after.keys_at_value, after.batch_id) == (before.value, before.keys_at_value, before.batch_id)

    again = await crm_to_accounting(**params)  # ...so the next batch reads the change again
    assert (again.counts["extracted"], again.counts["updated"]) == (1, 1)
    assert (await watermark(etl_home, "frail")).value == extract.watermark_after


async def test_a_stopped_batch_leaves_the_watermark_where_it_was(
    prefect_harness: Path, etl_home: Path, fresh_apis: DemoApis
) -> None:
    strict = strict_flow()
    params = parameters(fresh_apis, "brake")
    assert (await strict(**params)).status == "COMPLETED"
    before = await watermark(etl_home, "brake", "crm-to-accounting-strict")
    add_dirty_customers(fresh_apis)  # past the watermark; one has a negative lifetime value

    state = await strict(**params, return_state=True)
    assert state.is_failed()
    [_, stopped] = await batches_oldest_first(etl_home, "brake")
    assert stopped.status == "STOPPED"
    assert (await extract_job_row(etl_home, stopped.batch_id)).watermark_after > before.value
    after = await watermark(etl_home, "brake", "crm-to-accounting-strict")
    assert (after.value, after.keys_at_value, after.batch_id) == (before.value, before.keys_at_value, before.batch_id)


async def test_a_full_refresh_reads_everything_then_resets_the_watermark(
    prefect_harness: Path, etl_home: Path, fresh_apis: DemoApis
) -> None:
    params = parameters(fresh_apis, "reset")
    source = crm_customers(fresh_apis)
    assert (await crm_to_accounting(**params)).counts["extracted"] == len(source)
    reached = await watermark(etl_home, "reset")
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:  # a watermark beyond every record, as a clock skew or a bad restore might leave
        await audit.set_watermark(
            EtlWatermark(
                tenant_id="reset",
                batch_type="crm-to-accounting",
                job="extract-crm-customers",
                cursor_field="updated_at",
                value="2999-01-01T00:00:00Z",
                keys_at_value=[],
            )
        )
    finally:
        await audit.close()
    assert (await crm_to_accounting(**params)).counts["extracted"] == 0  # an incremental batch trusts it

    full = await crm_to_accounting(**params, full_refresh=True)
    assert full.status == "COMPLETED" and full.counts["extracted"] == len(source)
    assert full.jobs[0].watermark_before is None  # ignored...
    after = await watermark(etl_home, "reset")
    assert (after.value, after.batch_id) == (reached.value, full.batch_id)  # ...then reset to what it read
    assert after.keys_at_value == reached.keys_at_value


# --- the audit database on a real PostgreSQL server ---------------------------------------------------------------


async def postgres_rows(url: str, query: str) -> list[Any]:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


async def test_a_batch_audits_to_postgresql_and_the_next_one_reads_its_watermark_there(
    prefect_harness: Path, etl_home: Path, fresh_apis: DemoApis, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTFUL_ETL_AUDIT_URL", postgres_url)
    dirty = add_dirty_customers(fresh_apis)
    params = parameters(fresh_apis, "elephant")
    first = await crm_to_accounting(**params, full_refresh=True)
    assert (first.status, first.counts["rejected"]) == ("COMPLETED", 4)
    patch_crm(fresh_apis, 5, {"email": "moved@example.org"})  # past the watermark
    second = await crm_to_accounting(**params)

    assert second.status == "COMPLETED"
    assert (second.counts["extracted"], second.counts["updated"], second.counts["inserted"]) == (1, 1, 0)
    assert not (etl_home / "audit.db").exists(), "nothing went to the default SQLite file"
    batches = await postgres_rows(
        postgres_url,
        "SELECT batch_id, status, full_refresh, extracted, rejected, started_at,"
        " ended_at FROM etl_batch WHERE tenant_id = 'elephant' ORDER BY started_at",
    )
    assert [(b["batch_id"], b["status"], b["full_refresh"], b["rejected"]) for b in batches] == [
        (first.batch_id, "COMPLETED", True, 4),
        (second.batch_id, "COMPLETED", False, 0),
    ]
    assert [b["extracted"] for b in batches] == [first.counts["extracted"], 1]
    assert all(b["started_at"].tzinfo is not None and b["ended_at"] > b["started_at"] for b in batches)
    jobs = await postgres_rows(
        postgres_url,
        "SELECT batch_id, kind, status, watermark_before, watermark_after"
        " FROM etl_job WHERE kind = 'extract' ORDER BY started_at",
    )
    assert [(j["batch_id"], j["status"]) for j in jobs] == [
        (first.batch_id, "COMPLETED"),
        (second.batch_id, "COMPLETED"),
    ]
    assert jobs[0]["watermark_before"] is None and jobs[1]["watermark_before"] == jobs[0]["watermark_after"]
    events = await postgres_rows(
        postgres_url, "SELECT batch_id, tenant_id, screen, natural_key FROM etl_error_event ORDER BY id"
    )
    assert [(e["batch_id"], e["tenant_id"], e["screen"], e["natural_key"]) for e in events] == [
        (first.batch_id, "elephant", screen, key) for screen, key in zip(DIRTY_SCREENS, dirty, strict=True)
    ]
    [mark] = await postgres_rows(
        postgres_url,
        "SELECT tenant_id, batch_type, job, cursor_field, value, keys_at_value, batch_id FROM etl_watermark",
    )
    assert (mark["tenant_id"], mark["batch_type"], mark["job"], mark["cursor_field"], mark["batch_id"]) == (
        "elephant",
        "crm-to-accounting",
        "extract-crm-customers",
        "updated_at",
        second.batch_id,
    )
    # the keys already read at the watermark's instant: customer 5, and the dirty ones when they were written
    # within the same second (the CRM's timestamps are whole seconds)
    assert mark["value"] == jobs[1]["watermark_after"] and "5" in json.loads(mark["keys_at_value"])
    assert set(json.loads(mark["keys_at_value"])) <= {"5", *dirty}
