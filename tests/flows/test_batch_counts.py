"""The batch's counts: an extract read only for a staged lookup keeps its own count, out of the batch's `extracted`."""

from __future__ import annotations

from prefect_restful_etl.flows.batch import _totals
from prefect_restful_etl.tasks.engine.jobtypes import BatchType
from prefect_restful_etl.tasks.engine.report import JobReport

BATCH_TYPE = BatchType.model_validate(
    {
        "name": "with-a-dimension",
        "apis": {"src": {"name": "src", "base_url": "http://127.0.0.1:9/"}},
        "jobs": [
            {"kind": "extract", "name": "Extract countries", "api": "src", "endpoint": {"path": "/countries"},
             "natural_key": ["code"]},
            {"kind": "extract", "name": "Extract customers", "api": "src", "endpoint": {"path": "/customers"},
             "natural_key": ["id"]},
            {"kind": "transform", "name": "Shape customers", "source": "Extract customers",
             "steps": [{"op": "lookup", "field": "country", "target": "country_name", "source": "countries"}],
             "lookups": {"countries": {"type": "staged", "job": "Extract countries", "key_field": "code",
                                       "value_field": "name"}}},
        ],
    }
)  # fmt: skip


def test_a_lookup_extract_is_not_counted_in_the_batch_extracted() -> None:
    reports = [
        JobReport(job="Extract countries", kind="extract", job_id="1", counts={"extracted": 12}),
        JobReport(job="Extract customers", kind="extract", job_id="2", counts={"extracted": 2000}),
        JobReport(job="Shape customers", kind="transform", job_id="3", counts={"transformed": 1990, "rejected": 10}),
    ]
    assert BATCH_TYPE.lookup_extracts() == {"Extract countries"}
    totals = _totals(reports, BATCH_TYPE.lookup_extracts())
    assert (totals["extracted"], totals["transformed"], totals["rejected"]) == (2000, 1990, 10)
    assert reports[0].counts == {"extracted": 12}  # the job's own count stays in its report (and etl_job)
