"""The audit database's tables (Kimball): batches, jobs, error events, screens and watermarks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Counts(SQLModel):
    extracted: int = 0
    transformed: int = 0
    filtered: int = 0  # records a transform's filter steps dropped (on purpose: not errors)
    rejected: int = 0
    inserted: int = 0
    updated: int = 0
    expired: int = 0
    deleted: int = 0
    unchanged: int = 0
    duplicates: int = 0  # staged records a later record of the same natural key replaced (never written)
    failed_writes: int = 0


COUNT_FIELDS = tuple(_Counts.model_fields)


class EtlBatch(_Counts, table=True):
    """One batch: a flow run of a batch type for one tenant."""

    __tablename__ = "etl_batch"

    batch_id: str = Field(primary_key=True, description="The Prefect flow run id.")
    tenant_id: str = Field(index=True)
    batch_type: str = Field(index=True)
    status: str = Field(default="RUNNING", index=True)
    full_refresh: bool = False
    resumed_from: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    message: str | None = None
    screened: int = 0
    passed: int = 0
    flagged: int = 0
    quality_score: float | None = None
    max_severity: int | None = None


class EtlJob(_Counts, table=True):
    """One job of a batch: a task run that extracts, transforms or loads."""

    __tablename__ = "etl_job"

    job_id: str = Field(primary_key=True, description="The Prefect task run id, or a uuid outside Prefect.")
    batch_id: str = Field(index=True)
    tenant_id: str = Field(index=True)
    job: str
    kind: str
    status: str = "RUNNING"
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    stage_key: str | None = None
    watermark_before: str | None = None
    watermark_after: str | None = None
    message: str | None = None


class EtlErrorEvent(SQLModel, table=True):
    """One failure of one record: a screen, a conversion, or a write the destination refused."""

    __tablename__ = "etl_error_event"

    id: int | None = Field(default=None, primary_key=True)
    batch_id: str = Field(index=True)
    job_id: str | None = None
    tenant_id: str = Field(index=True)
    job: str
    screen: str
    severity: int = 5
    action: str = "reject"
    natural_key: str | None = None
    column: str | None = None
    value: str | None = None
    message: str
    occurred_at: datetime = Field(default_factory=utcnow)


class EtlScreen(SQLModel, table=True):
    """The screen dimension: every quality check a batch type runs."""

    __tablename__ = "etl_screen"
    __table_args__ = (UniqueConstraint("batch_type", "job", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    batch_type: str
    job: str
    name: str
    type: str
    category: str | None = None
    severity: int
    action: str
    processing_order: int


class EtlWatermark(SQLModel, table=True):
    """How far an incremental extract has read, per tenant, batch type and job."""

    __tablename__ = "etl_watermark"

    tenant_id: str = Field(primary_key=True)
    batch_type: str = Field(primary_key=True)
    job: str = Field(primary_key=True)
    cursor_field: str
    value: str | None = None
    keys_at_value: list[Any] = Field(default_factory=list, sa_column=Column(JSON))
    batch_id: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class EtlLease(SQLModel, table=True):
    """Which batch runs a tenant's batch type now: one row per (tenant, batch type), held until `expires_at`
    and renewed by its holder while it runs (see `lease.py`)."""

    __tablename__ = "etl_lease"

    tenant_id: str = Field(primary_key=True)
    batch_type: str = Field(primary_key=True)
    holder: str = Field(description="The batch id of the batch that holds it.")
    acquired_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
