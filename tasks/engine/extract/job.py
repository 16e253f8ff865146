"""The extract job: read an entity from an API page by page and stage it, tracking the watermark.

Optionally each record is checked against the entity's JSON Schema (its metadata), and a child endpoint
is read for every record a parent extract staged (`/customers/{id}/bills`). A record the stage cannot hold is
an error event, never a failed batch (`records.py`).

Pages by number or offset are positions, and a source written while it is read moves records between them:
one customer updated while page 3 is read moves to the end, the others one place up, and the first record of
page 4 is never read. So a positional stream is read as a whole again (`passes`) when it shows such a move: a
record read twice in one pass, or a total that changes between pages (`SourceChanged`); a pass with neither
is staged, and only then does the watermark advance. A key read twice may also be the source's own: two records
with one natural key (dirty data). Those stay where they are, so a pass that reads exactly as the pass before
did (the same keys in the same order, the repeats alike, the total unchanged) is staged with both, for the
unique screen or the load to settle: one bad record is an error event there, never a failed batch. Keyset
styles (a cursor or next URL that names the last record read) cannot skip a record this way and are read once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import ConfigError, SourceChanged
from prefect_restful_etl.tasks.engine.extract.children import iter_child_pages
from prefect_restful_etl.tasks.engine.extract.incremental import Cursor, Incremental
from prefect_restful_etl.tasks.engine.extract.reads import ReadKeys, ReadShape
from prefect_restful_etl.tasks.engine.extract.records import EXTRACT_SCREEN, shown, split_unstageable
from prefect_restful_etl.tasks.engine.extract.schema import SchemaChecker
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.jobbase import Endpoint, JobBase
from prefect_restful_etl.tasks.engine.load.scd import natural_key
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.base import StageKey

Records = list[dict[str, Any]]
logger = logging.getLogger(__name__)
_MAX_HELD = 10_000  # error events a positional pass holds back until it is known to be the pass that counts


class EntitySchema(BaseModel):
    """The entity's metadata: a JSON Schema from the API itself, a URL, or a file.

    `{"api_path": "/schemas/customer.json"}` fetches it through the job's API (auth and all) once per run;
    `{"source": "schemas/customer.json"}` reads a file (relative to the working directory) or an http(s) URL.
    ```
    GET /schemas/customer.json
    200 {"type": "object", "required": ["id", "email"],
         "properties": {"id": {"type": "integer"}, "email": {"type": "string", "format": "email"}}}
    ```
    A record that breaks it is an error event (screen `entity schema`); fields the schema does not name, and
    properties no record had, are reported as drift in the job's report.
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={"examples": [{"api_path": "/schemas/customer.json", "on_violation": "reject"}]},
    )

    api_path: str | None = Field(default=None, description="A path on the job's API that answers the JSON Schema.")
    source: str | None = Field(default=None, description="A file, or an http(s) URL, holding the JSON Schema.")
    on_violation: Literal["reject", "flag"] = Field(
        default="reject", description="reject: the record goes only to the error table; flag: it is staged too."
    )
    severity: int = Field(default=6, ge=1, le=10, description="The error events' severity.")

    @model_validator(mode="after")
    def _one_source(self) -> EntitySchema:
        if (self.api_path is None) == (self.source is None):
            raise ValueError("give exactly one of api_path or source")
        return self


class ParentLink(BaseModel):
    """Read the endpoint once per record of an earlier extract: `{"job": "Extract CRM customers"}`.

    The endpoint's path is a template of the parent's fields: `/customers/{id}/bills`.
    ```
    GET /customers/17/bills
    200 {"data": [{"id": "b-1", "amount": 120.0}]}   ->  staged {"id": "b-1", "amount": 120.0, "_parent_id": 17}
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={"examples": [{"job": "Extract CRM customers", "key": "id", "field": "customer_id"}]},
    )

    job: str = Field(description="The name of the extract job whose staged records are the parents.")
    key: str = Field(default="id", description="The parent field copied onto each child record.")
    field: str = Field(default="_parent_id", description="Where each child record gets the parent's key.")


class ExtractJob(JobBase):
    """Read an entity from an API, page by page, into the stage.

    ```
    GET https://crm.example.com/api/customers?updated_since=2026-03-01T10:00:00Z&page=1&per_page=200
    200 {"data": [{"id": 17, "email": "ada@example.com", "updated_at": "2026-03-01T10:04:11Z"}, ...], "total": 412}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "extract",
                    "name": "Extract CRM customers",
                    "api": "crm",
                    "endpoint": {"path": "/customers", "records_path": "data"},
                    "natural_key": ["id"],
                    "incremental": {"cursor_field": "updated_at", "param": "updated_since"},
                }
            ]
        }
    )

    kind: Literal["extract"] = "extract"
    api: str = Field(description="The name of one of the batch type's APIs.")
    endpoint: Endpoint = Field(description="The collection read.")
    natural_key: list[str] = Field(min_length=1, description="Dotted paths that identify a record in the source.")
    incremental: Incremental | None = Field(default=None, description="Read only what changed since the watermark.")
    entity_schema: EntitySchema | None = Field(default=None, description="Check records against a JSON Schema.")
    parent: ParentLink | None = Field(default=None, description="Read the endpoint once per record of another extract.")
    concurrency: int | None = Field(
        default=None, ge=1, description="Pages (or parents) in flight at once; default: the API's concurrency."
    )
    passes: int = Field(
        default=3,
        ge=1,
        description="Times a page-number or offset stream is read when the source changes while it is read;"
        " past that the job fails (and the watermark stays). A natural key read twice in two reads alike (the same"
        " keys in the same order) is the source's own duplicate and is staged, which takes at least 2.",
    )


async def run_extract(
    job: ExtractJob, ctx: BatchContext, report: JobReport, errors: ErrorSink, *, parents: StageKey | None = None
) -> JobReport:
    """Stream every page into the stage; the watermark is reported, and saved only when the batch succeeds.

    `parents` is where the parent extract staged its records, for a job with a `parent` link.
    """
    client = ctx.client(job.api)
    key = ctx.stage_key(job.slug)
    report.stage_key = str(key)
    checker = await _checker(job.entity_schema, client)
    paginator = job.endpoint.paginator or client.api.paginator
    positional = job.parent is None and paginator.positional()
    reads = ReadKeys(ctx.stage, key.part("read"), job.natural_key) if positional else None
    passes = job.passes if reads is not None else 1
    previous: ReadShape | None = None  # the pass before, read whole
    for attempt in range(1, passes + 1):
        held = _HeldErrors(errors)
        shape = None
        try:
            cursor = await _one_pass(job, ctx, report, held, checker, parents, reads)
            shape = reads.shape() if reads is not None else None
            problem = None if shape is None or not shape.repeated or shape == previous else _moved(job, shape)
        except SourceChanged as ex:
            problem = str(ex)
        finally:
            if reads is not None:
                await reads.drop()
        if problem is None:
            if shape is not None and shape.repeated:
                logger.warning("%s: %s", job.name, _own_duplicates(job, shape, attempt))
            await held.release()
            break
        if attempt == passes or held.released:
            raise SourceChanged(f"{problem}; read {attempt} times, the source changed each time: {_ADVICE}")
        previous = shape
        logger.warning("%s: %s; reading the whole stream again (pass %d of %d)", job.name, problem, attempt + 1, passes)
    await errors.flush()
    if cursor is not None:
        report.watermark_after = cursor.value
        report.keys_at_watermark = list(cursor.keys_at_value)
    if checker is not None:
        drift = checker.drift()
        report.schema_drift = (
            {"unexpected_fields": list(drift.unexpected_fields), "unseen_properties": list(drift.unseen_properties)}
            if drift.drifted
            else {}
        )
    return report


_ADVICE = (
    "pages by number or offset move when records are written while they are read (or when the API does not sort"
    " them stably); a keyset paginator (cursor, next_url) reads such a source safely, or sort by the cursor, then"
    " the natural key"
)


def _moved(job: ExtractJob, shape: ReadShape) -> str:
    where = f"GET {job.api}:{job.endpoint.path} (page {shape.first_page} of the stream)"
    return (
        f"{where}: {_named(shape.repeated)} came twice in one read of the stream: records moved between pages,"
        " or the source holds two records with one natural key (which a second read alike would show)"
    )


def _own_duplicates(job: ExtractJob, shape: ReadShape, attempt: int) -> str:
    return (
        f"GET {job.api}:{job.endpoint.path}: {_named(shape.repeated)} came twice in reads {attempt - 1} and {attempt}"
        " of the stream alike, in the same places: the source holds more than one record with such a natural key;"
        " all are staged, for the unique screen or the load's duplicates to settle"
    )


def _named(keys: Sequence[str]) -> str:
    named = ", ".join(repr(shown(k)) for k in keys[:3])
    return f"the natural key {named}" + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")


async def _one_pass(
    job: ExtractJob,
    ctx: BatchContext,
    report: JobReport,
    errors: _HeldErrors,
    checker: SchemaChecker | None,
    parents: StageKey | None,
    reads: ReadKeys | None,
) -> Cursor | None:
    """Read the whole stream once into a stage key cleared first, noting its keys in `reads`; raises
    SourceChanged when the announced total changed."""
    key = ctx.stage_key(job.slug)
    await ctx.stage.clear(key)  # a retried extract (or pass) starts its output afresh: nothing is staged twice
    params = dict(job.endpoint.params)
    cursor = await _cursor(job, ctx, report)
    if cursor is not None:
        params.update(cursor.request_params())
    counts = report.counts = {"extracted": 0, "skipped": 0, "rejected": 0}
    async for page in _pages(job, ctx.client(job.api), ctx, params, parents):
        if reads is not None:
            await reads.read(page)
        if cursor is not None:
            keys = _keys(page, job.natural_key)
            fresh = [r for r, k in zip(page, keys, strict=True) if cursor.admit(r, k)]
            counts["skipped"] += len(page) - len(fresh)
            page = fresh
        page = await _stageable(job, page, errors, counts)
        if checker is not None:
            page = await _screen_schema(job, checker, page, errors, counts)
        if page:
            await ctx.stage.append(key, page)
            counts["extracted"] += len(page)
        await ctx.report_progress(report)
    return cursor


def _keys(page: Records, fields: list[str]) -> list[str | None]:
    """Each record's natural key as the watermark remembers it (see `_seen_key`), a plain field read directly."""
    if len(fields) == 1 and "." not in fields[0]:
        field = fields[0]
        return [None if not isinstance(r, dict) or (v := r.get(field)) is None else str(v) for r in page]
    return [_seen_key(r, fields) for r in page]


class _HeldErrors:
    """A pass's error events, held back until the pass is the one that counts (a pass read again would write
    them twice); past `_MAX_HELD` they go on, and a change of the source then fails the job instead."""

    def __init__(self, sink: ErrorSink) -> None:
        self.sink, self.released = sink, False
        self.events: list[dict[str, Any]] = []

    async def add(self, **event: Any) -> None:
        self.events.append(event)
        if len(self.events) >= _MAX_HELD:
            await self.release()

    async def release(self) -> None:
        events, self.events, self.released = self.events, [], True
        for event in events:
            await self.sink.add(**event)


async def _stageable(job: ExtractJob, page: Records, errors: _HeldErrors, counts: dict[str, int]) -> Records:
    """The page less the records no stage can hold (NaN, a lone surrogate, nesting too deep): error events."""
    kept, bad = split_unstageable(page)
    for record, problem in bad:
        await errors.add(
            screen=EXTRACT_SCREEN,
            message=problem.message if problem.column is None else f"{problem.column}: {problem.message}",
            column=problem.column,
            value=problem.value,
            natural_key=_key_text(record, job.natural_key),
            severity=8,
            action="reject",
        )
    counts["rejected"] += len(bad)
    return kept


def _key_text(record: Any, fields: Sequence[str]) -> str | None:
    if not isinstance(record, dict) or all(get_path(record, f) is None for f in fields):
        return None
    return shown(natural_key(record, fields))


def _seen_key(record: dict[str, Any], fields: list[str]) -> str | None:
    """The natural key the watermark remembers the record by, or None when a part of it is missing.

    A keyless record cannot be told from another keyless one, so it is never remembered as seen: else the
    next run would drop every keyless record at the watermark. Read twice, it is harmless (a load diffs).
    """
    if any(get_path(record, field) is None for field in fields):
        return None
    return natural_key(record, fields)


def _pages(
    job: ExtractJob, client: RestClient, ctx: BatchContext, params: dict[str, Any], parents: StageKey | None
) -> AsyncIterator[Records]:
    endpoint = job.endpoint
    if job.parent is None:
        return client.paginate(
            endpoint.path,
            params=params,
            records_path=endpoint.records_path,
            paginator=endpoint.paginator,
            concurrency=job.concurrency,
        )
    assert parents is not None, "a job with a parent link is given its parents' stage key"
    return iter_child_pages(
        client,
        ctx.stage.read(parents),
        endpoint.path,
        parent_key=job.parent.key,
        parent_field=job.parent.field,
        params=params,
        records_path=endpoint.records_path,
        paginator=endpoint.paginator,
        concurrency=job.concurrency,
    )


async def _cursor(job: ExtractJob, ctx: BatchContext, report: JobReport) -> Cursor | None:
    if job.incremental is None:
        return None
    stored = None if ctx.full_refresh else await ctx.audit.get_watermark(ctx.tenant_id, ctx.batch_type, job.slug)
    cursor = Cursor(
        job.incremental, value=stored.value if stored else None, keys_at_value=stored.keys_at_value if stored else []
    )
    report.watermark_before = cursor.value
    return cursor


async def _checker(link: EntitySchema | None, client: RestClient) -> SchemaChecker | None:
    if link is None:
        return None
    if link.api_path is not None:
        source = f"{client.api.name}:{link.api_path}"
        return SchemaChecker(_schema_object(await client.request("GET", link.api_path), source), source=source)
    assert link.source is not None
    return await SchemaChecker.load(link.source)


def _schema_object(response: httpx.Response, source: str) -> dict[str, Any]:
    """The body as a JSON Schema; any other answer (HTML, a list of records) means api_path names the wrong
    endpoint, a configuration mistake rather than a crash of the checker."""
    try:
        schema = response.json()
    except ValueError:
        schema = None
    if not isinstance(schema, dict):
        raise ConfigError("entity_schema.api_path", f"{source} did not answer with a JSON Schema (a JSON object)")
    return schema


async def _screen_schema(
    job: ExtractJob, checker: SchemaChecker, page: Records, errors: _HeldErrors, counts: dict[str, int]
) -> Records:
    """A record that fails the schema is an error event, never a crash; `flag` stages it all the same."""
    link = job.entity_schema
    assert link is not None
    kept = []
    for record in page:
        violation = checker.check(record)
        if violation is not None:
            await errors.add(
                screen="entity schema",
                message=violation.message,
                column=violation.column,
                value=violation.value,
                natural_key=natural_key(record, job.natural_key),
                severity=link.severity,
                action=link.on_violation,
            )
            if link.on_violation == "reject":
                counts["rejected"] += 1
                continue
        kept.append(record)
    return kept
