"""A batch's artifacts in Prefect: the audit summary, the quality report (screens, schema drift), the first errors.

Keys are per batch type and tenant (`crm-to-accounting-demo-audit`), so each key's history in Prefect's
Artifacts page is that tenant's sync history. The progress artifact lives with the live status
(`tasks/status.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from sqlalchemy import func
from sqlmodel import select

from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlErrorEvent, EtlJob
from prefect_restful_etl.tasks.engine.report import BatchReport, JobReport, describe_drift
from prefect_restful_etl.tasks.status import artifact_key

FIRST_ERRORS = 50
_MESSAGE_CHARS = 300
_SUMMARY_COUNTS = (
    "extracted",
    "transformed",
    "filtered",
    "rejected",
    "inserted",
    "updated",
    "expired",
    "unchanged",
    "duplicates",
    "failed_writes",
)
_ERROR_COLUMNS = ("job", "screen", "severity", "action", "natural_key", "column", "value", "message")


def audit_summary(report: BatchReport, unreported: Sequence[EtlJob] = ()) -> list[dict[str, Any]]:
    """One row per job and a last row for the batch: status, counts, seconds. `unreported` are the audit rows
    of jobs that ended without a report (a job that failed): they show as the audit database holds them."""
    rows = []
    for job in report.jobs:
        counts = {name: job.counts.get(name, "") for name in _SUMMARY_COUNTS}
        rows.append({"job": job.job, "kind": job.kind, "status": job.status, **counts, "seconds": job.seconds})
    for row in unreported:
        seconds = round((row.ended_at - row.started_at).total_seconds(), 3) if row.ended_at else None
        counts = {name: getattr(row, name) for name in _SUMMARY_COUNTS}
        rows.append({"job": row.job, "kind": row.kind, "status": row.status, **counts, "seconds": seconds})
    totals = {name: report.counts.get(name, 0) for name in _SUMMARY_COUNTS}
    rows.append({"job": "batch", "kind": "", "status": report.status, **totals, "seconds": report.seconds})
    return rows


async def screen_counts(audit: AuditStore, batch_id: str) -> list[dict[str, Any]]:
    """Error events grouped by job and screen, counted in the database rather than read row by row."""
    query = (
        select(  # type: ignore[call-overload]  # sqlmodel's select is typed for at most four columns
            EtlErrorEvent.job,
            EtlErrorEvent.screen,
            EtlErrorEvent.action,
            func.max(EtlErrorEvent.severity),
            func.count(),
        )
        .where(EtlErrorEvent.batch_id == batch_id)
        .group_by(EtlErrorEvent.job, EtlErrorEvent.screen, EtlErrorEvent.action)
        .order_by(func.count().desc())
    )
    async with audit.session() as session:
        rows = (await session.exec(query)).all()
    return [
        {"job": job, "screen": screen, "action": action, "max_severity": severity, "records": count}
        for job, screen, action, severity, count in rows
    ]


def quality_markdown(report: BatchReport, screens: list[dict[str, Any]]) -> str:
    """The batch's quality figures, then the screens that failed, worst first."""
    quality = report.quality
    lines = [f"## Quality of {report.batch_type} for `{report.tenant_id}`", ""]
    if quality:
        lines.append(
            f"Quality score **{quality.get('quality_score', 100.0)}** — {quality.get('screened', 0)} records screened, "
            f"{quality.get('passed', 0)} passed, {quality.get('flagged', 0)} flagged, "
            f"{report.counts.get('rejected', 0)} rejected."
        )
    else:
        lines.append(f"No screen figures in this batch; {report.counts.get('rejected', 0)} records rejected.")
    lines += ["", *_drift_lines(report)]
    if not screens:
        lines.append("No error events.")
        return "\n".join(lines)
    lines += ["| screen | job | action | max severity | records |", "| --- | --- | --- | ---: | ---: |"]
    lines += [f"| {s['screen']} | {s['job']} | {s['action']} | {s['max_severity']} | {s['records']} |" for s in screens]
    return "\n".join(lines)


def drifted_jobs(report: BatchReport) -> list[JobReport]:
    return [job for job in report.jobs if job.schema_drift]


def _drift_lines(report: BatchReport) -> list[str]:
    """Schema drift per extract: the API's records no longer match the entity schema they link to."""
    jobs = drifted_jobs(report)
    if not jobs:
        return []
    return ["**Schema drift**", "", *(f"- {job.job}: {describe_drift(job.schema_drift)}" for job in jobs), ""]


async def first_errors(audit: AuditStore, batch_id: str, limit: int = FIRST_ERRORS) -> list[dict[str, Any]]:
    """The first error events, as the error sink wrote them (values already cut short and scrubbed)."""
    events = await audit.error_events(batch_id, limit=limit)
    return [{name: getattr(event, name) for name in _ERROR_COLUMNS} for event in events]


async def publish_artifacts(audit: AuditStore, report: BatchReport) -> None:
    """The three artifacts of a finished batch (any ending), attached to its flow run. Descriptions lead with
    the figures: the UI's artifact cards show only their first line or so."""
    counts, key = report.counts, lambda kind: artifact_key(report.batch_type, report.tenant_id, kind)
    reported = {job.job for job in report.jobs}
    unreported = [row for row in await audit.jobs(report.batch_id) if row.job not in reported]
    why = f" {report.message[:_MESSAGE_CHARS]}" if report.message else ""  # already redacted by the batch
    await acreate_table_artifact(
        audit_summary(report, unreported),
        key=key("audit"),
        description=f"**{report.status}** in {report.seconds:.1f} s: {counts.get('extracted', 0)} extracted, "
        f"{counts.get('inserted', 0)} inserted, {counts.get('updated', 0)} updated, "
        f"{counts.get('rejected', 0)} rejected (batch `{report.batch_id}`).{why}",
    )
    screens = await screen_counts(audit, report.batch_id)
    score = report.quality.get("quality_score")
    await acreate_markdown_artifact(
        quality_markdown(report, screens),
        key=key("quality"),
        description=(f"Quality score {score}" if score is not None else "No screen figures")
        + f", {len(screens)} failing screen{'' if len(screens) == 1 else 's'}"
        + (", schema drift" if drifted_jobs(report) else "")
        + f" (batch `{report.batch_id}`).",
    )
    errors = await first_errors(audit, report.batch_id)
    total = sum(s["records"] for s in screens)
    await acreate_table_artifact(
        errors,
        key=key("errors"),
        description=(f"First {len(errors)} of {total} error events" if errors else "No error events")
        + f" (batch `{report.batch_id}`).",
    )
