"""The batch's artifacts: the audit summary rows, the quality report from error events grouped by screen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine_support import batch_context

from prefect_restful_etl.flows.artifacts import audit_summary, first_errors, quality_markdown, screen_counts
from prefect_restful_etl.tasks.engine.audit.tables import EtlJob
from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.report import BatchReport, JobReport


def report(quality: dict[str, float] | None = None) -> BatchReport:
    jobs = [
        JobReport(job="Extract", kind="extract", job_id="1", counts={"extracted": 10, "skipped": 1}, seconds=0.5),
        JobReport(
            job="Shape",
            kind="transform",
            job_id="3",
            counts={"read": 10, "transformed": 8, "rejected": 1, "filtered": 1},
            seconds=0.2,
        ),
        JobReport(job="Load", kind="load", job_id="2", counts={"read": 8, "inserted": 8}, seconds=1.0),
    ]
    return BatchReport(
        batch_id="b",
        tenant_id="acme",
        batch_type="crm-to-accounting",
        status="COMPLETED",
        full_refresh=False,
        jobs=jobs,
        counts={"extracted": 10, "transformed": 8, "filtered": 1, "inserted": 8, "rejected": 1},
        quality=quality or {},
        seconds=2.0,
        audit_database="sqlite://",
    )


def test_the_audit_summary_has_a_row_per_job_and_one_for_the_batch() -> None:
    rows = audit_summary(report())
    assert [r["job"] for r in rows] == ["Extract", "Shape", "Load", "batch"]
    assert rows[0]["extracted"] == 10 and rows[0]["inserted"] == ""  # a count the job does not keep is blank
    assert (rows[1]["filtered"], rows[-1]["filtered"]) == (1, 1)  # records a filter step dropped
    assert rows[-1] | {"seconds": 0} == rows[-1] | {"seconds": 0, "status": "COMPLETED", "inserted": 8, "rejected": 1}


def test_a_job_that_failed_shows_as_its_audit_row_holds_it() -> None:
    """A failed job returns no report; the batch's audit table still names it, with what it did."""
    started = datetime(2026, 3, 1, tzinfo=UTC)
    failed = EtlJob(
        job_id="2",
        batch_id="b",
        tenant_id="acme",
        job="Load",
        kind="load",
        status="FAILED",
        inserted=3,
        started_at=started,
        ended_at=started + timedelta(seconds=1.5),
    )
    failing = report().model_copy(update={"jobs": report().jobs[:2], "status": "FAILED"})
    rows = audit_summary(failing, [failed])
    assert [(r["job"], r["status"]) for r in rows] == [
        ("Extract", "COMPLETED"),
        ("Shape", "COMPLETED"),
        ("Load", "FAILED"),
        ("batch", "FAILED"),
    ]
    assert (rows[2]["inserted"], rows[2]["seconds"]) == (3, 1.5)


async def test_the_quality_report_groups_error_events_by_screen_worst_first(tmp_path: Path, audit_url: str) -> None:
    async with batch_context(tmp_path, {}, audit_url=audit_url) as ctx:
        sink = ErrorSink(ctx, "Shape", "j1")
        for key in ("1", "2", "3"):
            await sink.add(
                screen="email_format",
                message="not an email",
                natural_key=key,
                column="email",
                value=f"bad{key}",
                severity=3,
                action="reject",
            )
        await sink.add(screen="transform", message="not a number", natural_key="4", severity=5)
        await sink.flush()
        screens = await screen_counts(ctx.audit, ctx.batch_id)
        errors = await first_errors(ctx.audit, ctx.batch_id, limit=2)
    assert [(s["screen"], s["records"], s["max_severity"]) for s in screens] == [
        ("email_format", 3, 3),
        ("transform", 1, 5),
    ]
    assert [e["natural_key"] for e in errors] == ["1", "2"] and errors[0]["value"] == "bad1"
    text = quality_markdown(report({"quality_score": 70.0, "screened": 10, "passed": 7, "flagged": 2}), screens)
    assert "Quality score **70.0**" in text and "| email_format | Shape | reject | 3 | 3 |" in text


def test_a_batch_without_screens_or_errors_says_so() -> None:
    text = quality_markdown(report(), [])
    assert "No screen figures" in text and "No error events." in text


def test_the_quality_report_lists_schema_drift_per_extract() -> None:
    drifted = report()
    drifted.jobs[0].schema_drift = {"unexpected_fields": ["nickname", "tier"], "unseen_properties": ["vat_number"]}
    text = quality_markdown(drifted, [])
    assert "- Extract: fields not in the schema: nickname, tier; schema properties no record had: vat_number" in text
    assert "Schema drift" not in quality_markdown(report(), [])
