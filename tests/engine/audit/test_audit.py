"""The audit store on each database it runs on: a SQLite file and a real PostgreSQL server (`audit_url`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from prefect_restful_etl.tasks.engine.audit.store import AuditStore, elapsed
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch, EtlErrorEvent, EtlJob, EtlWatermark

STARTED = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def in_utc(moment: datetime) -> datetime:
    """SQLite hands back the UTC moment without its zone; PostgreSQL (timestamptz) with it."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@pytest.mark.parametrize("table", ["etl_batch", "etl_job"])
async def test_a_database_without_a_newer_count_gains_it(audit_url: str, table: str) -> None:
    store = await AuditStore.open(audit_url)
    await store.add(
        EtlBatch(batch_id="b0", tenant_id="t", batch_type="bt"),
        EtlJob(job_id="j0", batch_id="b0", tenant_id="t", job="Load", kind="load"),
    )
    async with store.engine.begin() as connection:  # as an earlier release created it
        for column in ("filtered", "duplicates"):
            await connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    await store.close()

    store = await AuditStore.open(audit_url)
    try:
        await store.add(
            EtlBatch(batch_id="b1", tenant_id="t", batch_type="bt", duplicates=2),
            EtlJob(job_id="j1", batch_id="b1", tenant_id="t", job="Load", kind="load", duplicates=2),
        )
        rows = await store.jobs("b0") if table == "etl_job" else [await store.get_batch("b0")]
        assert [(row.filtered, row.duplicates) for row in rows if row is not None] == [(0, 0)], "earlier rows: 0"
        assert [job.duplicates for job in await store.jobs("b1")] == [2]
    finally:
        await store.close()


async def test_batches_and_jobs_keep_their_moments_and_counts(audit_url: str) -> None:
    store = await AuditStore.open(audit_url)
    try:
        await store.add(
            EtlBatch(batch_id="old", tenant_id="t", batch_type="bt", started_at=STARTED - timedelta(days=1)),
            EtlBatch(batch_id="new", tenant_id="t", batch_type="bt", started_at=STARTED),
            EtlBatch(batch_id="else", tenant_id="t", batch_type="other", started_at=STARTED - timedelta(hours=1)),
            EtlJob(
                job_id="j2",
                batch_id="new",
                tenant_id="t",
                job="Load",
                kind="load",
                started_at=STARTED + timedelta(seconds=2),
            ),
            EtlJob(
                job_id="j1",
                batch_id="new",
                tenant_id="t",
                job="Extract",
                kind="extract",
                started_at=STARTED + timedelta(seconds=1),
            ),
        )
        await store.update_batch(
            "new",
            status="COMPLETED",
            ended_at=STARTED + timedelta(seconds=3.5),
            inserted=7,
            quality_score=97.5,
            full_refresh=True,
        )
        await store.update_job("j2", status="COMPLETED", ended_at=STARTED + timedelta(seconds=3), inserted=7)

        batch = await store.get_batch("new")
        assert batch is not None
        assert (batch.status, batch.inserted, batch.quality_score, batch.full_refresh) == ("COMPLETED", 7, 97.5, True)
        assert in_utc(batch.started_at) == STARTED and elapsed(batch.started_at, batch.ended_at) == 3.5
        assert [b.batch_id for b in await store.batches("t")] == ["new", "else", "old"]
        assert [b.batch_id for b in await store.batches("t", "bt", limit=1)] == ["new"]
        jobs = await store.jobs("new")
        assert [(j.job_id, j.status) for j in jobs] == [("j1", "RUNNING"), ("j2", "COMPLETED")]
        assert elapsed(jobs[1].started_at, jobs[1].ended_at) == 1.0
        with pytest.raises(KeyError, match="no etl_job row nowhere"):
            await store.update_job("nowhere", status="FAILED")
    finally:
        await store.close()


async def test_error_events_come_back_in_the_order_they_were_written(audit_url: str) -> None:
    store = await AuditStore.open(audit_url)
    try:
        await store.add_error_events([])
        await store.add_error_events(
            EtlErrorEvent(
                batch_id="b",
                tenant_id="t",
                job="Shape",
                screen="email format",
                natural_key=str(key),
                column="email",
                value=f"bad {key} ünïcode",
                message="not an email",
                severity=6,
            )
            for key in range(5)
        )
        events = await store.error_events("b")
        assert [e.natural_key for e in events] == ["0", "1", "2", "3", "4"]
        assert events[1].value == "bad 1 ünïcode" and in_utc(events[0].occurred_at) <= datetime.now(UTC)
        assert [e.natural_key for e in await store.error_events("b", limit=2)] == ["0", "1"]
        assert await store.error_events("other") == []
    finally:
        await store.close()


async def test_a_watermark_is_set_moved_and_cleared(audit_url: str) -> None:
    keys = ["17", 18, {"id": 19}]  # the natural keys already read at the cursor value, as JSON
    store = await AuditStore.open(audit_url)
    try:
        assert await store.get_watermark("t", "bt", "extract") is None
        await store.set_watermark(
            EtlWatermark(
                tenant_id="t",
                batch_type="bt",
                job="extract",
                cursor_field="updated_at",
                value="2026-03-01T12:00:00Z",
                keys_at_value=keys,
                batch_id="b1",
            )
        )
        await store.set_watermark(
            EtlWatermark(tenant_id="t", batch_type="bt", job="other", cursor_field="id", value="5")
        )
        first = await store.get_watermark("t", "bt", "extract")
        assert first is not None and (first.value, first.keys_at_value, first.batch_id) == (
            "2026-03-01T12:00:00Z",
            keys,
            "b1",
        )
        assert in_utc(first.updated_at) <= datetime.now(UTC)

        await store.set_watermark(
            EtlWatermark(
                tenant_id="t",
                batch_type="bt",
                job="extract",
                cursor_field="updated_at",
                value="2026-03-02T00:00:00Z",
                keys_at_value=[],
                batch_id="b2",
            )
        )
        moved = await store.get_watermark("t", "bt", "extract")
        assert moved is not None and (moved.value, moved.keys_at_value, moved.batch_id) == (
            "2026-03-02T00:00:00Z",
            [],
            "b2",
        )
        assert in_utc(moved.updated_at) >= in_utc(first.updated_at)

        await store.clear_watermark("t", "bt", "extract")
        await store.clear_watermark("t", "bt", "extract")  # nothing left: no error
        assert await store.get_watermark("t", "bt", "extract") is None
        assert await store.get_watermark("t", "bt", "other") is not None
    finally:
        await store.close()


async def test_processes_opening_a_new_database_at_once_all_find_the_tables(audit_url: str) -> None:
    """Several batches start together on an empty database: each creates the tables it finds missing."""
    stores = await asyncio.gather(*(AuditStore.open(audit_url) for _ in range(4)))
    try:
        await asyncio.gather(
            *(store.add(EtlBatch(batch_id=f"b{i}", tenant_id="t", batch_type="bt")) for i, store in enumerate(stores))
        )
        assert sorted(b.batch_id for b in await stores[0].batches("t")) == ["b0", "b1", "b2", "b3"]
    finally:
        for store in stores:
            await store.close()
