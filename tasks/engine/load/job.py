"""The load job: learn what the destination holds, diff the staged records by natural key, write only the changes.

Type 0 inserts new keys and never touches existing ones; type 1 overwrites changed ones; type 2 keeps history
(a changed key gets a new current version and its old one is expired). A rerun of the same batch writes
nothing, and a load cut off half way converges when it runs again: every run diffs against the destination.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from prefect_restful_etl.tasks.engine.audit.tables import utcnow
from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import LoadLimitExceeded, StageError
from prefect_restful_etl.tasks.engine.jobbase import Endpoint, JobBase
from prefect_restful_etl.tasks.engine.load.canonical import CompareAs
from prefect_restful_etl.tasks.engine.load.destination import DestinationIndex, IndexChunk, Lookup, LookupMode
from prefect_restful_etl.tasks.engine.load.history import History
from prefect_restful_etl.tasks.engine.load.occurrences import LastOccurrences
from prefect_restful_etl.tasks.engine.load.scd import Change, Missing, Planner, Version, format_moment
from prefect_restful_etl.tasks.engine.load.shapes import Shaper, WriteShapes
from prefect_restful_etl.tasks.engine.load.writers import (
    AuditColumns,
    BulkWrite,
    ErrorThreshold,
    Writer,
    WriterSettings,
)
from prefect_restful_etl.tasks.engine.moments import format_datetime
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey

# duplicates: staged records that a later record of the same natural key replaced, so never written
COUNTS = ("read", "inserted", "updated", "expired", "deleted", "unchanged", "duplicates", "failed_writes")


class LoadJob(JobBase):
    """Write staged records to a destination API as a slowly changing dimension.

    ```json
    {"kind": "load", "name": "Load accounting customers", "source": "Shape accounting customers",
     "api": "accounting", "endpoint": {"path": "/customers", "records_path": "data"},
     "natural_key": ["external_id"], "compare": ["name", "email", "country"],
     "scd_type": 2, "history": {"valid_from": "valid_from", "valid_to": "valid_to",
                                "current": "is_current", "version": "version"},
     "update_method": "PATCH", "missing": "expire", "lookup": {"mode": "auto", "by_key_max": 200},
     "concurrency": 8, "error_threshold": {"count": 100, "fraction": 0.05},
     "audit_columns": {"batch_id": "etl_batch_id", "loaded_at": "etl_loaded_at"}}
    ```
    Creates are `POST {path}`, updates `PUT|PATCH {path}/{id}`, expiries and soft deletes `PATCH {path}/{id}`
    with only their fields, deletes `DELETE {path}/{id}`, unless `writes` shapes them otherwise; or creates and
    updates in batches through `bulk`.
    ```
    GET /customers?page=1                  the destination, read to diff (or by key: `lookup`)
    POST /customers  {"external_id": "8", "name": "Globex", ...}          a new key
    PUT /customers/AC-000007  {"external_id": "7", "name": "Acme AG", ...}  a changed one (type 1)
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "load",
                    "name": "Load accounting customers",
                    "source": "Shape accounting customers",
                    "api": "accounting",
                    "endpoint": {"path": "/customers", "records_path": "data"},
                    "natural_key": ["external_id"],
                    "compare": ["name", "email", "country"],
                    "scd_type": 2,
                    "update_method": "PATCH",
                    "missing": "expire",
                    "lookup": {"mode": "auto", "by_key_max": 200},
                    "audit_columns": {"batch_id": "etl_batch_id", "loaded_at": "etl_loaded_at"},
                }
            ]
        }
    )

    kind: Literal["load"] = "load"
    source: str = Field(description="The name of the job whose staged records are loaded.")
    api: str = Field(description="The name of the destination's API, one of the batch type's.")
    endpoint: Endpoint = Field(description="The destination collection: read to diff, then written.")
    natural_key: list[str] = Field(min_length=1, description="Fields that match a staged record to a destination one.")
    compare: list[str] | None = Field(
        default=None,
        description="Fields compared for change; default: every staged field but those the load writes itself.",
    )
    compare_as: dict[str, CompareAs] = Field(
        default_factory=dict,
        description='How a compared field is compared: "decimal" (numbers and numeric text by value), "text" '
        '(exactly); default "value" (canonical.py). A batch type fills in "decimal" for fields its transforms cast so.',
    )
    id_field: str = Field(default="id", description="The destination's own id, used in update URLs.")
    scd_type: Literal[0, 1, 2] = Field(default=1, description="0: insert only; 1: overwrite; 2: keep history.")
    history: History | None = Field(default=None, description="Type 2's validity fields; default: History().")
    update_method: Literal["PUT", "PATCH"] = Field(
        default="PUT", description="How a changed row is overwritten: PUT (the whole row) or PATCH."
    )
    bulk: BulkWrite | None = Field(
        default=None, description="Creates and updates in batches: an upsert endpoint (types 0, 1) or a batch API."
    )
    writes: WriteShapes | None = Field(
        default=None, description="Per action (create, update, expire, soft_delete, delete): method, URL, body shape."
    )
    shape_values: dict[str, str] = Field(
        default_factory=dict,
        description='Values of the write shapes\' URL placeholders (`{table}`): `{"table": "customers"}`.',
    )
    datetime_format: str | None = Field(
        default=None,
        description="strftime (`%3f`: milliseconds) of the validity times and `loaded_at` it writes; "
        "default: `%Y-%m-%dT%H:%M:%S.%fZ` (UTC, microseconds).",
    )
    missing: Missing = Field(default_factory=Missing, description="Keys a full refresh no longer holds.")
    lookup: Lookup = Field(default_factory=Lookup, description="How the load learns what the destination holds.")
    concurrency: int = Field(default=4, ge=1, description="Keys written at once (the API's rate limit also applies).")
    error_threshold: ErrorThreshold | None = Field(default=None, description="Default: refused writes never fail it.")
    dry_run: bool = Field(default=False, description="Compute and report the changes; write nothing.")
    duplicates: Literal["report", "remove_extra"] = Field(
        default="report",
        description="Keys the destination holds more than one row of: each extra row is an error event and the load "
        'writes to one; "remove_extra" also deletes the extras.',
    )
    idempotency_header: str | None = Field(
        default=None,
        description='The header by which the API recognises a create sent twice ("Idempotency-Key"): creates whose '
        "answer was lost are then sent again with it; without one the load looks the key up before sending again.",
    )
    audit_columns: AuditColumns | None = Field(
        default=None, description="Fields stamped with the batch's id and the write's time; null: none."
    )

    @model_validator(mode="after")
    def _consistent(self) -> LoadJob:
        if self.scd_type == 2:
            self.history = self.history or History()
            if self.bulk is not None and self.bulk.item == "record":
                raise ValueError("bulk: an upsert by natural key cannot keep type 2 history; write one by one")
            if self.missing.action in ("delete", "soft_delete"):
                raise ValueError(f'missing: type 2 keeps history; use "expire", not {self.missing.action!r}')
        elif self.missing.action == "expire":
            raise ValueError('missing: "expire" closes type 2 versions; use "soft_delete" or "delete"')
        unfilled = self.shaper().missing_values()
        if unfilled:
            raise ValueError(f"writes: the URL placeholders {unfilled} have no value in shape_values")
        clash = set(self.compare or ()) & self.managed_fields()
        if clash:
            raise ValueError(f"compare: {sorted(clash)} are written by the load itself, not compared")
        return self

    def shaper(self) -> Shaper:
        """The requests of each write, from `writes` (or the defaults) and `shape_values`."""
        return Shaper(
            self.writes,
            path=self.endpoint.path,
            id_field=self.id_field,
            update_method=self.update_method,
            values=self.shape_values,
        )

    def moment(self, moment: datetime) -> str:
        """A validity time or `loaded_at` as this load writes it."""
        return format_datetime(moment, self.datetime_format) if self.datetime_format else format_moment(moment)

    def managed_fields(self) -> set[str]:
        """Fields the load writes itself (id, validity, audit), so never compared for change."""
        history = self.history.fields() if self.history and self.scd_type == 2 else set()
        audit = self.audit_columns.fields() if self.audit_columns else set()
        return {self.id_field, *history, *audit}


def compared_fields(job: LoadJob, staged_fields: set[str]) -> list[str]:
    """The job's `compare` list, or every field any staged record has (one lacking a field compares it as null)."""
    return list(job.compare) if job.compare else sorted(staged_fields - job.managed_fields())


async def run_load(
    job: LoadJob, ctx: BatchContext, report: JobReport, errors: ErrorSink, *, source: StageKey
) -> JobReport:
    """Diff and write the records staged under `source`; keys missing from a full refresh last."""
    client = ctx.client(job.api)
    counts = dict.fromkeys(COUNTS, 0)
    report.counts = counts
    dry_run = job.dry_run or ctx.dry_run
    if dry_run:
        counts["dry_run"] = 1
    acts_on_missing = ctx.full_refresh and job.missing.action != "ignore"
    mode = job.lookup.choose(await ctx.stage.count(source), must_pull=acts_on_missing)
    planner = Planner(job.scd_type, job.moment(ctx.effective_at), job.history, job.missing.soft_delete)
    index: DestinationIndex | None = None

    async def find_created(change: Change) -> Version | None:
        assert index is not None and change.after is not None, "a create is planned against an open index"
        body = next(w.body for w in change.writes if w.op == "create") or {}
        return await index.find_created(client, job.endpoint, job.lookup, change.key, body, change.after)

    writer = Writer(client, _writer_settings(job, ctx, dry_run, find_created), errors, counts)
    own = StageKey(ctx.tenant_id, ctx.batch_id, job.slug)  # the load stages no records; its index rests beside
    last = LastOccurrences(ctx.stage, own.part("last"), job.natural_key)
    await _forget(ctx.stage, own)  # an earlier attempt's index may lack writes that landed: diff afresh
    try:
        # A key staged twice is written once, with its last record: planning it again in a later chunk, against
        # what the earlier one wrote, would write twice (type 2: a zero-length version) and again on every rerun.
        staged_fields = await last.record(source)
        position = 0
        async for chunk in ctx.stage.read(source):
            if index is None:
                index = await _open_index(job, ctx, own, compared_fields(job, staged_fields), mode, writer)
            latest = await last.latest(chunk, position)
            position += len(chunk)
            counts["read"] += len(chunk)
            counts["duplicates"] += len(chunk) - len(latest)
            states = await index.fetch(latest)
            if mode == "by_key":
                await index.look_up(client, job.endpoint, job.lookup, latest, states, job.concurrency)
                await writer.settle_duplicates(states, latest, job.duplicates == "remove_extra")
            latest = {key: _with_nulls(record, index.compare) for key, record in latest.items()}
            changes = [planner.plan(k, r, index.hash(r), states.get(k)) for k, r in latest.items()]
            await writer.apply(changes, states)
            await index.save(states)
            await ctx.report_progress(report)
        _check_fraction(job, counts)  # before any key is removed: a load refused this often removes none
        if acts_on_missing:
            index = index or await _open_index(job, ctx, own, list(job.compare or ()), mode, writer)
            await _retire_missing(job, index, last, planner, writer)
    finally:
        await errors.flush()
        with contextlib.suppress(StageError):  # what the load did, not a stage hiccup in tidying up, is its outcome
            await _forget(ctx.stage, own)
    return report


def _with_nulls(record: dict[str, Any], compare: list[str]) -> dict[str, Any]:
    """The record with an explicit null for each compared (top-level) field it lacks: it is compared as null,
    so it is written as null too, or a PATCH would leave the old value and every rerun would update again."""
    absent = [name for name in compare if "." not in name and name not in record]
    return {**record, **dict.fromkeys(absent)} if absent else record


async def _open_index(
    job: LoadJob, ctx: BatchContext, own: StageKey, compare: list[str], mode: LookupMode, writer: Writer
) -> DestinationIndex:
    index = DestinationIndex(
        ctx.stage,
        own.part("index"),
        key_fields=job.natural_key,
        id_field=job.id_field,
        compare=compare,
        history=job.history if job.scd_type == 2 else None,
        soft_delete=job.missing.soft_delete,
        compare_as=job.compare_as,
    )
    if mode == "pull":
        await index.pull(ctx.client(job.api), job.endpoint)
        async for states in index.duplicated():  # every key the destination holds twice, staged or not
            await writer.settle_duplicates(states, list(states), job.duplicates == "remove_extra")
            await index.save(states)
    return index


async def _forget(stage: Stage, own: StageKey) -> None:
    """Drop the load's bookkeeping: its index of the destination and where each staged key last occurs."""
    for name in ("index", "index.duplicated", "last"):
        await stage.index_drop(own.part(name))


async def _retire_missing(
    job: LoadJob, index: DestinationIndex, seen: LastOccurrences, planner: Planner, writer: Writer
) -> None:
    """Expire, soft-delete or delete the keys the destination held that the full refresh did not, within
    `max_fraction` of the keys it held when pulled: neither keys this run inserted (an extract whose keys all
    changed form) nor soft-deleted ones count, in the share or its total.

    Two passes over the index, a chunk at a time: count, then (within the limit) retire. A key the index
    yields twice is harmless: counted twice at worst, and once retired it is no longer present.
    """
    gone, held = 0, index.pulled_keys
    async for states in index.scan():
        gone += len(await _unseen_present(states, seen))
    if gone and gone > job.missing.max_fraction * held:
        raise LoadLimitExceeded(
            f"the full refresh lacks {gone} of the destination's {held} live keys, more "
            f"than missing.max_fraction={job.missing.max_fraction}: nothing was removed"
        )
    async for states in index.scan():
        changes = [planner.plan_missing(key, states[key], job.missing) for key in await _unseen_present(states, seen)]
        await writer.apply(changes, states)
        await index.save(states)


async def _unseen_present(states: IndexChunk, seen: LastOccurrences) -> list[str]:
    """The chunk's keys the destination holds (not soft-deleted) and the stage does not: each was pulled, since
    every key this run wrote is staged."""
    present = [key for key, state in states.items() if state.present]
    return [key for key, was_seen in zip(present, await seen.contains(present), strict=True) if not was_seen]


def _check_fraction(job: LoadJob, counts: dict[str, int]) -> None:
    threshold = job.error_threshold
    keys = counts["read"] - counts["duplicates"]  # each staged key is written once
    if threshold is None or threshold.fraction is None or not keys:
        return
    share = counts["failed_writes"] / keys
    if share > threshold.fraction:
        raise LoadLimitExceeded(
            f"{counts['failed_writes']} of {keys} staged keys refused ({share:.1%}), "
            f"more than error_threshold.fraction={threshold.fraction}"
        )


def _writer_settings(
    job: LoadJob, ctx: BatchContext, dry_run: bool, find_created: Callable[[Change], Awaitable[Version | None]]
) -> WriterSettings:
    stamp: dict[str, Any] = {}
    if job.audit_columns is not None:
        if job.audit_columns.batch_id:
            stamp[job.audit_columns.batch_id] = ctx.batch_id
        if job.audit_columns.loaded_at:
            stamp[job.audit_columns.loaded_at] = job.moment(utcnow())
    return WriterSettings(
        path=job.endpoint.path,
        id_field=job.id_field,
        update_method=job.update_method,
        concurrency=job.concurrency,
        bulk=job.bulk,
        shaper=job.shaper(),
        threshold=job.error_threshold,
        stamp=stamp or None,
        dry_run=dry_run,
        idempotency_header=job.idempotency_header,
        find_created=find_created,
    )
