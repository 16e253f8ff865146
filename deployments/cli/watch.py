"""Following one batch live over Prefect's events websocket: its jobs as the events tell them.

Events are not ordered across sources (a job's progress may arrive after its finish, a task's event after
the flow run's Completed), so the view never lets an earlier phase overwrite a later one, and the watch ends
on the batch's own `restful-etl.batch.finished`, or a grace period after the flow run reached a final
state without one (it failed before the batch began), or at the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.events import Event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventOccurredFilter

from prefect_restful_etl.tasks.status import (
    BATCH_FINISHED,
    BATCH_STARTED,
    JOB_FINISHED,
    JOB_PROGRESS,
    JOB_STARTED,
    batch_resource_id,
)

_PHASE = {JOB_STARTED: 0, JOB_PROGRESS: 1, JOB_FINISHED: 2}
_FINAL_FLOW_STATES = {"Completed", "Failed", "Crashed", "Cancelled"}


@dataclass
class JobLine:
    job: str
    kind: str
    job_id: str
    first_seen: datetime
    phase: int = -1
    status: str = "PENDING"
    records: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "kind": self.kind,
            "job_id": self.job_id,
            "status": self.status,
            "records": self.records,
            "counts": dict(self.counts),
        }


@dataclass
class BatchView:
    """A batch's state folded from its events, in whatever order they come."""

    batch_id: str
    status: str = "PENDING"
    flow_state: str | None = None
    finished: bool = False
    final: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, JobLine] = field(default_factory=dict)
    flow_ended_at: float | None = None  # monotonic time the flow run reached a final state

    def apply(self, event: Event) -> bool:
        """Fold one event in; True when the view changed."""
        name, payload = event.event, event.payload
        if name == BATCH_FINISHED and payload.get("batch_id") == self.batch_id:
            self.finished, self.status, self.final = True, str(payload.get("status", "")), dict(payload)
            return True
        if name == BATCH_STARTED and payload.get("batch_id") == self.batch_id and not self.finished:
            self.status = "RUNNING"
            return True
        if name in _PHASE and payload.get("batch_id") == self.batch_id:
            return self._apply_job(event, _PHASE[name])
        state = name.rsplit(".", 1)[1]
        if event.resource.id == f"prefect.flow-run.{self.batch_id}" and state[:1].isupper():  # not `heartbeat`
            self.flow_state = state
            if self.flow_state in _FINAL_FLOW_STATES and self.flow_ended_at is None:
                self.flow_ended_at = time.monotonic()
            return True
        return False

    def _apply_job(self, event: Event, phase: int) -> bool:
        payload = event.payload
        job_id = str(payload.get("job_id"))
        line = self.jobs.get(job_id)
        if line is None:
            line = self.jobs[job_id] = JobLine(
                str(payload.get("job")), str(payload.get("kind")), job_id, event.occurred
            )
        line.first_seen = min(line.first_seen, event.occurred)
        if phase < line.phase or (phase == line.phase == 1 and int(payload.get("records", 0)) < line.records):
            return False  # late and stale: a finished job stays finished, counts never go back
        line.phase, line.status = phase, str(payload.get("status", line.status))
        line.records, line.counts = int(payload.get("records", 0)), dict(payload.get("counts", {}))
        return True

    def rows(self) -> list[dict[str, Any]]:
        return [line.row() for line in sorted(self.jobs.values(), key=lambda line: line.first_seen)]

    def as_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "status": self.status,
            "flow_state": self.flow_state,
            "finished": self.finished,
            "counts": self.final.get("counts", {}),
            "jobs": self.rows(),
        }


def batch_filter(batch_id: str, since: datetime, deadline_seconds: float) -> EventFilter:
    """The batch's own events and its flow run's; `until` lies past the deadline, because the server drops
    live events that occur after a filter's `until` (which defaults to the moment the filter was made)."""
    until = datetime.now(UTC) + timedelta(seconds=deadline_seconds + 60)
    return EventFilter(
        any_resource=EventAnyResourceFilter(id=[batch_resource_id(batch_id), f"prefect.flow-run.{batch_id}"]),
        occurred=EventOccurredFilter.model_validate({"since": since, "until": until}),  # Prefect's DateTime type
    )


async def watch_batch(
    batch_id: str,
    *,
    since: datetime | None = None,
    deadline: float = 600.0,
    grace: float = 15.0,
    settle: float = 2.0,
    flow_state: str | None = None,
    on_change: Callable[[BatchView], None] | None = None,
) -> BatchView:
    """Follow the batch until it ends (see the module's note) or `deadline` seconds pass.

    `flow_state` is the flow run's state name when the watch begins: a batch that has already ended gets only
    the grace period, since its events may be older than the server's backfill window and never come. Once the
    flow run has ended, a connection that stays quiet for `settle` seconds is opened again: the server sends
    past events from its database, which takes them in a few seconds after they happen, so a batch that ended
    moments ago may only show its last events on a second look.
    """
    since = since or datetime.now(UTC) - timedelta(hours=1)
    view = BatchView(batch_id, flow_state=flow_state)
    if flow_state in _FINAL_FLOW_STATES:
        view.flow_ended_at = time.monotonic()
    ends_at = time.monotonic() + deadline
    while not view.finished:
        await _follow(view, batch_filter(batch_id, since, deadline), ends_at, grace, settle, on_change)
        stop = min(ends_at, view.flow_ended_at + grace if view.flow_ended_at else ends_at)
        if view.finished or time.monotonic() >= stop:
            break
    return view


async def _follow(
    view: BatchView,
    events: EventFilter,
    ends_at: float,
    grace: float,
    settle: float,
    on_change: Callable[[BatchView], None] | None,
) -> None:
    """One connection: until the batch's final event, the deadline, or (flow run ended) `settle` quiet seconds."""
    queue: asyncio.Queue[Event] = asyncio.Queue()
    async with get_events_subscriber(filter=events) as subscriber:

        async def pump() -> None:
            async for event in subscriber:
                queue.put_nowait(event)

        reader = asyncio.create_task(pump())
        last_event = time.monotonic()
        try:
            while not view.finished:
                now = time.monotonic()
                stop = min(ends_at, view.flow_ended_at + grace if view.flow_ended_at else ends_at)
                if reader.done():
                    reader.result()  # the websocket gave up: say why, rather than end as if the batch had
                    return
                if now >= stop or (view.flow_ended_at is not None and now - last_event >= settle):
                    return
                with contextlib.suppress(TimeoutError):
                    event = await asyncio.wait_for(queue.get(), timeout=min(stop - now, 0.5))
                    last_event = time.monotonic()
                    if view.apply(event) and on_change is not None:
                        on_change(view)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
