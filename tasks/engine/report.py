"""Job and batch reports: small, secret-free summaries that Prefect may persist as task results."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class JobReport(BaseModel):
    """What one job did: counts, where its output is staged, and how far an incremental read got."""

    job: str
    kind: str
    job_id: str
    status: str = "COMPLETED"
    stage_key: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    watermark_before: str | None = None
    watermark_after: str | None = None
    keys_at_watermark: list[Any] = Field(default_factory=list)
    schema_drift: dict[str, list[str]] = Field(default_factory=dict)
    seconds: float | None = None
    quality: dict[str, Any] = Field(default_factory=dict, description="A transform's screen summary (screens.py).")


def describe_drift(drift: dict[str, list[str]]) -> str:
    """`fields not in the schema: nickname; schema properties no record had: vat_number` (names, never values)."""
    parts = [
        f"{label}: {', '.join(drift[name])}"
        for name, label in (
            ("unexpected_fields", "fields not in the schema"),
            ("unseen_properties", "schema properties no record had"),
        )
        if drift.get(name)
    ]
    return "; ".join(parts)


class BatchReport(BaseModel):
    """What one batch did, job by job."""

    batch_id: str
    tenant_id: str
    batch_type: str
    status: str
    full_refresh: bool
    jobs: list[JobReport]
    counts: dict[str, int]
    quality: dict[str, Any] = Field(default_factory=dict, description="The etl_batch quality figures.")
    seconds: float
    audit_database: str
    message: str | None = None
