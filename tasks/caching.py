"""Prefect's cache of job results, tied to the stage: a cached report never outlives the records it points at.

A retried flow run (its `retries`, or "Retry" in the UI) finds the reports of the jobs that completed and
skips them; the jobs after them read what those jobs staged. That is only safe while the stage still holds
it: a memory stage dies with its process, a Redis stage expires or is dropped. So the cache key holds the
batch's *stage epoch* (flows/restart.py), which changes exactly when the staged data may be gone: then no
report is found, and every job runs again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect.cache_policies import DEFAULT, CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects

from prefect_restful_etl.tasks import runtime


@dataclass
class StagedJobCache(CachePolicy):
    """Prefect's default key (inputs, task source, flow run) plus the batch's stage epoch; none without one."""

    base: CachePolicy = field(default_factory=lambda: DEFAULT)

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        epoch = _stage_epoch(inputs.get("batch_id"))
        if epoch is None:
            return None  # the stage's state is unknown: run the job rather than trust an old report
        key = self.base.compute_key(task_ctx=task_ctx, inputs=inputs, flow_parameters=flow_parameters, **kwargs)
        return None if key is None else hash_objects(key, epoch, raise_on_failure=True)


def _stage_epoch(batch_id: object) -> str | None:
    if not isinstance(batch_id, str):
        return None
    try:
        return runtime.batch(batch_id).stage_epoch
    except RuntimeError:
        return None


STAGED_JOB = StagedJobCache()
