"""A batch's quality: the screen dimension of its batch type and the figures its transform jobs add up to."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
from prefect_restful_etl.tasks.engine.quality import batch_quality, screen_dimension
from prefect_restful_etl.tasks.engine.report import JobReport


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


def report(kind: str, quality: dict[str, Any]) -> JobReport:
    return JobReport(job=kind, kind=kind, job_id=kind, quality=quality)


@pytest.mark.parametrize(
    "reports,expected",
    [
        ([report("extract", {}), report("load", {})], {}),
        (
            [report("transform", {"screened": 10, "passed": 8, "flagged": 1, "rejected": 1, "quality_score": 90.0,
                                  "max_severity": 8})],
            {"screened": 10, "passed": 8, "flagged": 1, "quality_score": 90.0, "max_severity": 8},
        ),
        (  # weighted by records screened: (90 * 10 + 100 * 30) / 40
            [report("transform", {"screened": 10, "passed": 9, "quality_score": 90.0, "max_severity": 10}),
             report("transform", {"screened": 30, "passed": 30, "quality_score": 100.0, "max_severity": 0})],
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
