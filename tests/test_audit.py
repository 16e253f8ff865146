from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from prefect_restful_etl.tasks.engine.audit import AuditStore
from prefect_restful_etl.tasks.engine.tables import EtlBatch, EtlJob


@pytest.mark.parametrize("table", ["etl_batch", "etl_job"])
async def test_a_database_without_a_newer_count_gains_it(tmp_path: Path, table: str) -> None:
    path = tmp_path / "audit.db"
    store = await AuditStore.open(f"sqlite:///{path}")
    await store.add(EtlBatch(batch_id="b0", tenant_id="t", batch_type="bt"),
                    EtlJob(job_id="j0", batch_id="b0", tenant_id="t", job="Load", kind="load"))
    await store.close()
    with sqlite3.connect(path) as db:  # as an earlier release created it
        for column in ("filtered", "duplicates"):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")

    store = await AuditStore.open(f"sqlite:///{path}")
    try:
        await store.add(EtlBatch(batch_id="b1", tenant_id="t", batch_type="bt", duplicates=2),
                        EtlJob(job_id="j1", batch_id="b1", tenant_id="t", job="Load", kind="load", duplicates=2))
        rows = await store.jobs("b0") if table == "etl_job" else [await store.get_batch("b0")]
        assert [(row.filtered, row.duplicates) for row in rows if row is not None] == [(0, 0)], "earlier rows: 0"
        assert [job.duplicates for job in await store.jobs("b1")] == [2]
    finally:
        await store.close()
