"""Duplicates already in the destination (two rows of one natural key), against the demo accounting API: each
extra row is an error event, the load writes to one row, and `duplicates` says whether the extras are deleted."""

from __future__ import annotations

from typing import Any

import pytest
from load_support import APRIL, CUSTOMERS, MARCH, TYPE2, Accounting, by_key, changed, job

pytestmark = pytest.mark.integration

TYPE1: dict[str, Any] = {}


def live(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {key: [r for r in versions if r.get("is_current", True)] for key, versions in by_key(rows).items()}


@pytest.mark.parametrize("duplicates", ["report", "remove_extra"])
@pytest.mark.parametrize("lookup", ["pull", "by_key"])
@pytest.mark.parametrize("changes", [TYPE1, TYPE2], ids=["type1", "type2"])
async def test_a_key_the_destination_holds_twice_is_an_error_event_and_written_once(
    accounting: Accounting, changes: dict[str, Any], lookup: str, duplicates: str
) -> None:
    loader = job(**changes, duplicates=duplicates, lookup={"mode": lookup})
    await accounting.load(loader, CUSTOMERS[:10], at=MARCH)
    for key in ("3", "7"):  # someone else's client created each again: same key, same values
        [row] = live(accounting.rows())[key]
        accounting.insert({k: v for k, v in row.items() if k != "id"})
    extra_ids = {key: rows[1]["id"] for key, rows in live(accounting.rows()).items() if len(rows) == 2}
    assert sorted(extra_ids) == ["3", "7"]

    report, errors = await accounting.load(loader, changed(CUSTOMERS[:10], {3}, country="DE"), at=APRIL)

    events = sorted((e.natural_key, e.value) for e in errors if e.screen == "load")
    assert events == [("3", extra_ids["3"]), ("7", extra_ids["7"])], "each extra row is one error event"
    assert all("2 rows of this natural key" in e.message for e in errors)
    held = live(accounting.rows())
    assert report.counts["updated"] == 1 and report.counts["failed_writes"] == 0
    if duplicates == "remove_extra":
        assert report.counts["deleted"] == 2
        assert all(len(rows) == 1 for rows in held.values()), "the extras are gone"
        assert not {r["id"] for rows in held.values() for r in rows} & set(extra_ids.values())
    else:
        assert report.counts["deleted"] == 0
        assert [r["id"] for r in held["7"]] == [held["7"][0]["id"], extra_ids["7"]], "the extra is left as it is"
        assert sorted(r["country"] for r in held["3"]) == ["DE", "GB"], "one row of the key written, not both"
        assert next(r for r in held["3"] if r["id"] == extra_ids["3"])["country"] == "GB"
    writes = accounting.writes()
    rerun, again = await accounting.load(loader, changed(CUSTOMERS[:10], {3}, country="DE"), at=APRIL)
    assert accounting.writes() == writes and rerun.counts["unchanged"] == 10, (rerun.counts, accounting.requests())
    if duplicates == "report":  # type 2: key 3's extra now repeats a closed version, still an extra
        assert sorted(e.natural_key for e in again) == ["3", "7"], "reported on every run, never written"
    else:
        assert again == []


async def test_a_dry_run_reports_the_duplicates_and_deletes_nothing(accounting: Accounting) -> None:
    loader = job(duplicates="remove_extra")
    await accounting.load(loader, CUSTOMERS[:5])
    [row] = live(accounting.rows())["2"]
    accounting.insert({k: v for k, v in row.items() if k != "id"})
    writes = accounting.writes()
    report, errors = await accounting.load(loader, CUSTOMERS[:5], dry_run=True)
    assert [e.natural_key for e in errors] == ["2"] and report.counts["deleted"] == 1
    assert accounting.writes() == writes and len(live(accounting.rows())["2"]) == 2
