"""A batch's quality: the screen dimension of its batch type and the figures its transform jobs add up to."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col, select

from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlScreen
from prefect_restful_etl.tasks.engine.jobtypes import TransformJob
from prefect_restful_etl.tasks.engine.quality import batch_quality, screen_dimension
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.transform.screens import parse_screens


def test_screen_dimension_lists_every_screen_in_processing_order() -> None:
    rows = screen_dimension(CRM_TO_ACCOUNTING)
    assert [(r.processing_order, r.name, r.type, r.severity, r.action) for r in rows] == [
        (0, "transform", "column", 5, "reject"),
        (1, "email present", "column", 8, "reject"),
        (2, "email format", "column", 6, "reject"),
        (3, "lifetime value not negative", "business_rule", 7, "reject"),
        (4, "known country", "structure", 6, "reject"),
        (5, "one row per customer", "structure", 9, "reject"),
        (6, "phone present", "column", 2, "pass"),
    ]
    assert {(r.batch_type, r.job) for r in rows} == {("crm-to-accounting", "Shape accounting customers")}


async def test_syncing_the_screen_dimension_drops_the_screens_a_configuration_no_longer_has(audit_url: str) -> None:
    elsewhere = EtlScreen(
        batch_type="other", job="j", name="kept", type="column", severity=1, action="pass", processing_order=1
    )
    extract, transform, load = CRM_TO_ACCOUNTING.jobs
    assert isinstance(transform, TransformJob)
    screens = [s for s in transform.screens if s.name != "email format"]
    screens += parse_screens([{"name": "name present", "check": "not_null", "column": "name", "severity": 3}])
    changed = CRM_TO_ACCOUNTING.model_copy(update={"jobs": [extract, transform.model_copy(update={"screens": screens}),
                                                             load]})  # fmt: skip
    audit = await AuditStore.open(audit_url)
    try:
        await audit.sync_screens("other", [elsewhere])
        await audit.sync_screens(CRM_TO_ACCOUNTING.name, screen_dimension(CRM_TO_ACCOUNTING))
        await audit.sync_screens(CRM_TO_ACCOUNTING.name, screen_dimension(changed))
        async with audit.session() as session:
            rows = (
                await session.exec(
                    select(EtlScreen).order_by(col(EtlScreen.batch_type), col(EtlScreen.processing_order))
                )
            ).all()
    finally:
        await audit.close()
    assert [(r.batch_type, r.processing_order, r.name) for r in rows] == [
        ("crm-to-accounting", 0, "transform"),
        ("crm-to-accounting", 1, "email present"),
        ("crm-to-accounting", 2, "lifetime value not negative"),
        ("crm-to-accounting", 3, "known country"),
        ("crm-to-accounting", 4, "one row per customer"),
        ("crm-to-accounting", 5, "phone present"),
        ("crm-to-accounting", 6, "name present"),
        ("other", 1, "kept"),  # another batch type's dimension is its own
    ]


def report(kind: str, quality: dict[str, Any]) -> JobReport:
    return JobReport(job=kind, kind=kind, job_id=kind, quality=quality)


@pytest.mark.parametrize(
    "reports,expected",
    [
        ([report("extract", {}), report("load", {})], {}),
        (
            [
                report(
                    "transform",
                    {
                        "screened": 10,
                        "passed": 8,
                        "flagged": 1,
                        "rejected": 1,
                        "quality_score": 90.0,
                        "max_severity": 8,
                    },
                )
            ],
            {"screened": 10, "passed": 8, "flagged": 1, "quality_score": 90.0, "max_severity": 8},
        ),
        (  # weighted by records screened: (90 * 10 + 100 * 30) / 40
            [
                report("transform", {"screened": 10, "passed": 9, "quality_score": 90.0, "max_severity": 10}),
                report("transform", {"screened": 30, "passed": 30, "quality_score": 100.0, "max_severity": 0}),
            ],
            {"screened": 40, "passed": 39, "flagged": 0, "quality_score": 97.5, "max_severity": 10},
        ),
        (
            [report("transform", {"screened": 0, "passed": 0, "quality_score": 100.0, "max_severity": 0})],
            {"screened": 0, "passed": 0, "flagged": 0, "quality_score": 100.0, "max_severity": 0},
        ),
    ],
    ids=["no-transform", "one-transform", "two-transforms-weighted", "nothing-screened"],
)
def test_batch_quality(reports: list[JobReport], expected: dict[str, Any]) -> None:
    assert batch_quality(reports) == expected
