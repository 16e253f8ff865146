"""What a batch tells the world as it starts and ends: events, the progress bar, artifacts, the callback.

`flows/batch.py` calls `batch_started` once its context is open and `batch_ended` with its report on every
ending (completed, failed, stopped, cancelled). Publishing never fails a batch: the report is already in the
audit database when it runs, so a Prefect API hiccup or a dead callback receiver is logged and passed over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from pydantic import SecretStr

from prefect_restful_etl.flows.artifacts import publish_artifacts
from prefect_restful_etl.flows.callback import post_report
from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.report import BatchReport
from prefect_restful_etl.tasks.status import BATCH_FINISHED, BATCH_STARTED, BatchProgress, batch_event, emit

logger = logging.getLogger(__name__)


@dataclass
class _Ending:
    """Where the report goes when the batch ends; kept here by batch id, never persisted."""

    callback_url: str | None = None
    callback_secret: SecretStr | None = None


_endings: dict[str, _Ending] = {}


async def batch_started(
    ctx: BatchContext,
    jobs: int,
    every: int,
    *,
    callback_url: str | None,
    callback_secret: SecretStr | None,
    seconds: float = 0.0,
) -> None:
    """The started event, the progress artifact at 0 %, and `ctx.progress` wired to both (at most every
    `seconds` per job)."""
    _endings[ctx.batch_id] = _Ending(callback_url, callback_secret)
    ctx.progress = await BatchProgress.start(ctx, jobs, every, seconds)
    emit(batch_event(ctx, BATCH_STARTED, {"status": "RUNNING", "jobs": jobs, "full_refresh": ctx.full_refresh}))


async def batch_ended(ctx: BatchContext, report: BatchReport) -> None:
    """Artifacts, the progress bar's last step, the callback, then the finished event: a watcher that stops
    at that event finds everything else already published."""
    run_logger = _run_logger()
    ending = _endings.pop(ctx.batch_id, _Ending())
    try:
        await publish_artifacts(ctx.audit, report)
    except Exception as ex:
        run_logger.warning("artifacts of batch %s not published: %s", report.batch_id, type(ex).__name__)
    if isinstance(ctx.progress, BatchProgress):
        done = report.status == "COMPLETED"
        await ctx.progress.update(f"{report.status.lower()} in {report.seconds:.1f} s", 100.0 if done else None)
    if ending.callback_url:
        await post_report(ending.callback_url, report, ending.callback_secret, run_logger)
    payload = {
        "status": report.status,
        "counts": report.counts,
        "quality": report.quality,
        "seconds": report.seconds,
        "message": report.message,
        "jobs": [
            {"job": j.job, "kind": j.kind, "job_id": j.job_id, "status": j.status, "counts": j.counts}
            for j in report.jobs
        ],
    }
    emit(batch_event(ctx, BATCH_FINISHED, payload))


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()  # the flow run's log, so a failed callback shows in the UI
    except MissingContextError:
        return logger
