"""A batch's data quality in the audit database: the screen dimension of its batch type, and its figures.

`screen_dimension` gives the `etl_screen` rows of every transform job's screens (plus the `transform`
pseudo-screen that conversion failures are reported under); `batch_quality` adds the transform jobs'
screen summaries up into the `etl_batch` quality columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prefect_restful_etl.tasks.engine.audit.tables import EtlScreen
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, TransformJob
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.transform.job import TRANSFORM_SCREEN

_SUMMED = ("screened", "passed", "flagged")


def screen_dimension(batch_type: BatchType) -> list[EtlScreen]:
    """One row per screen of each transform job, in processing order; `transform` comes first (order 0)."""
    rows = []
    for job in batch_type.jobs:
        if not isinstance(job, TransformJob):
            continue
        rows.append(EtlScreen(batch_type=batch_type.name, job=job.name, processing_order=0, **TRANSFORM_SCREEN))
        for order, screen in enumerate(job.screens, start=1):
            rows.append(EtlScreen(batch_type=batch_type.name, job=job.name, **screen.dimension_row(order)))
    return rows


def batch_quality(reports: Iterable[JobReport]) -> dict[str, Any]:
    """`screened`, `passed`, `flagged`, `quality_score` and `max_severity` for the batch row.

    The score of several transform jobs is their average weighted by records screened, which is the
    score of all their records taken together. `rejected` is a count every job reports, summed elsewhere.
    No transform job with a summary: no figures (the batch row keeps its defaults, max severity null).
    """
    summaries = [r.quality for r in reports if r.kind == "transform" and r.quality]
    if not summaries:
        return {}
    figures: dict[str, Any] = {name: sum(int(s.get(name, 0)) for s in summaries) for name in _SUMMED}
    screened = figures["screened"]
    weighted = sum(float(s.get("quality_score", 100.0)) * int(s.get("screened", 0)) for s in summaries)
    figures["quality_score"] = round(weighted / screened, 2) if screened else 100.0
    figures["max_severity"] = max(int(s.get("max_severity", 0)) for s in summaries)  # 0: screened, none failed
    return figures
