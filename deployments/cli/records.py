"""The client's reads of the audit database: a tenant's batches, last sync, connected since, a batch's jobs
and error events. The audit database is the record of what moved; Prefect's API is the record of runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlmodel import col, select

from prefect_restful_etl.flows.resources import audit_settings, open_audit
from prefect_restful_etl.tasks.engine.audit.store import AuditStore, elapsed
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch, EtlErrorEvent, EtlJob
from prefect_restful_etl.tasks.engine.settings import Settings

_BATCH_COUNTS = ("extracted", "transformed", "rejected", "inserted", "updated", "unchanged", "failed_writes")
_JOB_COUNTS = _BATCH_COUNTS


@asynccontextmanager
async def audit_store() -> AsyncIterator[AuditStore]:
    """The audit database the workers write, by the same settings (`RESTFUL_ETL_AUDIT_BLOCK` included)."""
    settings = await audit_settings(Settings())
    store = await open_audit(settings)
    try:
        yield store
    finally:
        await store.close()


def batch_row(batch: EtlBatch) -> dict[str, Any]:
    return {
        "batch_id": batch.batch_id,
        "batch_type": batch.batch_type,
        "status": batch.status,
        "started": batch.started_at.isoformat(timespec="seconds"),
        "ended": batch.ended_at.isoformat(timespec="seconds") if batch.ended_at else "",
        "seconds": elapsed(batch.started_at, batch.ended_at),
        "full_refresh": batch.full_refresh,
        **{name: getattr(batch, name) for name in _BATCH_COUNTS},
        "quality_score": batch.quality_score,
    }


def job_row(job: EtlJob) -> dict[str, Any]:
    return {
        "job": job.job,
        "kind": job.kind,
        "status": job.status,
        **{n: getattr(job, n) for n in _JOB_COUNTS},
        "seconds": elapsed(job.started_at, job.ended_at),
        "message": job.message or "",
    }


async def history(store: AuditStore, tenant_id: str, batch_type: str | None, limit: int) -> list[dict[str, Any]]:
    return [batch_row(b) for b in await store.batches(tenant_id, batch_type, limit=limit)]


async def _first_completed(
    store: AuditStore, tenant_id: str, batch_type: str | None, *, latest: bool
) -> EtlBatch | None:
    query = select(EtlBatch).where(EtlBatch.tenant_id == tenant_id, EtlBatch.status == "COMPLETED")
    if batch_type:
        query = query.where(EtlBatch.batch_type == batch_type)
    order = col(EtlBatch.ended_at).desc() if latest else col(EtlBatch.started_at).asc()
    async with store.session() as session:
        return (await session.exec(query.order_by(order).limit(1))).first()


async def last_sync(store: AuditStore, tenant_id: str, batch_type: str | None) -> dict[str, Any] | None:
    """The tenant's latest completed batch."""
    batch = await _first_completed(store, tenant_id, batch_type, latest=True)
    return batch_row(batch) if batch else None


async def connected_since(store: AuditStore, tenant_id: str, batch_type: str | None) -> dict[str, Any] | None:
    """The tenant's first completed batch: when its systems were first in step."""
    batch = await _first_completed(store, tenant_id, batch_type, latest=False)
    return batch_row(batch) if batch else None


async def batch_detail(
    store: AuditStore, batch_id: str, tenant_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The batch row and its jobs, if the batch is the tenant's."""
    batch = await store.get_batch(batch_id)
    if batch is None or batch.tenant_id != tenant_id:
        return None
    return batch_row(batch), [job_row(j) for j in await store.jobs(batch_id)]


async def errors(store: AuditStore, batch_id: str, tenant_id: str, limit: int) -> list[dict[str, Any]]:
    """The batch's error events, oldest first; only the tenant's."""
    query = (
        select(EtlErrorEvent)
        .where(EtlErrorEvent.batch_id == batch_id, EtlErrorEvent.tenant_id == tenant_id)
        .order_by(col(EtlErrorEvent.id))
        .limit(limit)
    )
    async with store.session() as session:
        events = (await session.exec(query)).all()
    return [
        {
            "job": e.job,
            "screen": e.screen,
            "severity": e.severity,
            "action": e.action,
            "natural_key": e.natural_key,
            "column": e.column,
            "value": e.value,
            "message": e.message,
            "occurred": e.occurred_at.isoformat(timespec="seconds"),
        }
        for e in events
    ]
