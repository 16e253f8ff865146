"""Live batch resources by batch id: tasks take ids (hashable, persistable), not clients or secrets."""

from __future__ import annotations

from prefect_restful_etl.tasks.engine.context import BatchContext

_batches: dict[str, BatchContext] = {}


def register(ctx: BatchContext) -> None:
    _batches[ctx.batch_id] = ctx


def unregister(batch_id: str) -> None:
    _batches.pop(batch_id, None)


def batch(batch_id: str) -> BatchContext:
    try:
        return _batches[batch_id]
    except KeyError:
        raise RuntimeError(f"batch {batch_id} is not running in this process") from None
