"""The load job: pull the destination, diff staged records by natural key, write only the changes.

Type 1 (overwrite): new keys are POSTed, changed ones PUT or PATCHed, the rest left alone, so a rerun of
the same batch writes nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import Field

from prefect_restful_etl.tasks.engine.client import RestClient
from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import RetriableError, SourceError
from prefect_restful_etl.tasks.engine.jobbase import Endpoint, JobBase
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage import StageKey
from prefect_restful_etl.tasks.engine.scd import Change, Current, natural_key, plan_type1, row_hash


class LoadJob(JobBase):
    """Write staged records to a destination API as a slowly changing dimension (type 1: overwrite)."""

    kind: Literal["load"] = "load"
    source: str
    api: str
    endpoint: Endpoint = Field(description="The destination collection: pulled to diff, then written.")
    natural_key: list[str] = Field(min_length=1, description="Fields that match a staged record to a destination one.")
    compare: list[str] | None = Field(default=None, description="Fields compared for change; default: all staged fields.")
    id_field: str = Field(default="id", description="The destination's own id, used in update URLs.")
    update_method: Literal["PUT", "PATCH"] = "PUT"
    scd_type: Literal[1] = 1
    concurrency: int = Field(default=4, ge=1, description="Writes in flight at once.")


async def pull_destination(client: RestClient, job: LoadJob, compare: list[str]) -> dict[str, Current]:
    """Index the destination by natural key: its id and the hash of the compared fields, nothing more."""
    index: dict[str, Current] = {}
    pages = client.paginate(job.endpoint.path, params=job.endpoint.params, records_path=job.endpoint.records_path,
                            paginator=job.endpoint.paginator)
    async for page in pages:
        for record in page:
            index[natural_key(record, job.natural_key)] = Current(record.get(job.id_field), row_hash(record, compare))
    return index


def compared_fields(job: LoadJob, first: dict[str, Any]) -> list[str]:
    """The job's `compare` list, or every field of the staged records (taken from the first one)."""
    return list(job.compare) if job.compare else sorted(first)


async def run_load(
    job: LoadJob, ctx: BatchContext, report: JobReport, errors: ErrorSink, *, source: StageKey
) -> JobReport:
    """Diff and write the records staged under `source`."""
    client = ctx.client(job.api)
    counts = {"read": 0, "inserted": 0, "updated": 0, "unchanged": 0, "failed_writes": 0}
    report.counts = counts
    index: dict[str, Current] | None = None
    compare: list[str] = []
    limit = asyncio.Semaphore(job.concurrency)

    async for chunk in ctx.stage.read(source):
        if index is None:
            compare = compared_fields(job, chunk[0])
            index = await pull_destination(client, job, compare)
        latest = {natural_key(r, job.natural_key): r for r in chunk}  # a key twice in a chunk: the last wins
        counts["read"] += len(chunk)
        changes = [plan_type1(r, k, row_hash(r, compare), index.get(k)) for k, r in latest.items()]
        counts["unchanged"] += sum(c.action == "unchanged" for c in changes) + len(chunk) - len(latest)
        writes = [c for c in changes if c.action != "unchanged"]
        try:
            async with asyncio.TaskGroup() as group:
                for change in writes:
                    group.create_task(_write(client, job, change, compare, index, counts, errors, limit))
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None  # the first failure, as itself; its siblings were cancelled
    await errors.flush()
    return report


async def _write(
    client: RestClient,
    job: LoadJob,
    change: Change,
    compare: list[str],
    index: dict[str, Current],
    counts: dict[str, int],
    errors: ErrorSink,
    limit: asyncio.Semaphore,
) -> None:
    """One write; a record the destination refuses becomes an error event and the load goes on."""
    path = job.endpoint.path.rstrip("/")
    async with limit:
        try:
            if change.action == "insert":
                response = await client.request("POST", path, json=change.record)
                new_id = response.json().get(job.id_field) if response.content else None
            else:
                await client.request(job.update_method, f"{path}/{change.destination_id}", json=change.record)
                new_id = change.destination_id
        except RetriableError:
            raise  # the API is down, not the record: fail the job so that a retry converges
        except SourceError as ex:
            counts["failed_writes"] += 1
            await errors.add(screen="load", message=str(ex), natural_key=change.key, severity=7)
            return
    index[change.key] = Current(new_id, row_hash(change.record, compare))
    counts["inserted" if change.action == "insert" else "updated"] += 1
