"""Writes whose answers get lost, against the demo accounting API on real sockets: the demo applies the write,
then answers 429 or 5xx or drops the connection (`after`), so the load cannot tell that it landed. A create is
looked up before it is sent again (or sent with an Idempotency-Key the API recognises): no key is written twice.
"""

from __future__ import annotations

from typing import Any

import pytest
from load_support import APRIL, CUSTOMERS, MARCH, MAY, TYPE2, Accounting, assert_history, changed, customer, job, state

from prefect_restful_etl.tasks.engine.exceptions import RetriableError

pytestmark = pytest.mark.integration

TYPE1: dict[str, Any] = {}
BULK = {"bulk": {"path": "/customers/bulk", "batch_size": 7}, "concurrency": 2}
IDEMPOTENT = {"idempotency_header": "Idempotency-Key"}
CREATE = {"path": "/customers", "method": "POST", "fail_nth": 3}
APRIL_BATCH = changed(CUSTOMERS, set(range(1, 31)), email="april@example.com") + [customer(n) for n in range(41, 51)]


@pytest.mark.parametrize(
    "changes,fault,fails",
    [
        # a create answered 429 or 5xx, or cut off, after it landed: looked up, found, not sent again
        (TYPE1, {**CREATE, "status": 429}, False),
        (TYPE1, {**CREATE, "status": 503}, False),
        (TYPE1, {**CREATE, "drop": True}, False),
        (TYPE2, {**CREATE, "status": 429}, False),
        (TYPE2, {**CREATE, "status": 502}, False),
        (TYPE2, {**CREATE, "drop": True}, False),
        # with an Idempotency-Key the API answers the second POST with the row the first made
        ({**TYPE1, **IDEMPOTENT}, {**CREATE, "status": 429}, False),
        ({**TYPE2, **IDEMPOTENT}, {**CREATE, "status": 503}, False),
        # a create refused with a 5xx at every attempt (it never lands) fails the job; its rerun converges
        (TYPE2, {**CREATE, "status": 502, "times": 20, "after": False}, True),
        # an expiry (a PATCH of whole values) and a bulk upsert by natural key are sent again as they are
        (TYPE2, {"method": "PATCH", "status": 503, "fail_nth": 5}, False),
        (BULK, {"path": "/customers/bulk", "method": "POST", "status": 503, "fail_nth": 3}, False),
        (BULK, {"path": "/customers/bulk", "method": "POST", "status": 503, "fail_nth": 3, "times": 4}, True),
    ],
    ids=[
        "type1-create-429",
        "type1-create-5xx",
        "type1-create-dropped",
        "type2-create-429",
        "type2-create-5xx",
        "type2-create-dropped",
        "type1-create-429-idempotency-key",
        "type2-create-5xx-idempotency-key",
        "type2-create-5xx-outlasting-every-attempt",
        "type2-expire-5xx",
        "bulk-5xx-once",
        "bulk-5xx-outlasting-the-retry",
    ],
)
async def test_a_write_that_landed_unanswered_is_written_once(
    accounting: Accounting, changes: dict, fault: dict, fails: bool
) -> None:
    await accounting.load(job(**changes), CUSTOMERS, at=MARCH)
    await accounting.load(job(**changes), APRIL_BATCH, at=APRIL)
    clean = state(accounting.rows())

    accounting.wipe()
    await accounting.load(job(**changes), CUSTOMERS, at=MARCH)
    accounting.fault(**{"after": True, **fault})
    if fails:
        with pytest.raises(RetriableError):
            await accounting.load(job(**changes), APRIL_BATCH, at=APRIL)
        assert state(accounting.rows()) != clean, "the load stopped half way"
        accounting.clear_faults()
    report, _ = await accounting.load(job(**changes), APRIL_BATCH, at=APRIL)
    lost = accounting.statuses()["dropped" if fault.get("drop") else str(fault["status"])]
    assert lost >= 1, "the fault fired"
    rows = accounting.rows()
    assert state(rows) == clean, "every key written once: no duplicate, nothing missing"
    if changes.get("scd_type") == 2:
        assert_history(rows)
    if not fails:
        assert report.counts["inserted"] == 10 and report.counts["updated"] == 30
    if "idempotency_header" in changes:
        assert accounting.idempotent_replays() >= 1, "the API recognised the create sent twice"
    writes = accounting.writes()
    rerun, _ = await accounting.load(job(**changes), APRIL_BATCH, at=MAY)
    assert (accounting.writes(), rerun.counts["unchanged"]) == (writes, 50)


async def test_a_create_refused_before_it_landed_is_sent_again_after_its_key_is_looked_up(
    accounting: Accounting,
) -> None:
    """A 429 that a rate limiter answers before the API acts: the look-up finds nothing, so it is sent again."""
    accounting.fault(**CREATE, status=429, times=2)
    report, _ = await accounting.load(job(), CUSTOMERS[:10])
    assert report.counts["inserted"] == 10 and sorted(r["external_id"] for r in accounting.rows()) == sorted(
        c["external_id"] for c in CUSTOMERS[:10]
    )
    requests = accounting.requests()
    assert requests["POST /customers"] == 12  # two refused, each sent again once
    assert requests["GET /customers"] >= 2 + 1  # each refused create looked up, besides the pull
