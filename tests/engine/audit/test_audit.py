"""The audit store on each database it runs on: a SQLite file and a real PostgreSQL server (`audit_url`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlmodel import select

from prefect_restful_etl.tasks.engine.audit.store import AuditStore, elapsed
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch, EtlErrorEvent, EtlJob, EtlScreen, EtlWatermark

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


@contextlib.asynccontextmanager
async def busy_event_loop(workers: int = 4, slice_seconds: float = 0.005) -> AsyncIterator[None]:
    """The event loop as twenty batches keep it: `workers` coroutines each hold it for 5 ms at a time (CPU
    work between awaits: parsing pages, screening records), so every await of anyone else waits for them."""
    stop = asyncio.Event()

    async def work() -> None:
        while not stop.is_set():
            until = time.perf_counter() + slice_seconds
            while time.perf_counter() < until:
                pass
            await asyncio.sleep(0)

    workers_running = [asyncio.create_task(work()) for _ in range(workers)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*workers_running)


def screens(batch_type: str) -> list[EtlScreen]:
    return [
        EtlScreen(
            batch_type=batch_type,
            job="Shape",
            name=name,
            type="column",
            severity=5,
            action="reject",
            processing_order=i,
        )
        for i, name in enumerate(["email present", "email format", "known country"])
    ]


async def one_batch(audit_url: str, number: int) -> None:
    """What one batch writes to the audit database, in its order, with its own store (as each batch opens one)."""
    batch_id, job_id, tenant_id = f"b{number}", f"j{number}", f"tenant-{number % 5}"
    store = await AuditStore.open(audit_url)
    try:
        await store.merge(EtlBatch(batch_id=batch_id, tenant_id=tenant_id, batch_type="bt"))
        await store.sync_screens("bt", screens("bt"))
        await store.get_watermark(tenant_id, "bt", f"extract-{number}")
        await store.merge(EtlJob(job_id=job_id, batch_id=batch_id, tenant_id=tenant_id, job="Shape", kind="transform"))
        await store.add_error_events(
            EtlErrorEvent(
                batch_id=batch_id,
                job_id=job_id,
                tenant_id=tenant_id,
                job="Shape",
                screen="email format",
                natural_key=str(key),
                message="not an email",
            )
            for key in range(3)
        )
        await store.update_job(job_id, status="COMPLETED", ended_at=datetime.now(UTC), transformed=10, rejected=3)
        await store.set_watermark(
            EtlWatermark(
                tenant_id=tenant_id, batch_type="bt", job=f"extract-{number}", cursor_field="id", value=str(number)
            )
        )
        await store.update_batch(batch_id, status="COMPLETED", ended_at=datetime.now(UTC), rejected=3)
    finally:
        await store.close()


async def test_twenty_batches_on_a_busy_event_loop_all_write_their_audit_rows(audit_url: str) -> None:
    """Twenty batches of one batch type in one process start together on a new audit database while the event
    loop is busy in 5 ms slices: every store opens it, and every row of every batch is written."""
    async with busy_event_loop():
        outcomes = await asyncio.gather(*(one_batch(audit_url, n) for n in range(20)), return_exceptions=True)
    assert [repr(outcome) for outcome in outcomes if outcome is not None] == []

    store = await AuditStore.open(audit_url)
    try:
        for n in range(20):
            batch = await store.get_batch(f"b{n}")
            assert batch is not None and (batch.status, batch.rejected) == ("COMPLETED", 3)
            assert [(job.status, job.transformed) for job in await store.jobs(f"b{n}")] == [("COMPLETED", 10)]
            assert len(await store.error_events(f"b{n}")) == 3
            watermark = await store.get_watermark(f"tenant-{n % 5}", "bt", f"extract-{n}")
            assert watermark is not None and watermark.value == str(n)
        assert await screen_rows(store, "bt") == [
            ("Shape", name, 5) for name in ("email present", "email format", "known country")
        ]
    finally:
        await store.close()


async def screen_rows(store: AuditStore, batch_type: str) -> list[tuple[str, str, int]]:
    async with store.session() as session:
        rows = (await session.exec(select(EtlScreen).where(EtlScreen.batch_type == batch_type))).all()
    return [(row.job, row.name, row.severity) for row in sorted(rows, key=lambda row: row.processing_order)]


async def test_batches_of_one_batch_type_starting_together_sync_one_screen_dimension(audit_url: str) -> None:
    """Every batch syncs its batch type's screen dimension as it starts; eight at once each find it missing and
    write it: none fails on the unique (batch type, job, name), and the dimension holds each screen once."""
    stores = [await AuditStore.open(audit_url) for _ in range(8)]
    try:
        outcomes = await asyncio.gather(
            *(store.sync_screens("bt", screens("bt")) for store in stores), return_exceptions=True
        )
        assert [repr(outcome) for outcome in outcomes if outcome is not None] == []
        assert await screen_rows(stores[0], "bt") == [
            ("Shape", name, 5) for name in ("email present", "email format", "known country")
        ]

        changed = [screen.model_copy(update={"severity": 7}) for screen in screens("bt")[1:]]  # a screen dropped
        await asyncio.gather(*(store.sync_screens("bt", changed) for store in stores))
        assert await screen_rows(stores[0], "bt") == [("Shape", "email format", 7), ("Shape", "known country", 7)]
    finally:
        for store in stores:
            await store.close()


async def test_a_watermark_written_by_batches_at_once_keeps_one_of_their_values(audit_url: str) -> None:
    """Two writers of one watermark at once (a batch and its overlapping twin, or a retry): neither fails on the
    primary key; the row holds one of the values, whole."""
    stores = [await AuditStore.open(audit_url) for _ in range(6)]
    try:
        outcomes = await asyncio.gather(
            *(
                store.set_watermark(
                    EtlWatermark(
                        tenant_id="t",
                        batch_type="bt",
                        job="extract",
                        cursor_field="id",
                        value=str(n),
                        keys_at_value=[n],
                        batch_id=f"b{n}",
                    )
                )
                for n, store in enumerate(stores)
            ),
            return_exceptions=True,
        )
        assert [repr(outcome) for outcome in outcomes if outcome is not None] == []
        watermark = await stores[0].get_watermark("t", "bt", "extract")
        assert watermark is not None and watermark.value is not None
        assert (watermark.keys_at_value, watermark.batch_id) == ([int(watermark.value)], f"b{watermark.value}")
    finally:
        for store in stores:
            await store.close()
