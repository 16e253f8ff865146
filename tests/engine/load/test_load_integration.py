"""The load engine against the demo accounting API on real sockets: SCD types 0, 1 and 2, deletes, reruns,
and retries after a fault injected mid-load; type 2 histories are checked key by key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from load_support import (
    APRIL,
    CUSTOMERS,
    MARCH,
    MAY,
    TYPE2,
    Accounting,
    assert_history,
    by_key,
    changed,
    current,
    customer,
    job,
    state,
)
from pydantic import SecretStr

from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import RetriableError

pytestmark = pytest.mark.integration


async def test_type1_loads_reruns_and_overwrites(accounting: Accounting) -> None:
    first, _ = await accounting.load(job(), CUSTOMERS)
    assert (first.counts["inserted"], accounting.writes()) == (40, 40)
    assert {k: {f: r[f] for f in CUSTOMERS[0]} for k, r in current(accounting.rows()).items()} == {
        c["external_id"]: c for c in CUSTOMERS
    }

    again, _ = await accounting.load(job(), CUSTOMERS)
    assert (again.counts["unchanged"], accounting.writes()) == (40, 40), "a rerun writes nothing"

    batch = [*changed(CUSTOMERS, {3, 4, 5}, country="DE"), customer(41), customer(42)]
    third, _ = await accounting.load(job(), batch)
    assert [third.counts[c] for c in ("inserted", "updated", "unchanged")] == [2, 3, 37]
    rows = accounting.rows()
    assert len(rows) == 42 and current(rows)["4"]["country"] == "DE"


async def test_type0_inserts_and_never_overwrites(accounting: Accounting) -> None:
    await accounting.load(job(scd_type=0), CUSTOMERS[:10])
    report, _ = await accounting.load(job(scd_type=0), changed(CUSTOMERS[:12], {1, 2}, email="new@example.com"))
    assert [report.counts[c] for c in ("inserted", "updated", "unchanged")] == [2, 0, 10]
    assert current(accounting.rows())["1"]["email"] == "c1@example.com"


async def test_type2_keeps_history_through_changes_expiry_and_return(accounting: Accounting) -> None:
    await accounting.load(job(**TYPE2), CUSTOMERS, at=MARCH)
    april_batch = changed(CUSTOMERS, {1, 2, 3}, email="april@example.com")
    april, _ = await accounting.load(job(**TYPE2), april_batch, at=APRIL)
    assert [april.counts[c] for c in ("inserted", "updated", "expired", "unchanged")] == [0, 3, 3, 37]

    # A full refresh without keys 4 and 5: their current versions close; an incremental batch would keep them.
    may_batch = [r for r in changed(april_batch, {1}, email="may@example.com") if r["external_id"] not in ("4", "5")]
    may, _ = await accounting.load(job(**TYPE2, missing="expire"), may_batch, at=MAY, full_refresh=True)
    assert [may.counts[c] for c in ("updated", "expired", "unchanged")] == [1, 3, 37]
    writes = accounting.writes()
    rerun, _ = await accounting.load(job(**TYPE2, missing="expire"), may_batch, at=MAY, full_refresh=True)
    assert (rerun.counts["unchanged"], accounting.writes()) == (38, writes), "a rerun writes nothing"

    returning, _ = await accounting.load(job(**TYPE2), [customer(4)], at=datetime(2026, 6, 1, tzinfo=UTC))
    assert returning.counts["inserted"] == 1

    keyed = assert_history(accounting.rows(), gone=frozenset({"5"}))
    assert [v["email"] for v in keyed["1"]] == ["c1@example.com", "april@example.com", "may@example.com"]
    assert [v["valid_from"][:10] for v in keyed["1"]] == ["2026-03-01", "2026-04-01", "2026-05-01"]
    assert [(v["valid_to"] or "")[:10] for v in keyed["5"]] == ["2026-05-01"], "expired, no successor"
    assert [(v["valid_from"][:10], v["is_current"]) for v in keyed["4"]] == [
        ("2026-03-01", False),
        ("2026-06-01", True),
    ]


@pytest.mark.parametrize(
    "missing,gone",
    [
        ("delete", lambda rows: "2" not in current(rows)),
        (
            {"action": "soft_delete", "soft_delete": {"field": "status", "value": "deleted", "restore": "active"}},
            lambda rows: current(rows)["2"]["status"] == "deleted",
        ),
    ],
    ids=["hard", "soft"],
)
async def test_deletes_on_a_full_refresh_only(accounting: Accounting, missing: Any, gone: Any) -> None:
    loader = job(missing=missing)
    await accounting.load(loader, CUSTOMERS[:10])
    without_2 = [c for c in CUSTOMERS[:10] if c["external_id"] != "2"]
    incremental, _ = await accounting.load(loader, without_2)
    assert incremental.counts["deleted"] == 0 and "2" in current(accounting.rows())

    full, _ = await accounting.load(loader, without_2, full_refresh=True)
    assert full.counts["deleted"] == 1 and gone(accounting.rows())
    writes = accounting.writes()
    again, _ = await accounting.load(loader, without_2, full_refresh=True)
    assert (again.counts["deleted"], accounting.writes()) == (0, writes)

    back, _ = await accounting.load(loader, CUSTOMERS[:10])
    assert current(accounting.rows())["2"].get("status", "active") == "active"
    assert back.counts["inserted" if missing == "delete" else "updated"] == 1


@pytest.mark.parametrize(
    "fault,two_current",
    [
        # a create is looked up and sent again after a 5xx, so the fault outlasts every attempt
        ({"path": "/customers", "method": "POST", "status": 500, "fail_nth": 17, "times": 50}, False),
        # the client retries an expiry (a PATCH of whole values) once, so the fault outlasts both attempts
        ({"method": "PATCH", "status": 503, "fail_nth": 2, "times": 50}, True),
    ],
    ids=["create-fails", "expire-fails-after-its-new-version"],
)
async def test_type2_retry_after_a_failure_mid_load_converges(
    accounting: Accounting, fault: dict, two_current: bool
) -> None:
    april = changed(CUSTOMERS, set(range(1, 31)), email="april@example.com") + [customer(n) for n in range(41, 51)]

    await accounting.load(job(**TYPE2), CUSTOMERS, at=MARCH)
    await accounting.load(job(**TYPE2), april, at=APRIL)
    clean = state(accounting.rows())

    accounting.wipe()
    await accounting.load(job(**TYPE2), CUSTOMERS, at=MARCH)
    accounting.fault(**fault)
    with pytest.raises(RetriableError):
        await accounting.load(job(**TYPE2), april, at=APRIL)
    accounting.clear_faults()
    assert state(accounting.rows()) != clean, "the load stopped half way"
    if two_current:
        assert any(sum(v["is_current"] for v in versions) == 2 for versions in by_key(accounting.rows()).values())

    _retried, _ = await accounting.load(job(**TYPE2), april, at=APRIL)
    assert state(accounting.rows()) == clean
    assert_history(accounting.rows())
    writes = accounting.writes()
    rerun, _ = await accounting.load(job(**TYPE2), april, at=MAY)
    assert (accounting.writes(), rerun.counts["unchanged"]) == (writes, 50)


BULK = {"bulk": {"path": "/customers/bulk", "batch_size": 7}, "concurrency": 2}


async def test_type1_bulk_retry_after_a_failure_converges(accounting: Accounting) -> None:
    bulk = job(bulk={"path": "/customers/bulk", "batch_size": 7}, concurrency=2)
    accounting.fault(path="/customers/bulk", method="POST", status=503, fail_nth=3, times=20)
    with pytest.raises(RetriableError):
        await accounting.load(bulk, CUSTOMERS)
    accounting.clear_faults()
    assert 0 < len(accounting.rows()) < 40
    report, _ = await accounting.load(bulk, CUSTOMERS)
    rows = accounting.rows()
    assert sorted(int(r["external_id"]) for r in rows) == list(range(1, 41)), "every key once: no duplicates"
    assert report.counts["inserted"] + report.counts["unchanged"] == 40
    assert accounting.requests()["POST /customers/bulk"] >= 6


async def test_a_refused_record_is_an_error_event_and_the_rest_load(accounting: Accounting) -> None:
    records = changed(CUSTOMERS[:10], {7}, email="not-an-email")
    report, errors = await accounting.load(job(**TYPE2), records)
    assert (report.counts["inserted"], report.counts["failed_writes"]) == (9, 1)
    [event] = errors
    assert (event.natural_key, event.screen, event.tenant_id) == ("7", "load", accounting.tenant)
    assert "422" in event.message and "email" in event.message
    assert accounting.apis.accounting_api_key not in event.message


async def test_lookup_by_key_asks_only_for_the_staged_keys(accounting: Accounting) -> None:
    await accounting.load(job(), CUSTOMERS)
    before = accounting.requests().get("GET /customers", 0)
    report, _ = await accounting.load(
        job(lookup={"mode": "auto", "by_key_max": 5}), changed(CUSTOMERS[:3], {2}, name="Renamed")
    )
    assert accounting.requests()["GET /customers"] - before == 3
    assert report.counts["updated"] == 1 and current(accounting.rows())["2"]["name"] == "Renamed"


async def test_dry_run_writes_nothing(accounting: Accounting) -> None:
    await accounting.load(job(**TYPE2), CUSTOMERS[:10])
    writes = accounting.writes()
    report, _ = await accounting.load(
        job(**TYPE2, missing="expire"),
        changed(CUSTOMERS[1:12], {3}, country="FR"),
        at=APRIL,
        full_refresh=True,
        dry_run=True,
    )
    assert accounting.writes() == writes
    assert [report.counts[c] for c in ("inserted", "updated", "expired", "dry_run")] == [2, 1, 2, 1]


async def test_audit_columns_on_the_real_api(accounting: Accounting) -> None:
    audited = job(**TYPE2, audit_columns={"batch_id": "etl_batch_id", "loaded_at": "etl_loaded_at"})
    await accounting.load(audited, CUSTOMERS[:5])
    writes = accounting.writes()
    await accounting.load(audited, CUSTOMERS[:5])
    assert accounting.writes() == writes
    assert all(r["etl_batch_id"] and r["etl_loaded_at"] for r in accounting.rows())


async def test_the_flow_dry_run_reports_and_writes_nothing(
    prefect_harness: Path, etl_home: Path, accounting: Accounting
) -> None:
    apis = accounting.apis
    params: dict[str, Any] = {
        "tenant_id": "dry-run-co",
        "credentials": {
            "crm": Credentials(token=SecretStr(apis.crm_token)),
            "accounting": Credentials(api_key=SecretStr(apis.accounting_api_key)),
        },
        "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
    }
    dry = await crm_to_accounting(**params, dry_run=True)
    assert dry.status == "COMPLETED" and dry.counts["inserted"] > 0
    assert accounting.rows() == [] and accounting.writes() == 0
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        assert await audit.get_watermark("dry-run-co", "crm-to-accounting", "extract-crm-customers") is None
    finally:
        await audit.close()

    real = await crm_to_accounting(**params)
    assert real.counts["inserted"] == dry.counts["inserted"] == len(accounting.rows())
