"""A destination that stores every value in its own representation (the demo accounting API's `own` mode:
`0` for `0.0`, another offset for a time, numbers for decimal text, nulls left out, keys reordered): a full
refresh run again writes nothing under type 1 and opens no version under type 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from load_support import APRIL, MARCH, TYPE2, Accounting, assert_history, job
from pydantic import SecretStr

from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.tasks.engine.credentials import Credentials

pytestmark = pytest.mark.integration


def varied(n: int) -> dict[str, Any]:
    """A customer with a value of every kind the destination re-spells."""
    return {
        "external_id": str(n),
        "name": f"Customer {n}",
        "email": f"c{n}@example.com",
        "score": 0.0 if n % 2 else 3,  # stored as 0 and 3.0
        "balance": f"{n}234.50",  # decimal text, stored as a number
        "signed_up": f"2026-01-{n % 28 + 1:02d}T10:00:00Z",  # stored at +01:00 with milliseconds
        "closed_at": None,  # left out
        "address": {"line": f"{n} Main St", "zip": None, "geo": {"lat": 51.5, "lon": 0.0}},  # reordered
        "tags": [1, 2.0],
        "vip": n % 3 == 0,
    }


RECORDS = [varied(n) for n in range(1, 31)]


@pytest.mark.parametrize("changes", [{"missing": "delete"}, {**TYPE2, "missing": "expire"}], ids=["type1", "type2"])
async def test_a_full_refresh_rerun_writes_nothing_to_a_destination_that_re_represents_every_value(
    accounting: Accounting, changes: dict[str, Any]
) -> None:
    accounting.represent("own")
    loader = job(**changes, compare=None, compare_as={"balance": "decimal"})
    first, _ = await accounting.load(loader, RECORDS, at=MARCH, full_refresh=True)
    assert first.counts["inserted"] == 30
    stored = {row["external_id"]: row for row in accounting.rows()}
    assert (stored["1"]["score"], stored["2"]["score"], stored["1"]["balance"]) == (0, 3.0, 1234.5)
    assert stored["1"]["signed_up"] == "2026-01-02T11:00:00.000+01:00" and "closed_at" not in stored["1"]
    writes = accounting.writes()

    rerun, _ = await accounting.load(loader, RECORDS, at=APRIL, full_refresh=True)

    assert (rerun.counts["unchanged"], rerun.counts["updated"], rerun.counts["inserted"]) == (30, 0, 0)
    assert accounting.writes() == writes, "nothing written"
    rows = accounting.rows()
    assert len(rows) == 30, "no version opened"
    if changes.get("scd_type") == 2:
        assert_history(rows)

    moved = [{**r, "balance": "1234.51"} if r["external_id"] == "1" else r for r in RECORDS]
    changed, _ = await accounting.load(loader, moved, at=APRIL, full_refresh=True)
    assert changed.counts["updated"] == 1, "a change of value is still a change"


async def test_the_batch_type_compares_its_decimal_casts_by_value(
    prefect_harness: Path, etl_home: Path, accounting: Accounting
) -> None:
    """crm-to-accounting casts lifetime_value to decimal text; the destination stores it as a number."""
    apis = accounting.apis
    accounting.represent("own")
    params: dict[str, Any] = {
        "tenant_id": "own-representation",
        "credentials": {
            "crm": Credentials(token=SecretStr(apis.crm_token)),
            "accounting": Credentials(api_key=SecretStr(apis.accounting_api_key)),
        },
        "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
        "full_refresh": True,
    }
    first = await crm_to_accounting(**params)
    assert first.status == "COMPLETED" and first.counts["inserted"] == 200
    assert all(isinstance(row["lifetime_value"], float) for row in accounting.rows())
    writes = accounting.writes()

    rerun = await crm_to_accounting(**params)

    assert rerun.status == "COMPLETED" and rerun.counts["unchanged"] == 200
    assert accounting.writes() == writes
    assert httpx.get(f"{apis.accounting_url}/_control/stats").json()["writes"].get("PUT", 0) == 0
