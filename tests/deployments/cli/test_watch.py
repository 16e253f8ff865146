"""The watcher's view of a batch, folded from events that arrive in any order."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.events import Event

from prefect_restful_etl.deployments.cli.watch import BatchView, batch_filter
from prefect_restful_etl.tasks.status import BATCH_FINISHED, BATCH_STARTED, JOB_FINISHED, JOB_PROGRESS, JOB_STARTED

BATCH = "0b7c6a0e-4a71-4e7a-9d43-1b1f0c6f9d10"
_T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
_clock = itertools.count()


def event(
    name: str,
    *,
    job_id: str | None = None,
    records: int = 0,
    status: str = "RUNNING",
    resource: str | None = None,
    **payload: Any,
) -> Event:
    body: dict[str, Any] = {"batch_id": BATCH, "status": status, **payload}
    if job_id:
        body |= {
            "job_id": job_id,
            "job": f"job {job_id}",
            "kind": "extract",
            "records": records,
            "counts": {"extracted": records},
        }
    return Event(
        occurred=_T0 + timedelta(seconds=next(_clock)),
        event=name,
        resource={"prefect.resource.id": resource or f"restful-etl.batch.{BATCH}"},
        payload=body,
    )


def test_a_late_progress_event_does_not_undo_a_finished_job() -> None:
    view = BatchView(BATCH)
    finished = event(JOB_FINISHED, job_id="a", records=300, status="COMPLETED")
    late = event(JOB_PROGRESS, job_id="a", records=200)
    started = event(JOB_STARTED, job_id="a")
    for e in (finished, late, started):
        view.apply(e)
    (row,) = view.rows()
    assert (row["status"], row["records"]) == ("COMPLETED", 300)


def test_progress_never_goes_backwards() -> None:
    view = BatchView(BATCH)
    view.apply(event(JOB_PROGRESS, job_id="a", records=400))
    assert not view.apply(event(JOB_PROGRESS, job_id="a", records=200))
    assert view.rows()[0]["records"] == 400


def test_jobs_are_listed_in_the_order_they_began() -> None:
    view = BatchView(BATCH)
    second = event(JOB_STARTED, job_id="b")
    first = event(JOB_STARTED, job_id="a")  # occurred later in this fake clock: listed after b
    view.apply(first)
    view.apply(second)
    assert [r["job_id"] for r in view.rows()] == ["b", "a"]


def test_the_batch_ends_on_its_own_finished_event_not_on_the_flow_runs() -> None:
    view = BatchView(BATCH)
    view.apply(event(BATCH_STARTED))
    view.apply(event("prefect.flow-run.Completed", resource=f"prefect.flow-run.{BATCH}"))
    assert not view.finished and view.flow_state == "Completed" and view.flow_ended_at is not None
    view.apply(event("prefect.flow-run.heartbeat", resource=f"prefect.flow-run.{BATCH}"))
    assert view.flow_state == "Completed"
    view.apply(event(BATCH_FINISHED, status="COMPLETED", counts={"inserted": 2}))
    assert view.finished and view.status == "COMPLETED" and view.as_json()["counts"] == {"inserted": 2}


@pytest.mark.parametrize("name", [BATCH_STARTED, BATCH_FINISHED, JOB_STARTED, JOB_PROGRESS, JOB_FINISHED])
def test_another_batchs_events_change_nothing(name: str) -> None:
    view = BatchView(BATCH)
    other = event(name, job_id="x", status="COMPLETED")
    other.payload["batch_id"] = "another"
    assert not view.apply(other)
    assert (view.status, view.finished, view.rows()) == ("PENDING", False, [])


@pytest.mark.parametrize("deadline", [1.0, 3600.0])
def test_the_filter_reaches_past_the_deadline(deadline: float) -> None:
    """The server drops live events after the filter's `until`, which would otherwise be 'now'."""
    since = datetime.now(UTC)
    found = batch_filter(BATCH, since, deadline)
    assert found.occurred.until > since + timedelta(seconds=deadline)
    assert found.any_resource is not None and f"prefect.flow-run.{BATCH}" in (found.any_resource.id or [])
