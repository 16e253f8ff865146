"""A micro-batch's first job: the records its hooks pushed, staged where the extract job would have staged its own.

Events come from the intake's sealed segments in arrival order; a repeated event id is dropped. Per natural key
only the newest record is staged (by the version field, the extract's cursor by default; arrival order where
it has none). A pushed record never goes back in time: one older than what was already loaded for its key (the
polling's watermark, or a newer version pushed before) is read afresh from the source by key when `fetch` is
configured, and skipped otherwise. A hook that carries only an id is read by key the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import SourceError
from prefect_restful_etl.tasks.engine.extract.incremental import CursorValue, format_cursor, parse_cursor
from prefect_restful_etl.tasks.engine.extract.job import ExtractJob
from prefect_restful_etl.tasks.engine.hooks.config import HookFeed
from prefect_restful_etl.tasks.engine.hooks.intake import Intake
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.load.scd import natural_key
from prefect_restful_etl.tasks.engine.report import JobReport

Record = dict[str, Any]
_CHUNK = 500


class _Gathered:
    """The newest record per key, and the keys to read from the source (hooks with ids, stale pushes)."""

    def __init__(self, job: ExtractJob, feed: HookFeed) -> None:
        self.job, self.feed = job, feed
        self.latest: dict[str, tuple[CursorValue | None, Record]] = {}
        self.fetch: dict[str, Any] = {}
        self.duplicates = 0

    def version(self, record: Record) -> CursorValue | None:
        if self.feed.version_field is None:
            return None
        try:
            return parse_cursor(get_path(record, self.feed.version_field), self.feed.version_type)
        except (TypeError, ValueError, OverflowError, OSError):
            return None  # no readable version: arrival order decides

    def offer(self, key: str, record: Record) -> None:
        version = self.version(record)
        held = self.latest.get(key)
        if held is not None:
            self.duplicates += 1
            if held[0] is not None and version is not None and version < held[0]:  # type: ignore[operator]
                return  # an older version that arrived later
        self.latest[key] = (version, record)


async def run_pushed(
    job: ExtractJob,
    feed: HookFeed,
    ctx: BatchContext,
    report: JobReport,
    errors: ErrorSink,
    *,
    intake: Intake,
    segments: list[str],
) -> JobReport:
    """Stage the pushed records of `segments` under the job's stage key, as its extract would have."""
    key = ctx.stage_key(job.slug)
    report.stage_key = str(key)
    await ctx.stage.clear(key)
    counts = report.counts = {"extracted": 0, "duplicates": 0, "skipped": 0, "events": 0, "fetched": 0}
    gathered = _Gathered(job, feed)
    await _gather(job, ctx, intake, segments, gathered, errors, counts)
    await _hold_back_stale(job, feed, ctx, intake, gathered, counts)
    if gathered.fetch:
        await _fetch(job, feed, ctx, gathered, errors, counts)
    counts["duplicates"] = gathered.duplicates
    records = [record for _, record in gathered.latest.values()]
    for start in range(0, len(records), _CHUNK):
        await ctx.stage.append(key, records[start : start + _CHUNK])
    counts["extracted"] = len(records)
    versions = {k: str(format_cursor(v)) for k, (v, _) in gathered.latest.items() if v is not None}
    await ctx.stage.index_put(intake.key(ctx.tenant_id, ctx.batch_type, f"versions-{job.slug}"), versions)
    await errors.flush()
    await ctx.report_progress(report)
    return report


async def _gather(
    job: ExtractJob,
    ctx: BatchContext,
    intake: Intake,
    segments: list[str],
    gathered: _Gathered,
    errors: ErrorSink,
    counts: dict[str, int],
) -> None:
    events: set[str] = set()
    for segment in segments:
        async for chunk in intake.read(ctx.tenant_id, ctx.batch_type, segment):
            for event in chunk:
                if event.get("event_id") in events:
                    continue  # stored twice by a receiver killed between storing it and remembering its id
                events.add(str(event.get("event_id")))
                counts["events"] += 1
                for record in event.get("records") or ():
                    await _offer(job, record, str(event.get("event_id")), gathered, errors, counts)
                for ident in event.get("ids") or ():
                    gathered.fetch[str(ident)] = ident


async def _offer(
    job: ExtractJob, record: Any, event_id: str, gathered: _Gathered, errors: ErrorSink, counts: dict[str, int]
) -> None:
    if not isinstance(record, dict) or any(get_path(record, field) is None for field in job.natural_key):
        counts["skipped"] += 1
        await errors.add(
            screen="hook",
            message=f"event {event_id}: a pushed record without its natural key {job.natural_key}",
            severity=6,
        )
        return
    gathered.offer(natural_key(record, job.natural_key), record)


async def _hold_back_stale(
    job: ExtractJob, feed: HookFeed, ctx: BatchContext, intake: Intake, gathered: _Gathered, counts: dict[str, int]
) -> None:
    """A pushed record older than its key's newest loaded version is read again from the source, or skipped."""
    keys = [k for k, (version, _) in gathered.latest.items() if version is not None]
    if not keys:
        return
    floor = await _watermark(job, feed, ctx)
    known = await ctx.stage.index_get(intake.key(ctx.tenant_id, ctx.batch_type, f"versions-{job.slug}"), keys)
    for k, stored in zip(keys, known, strict=True):
        version, record = gathered.latest[k]
        newest = [v for v in (floor, _parsed(stored, feed)) if v is not None]
        if newest and version < max(newest):  # type: ignore[operator]
            del gathered.latest[k]
            if feed.fetch is not None:
                gathered.fetch[k] = get_path(record, job.natural_key[0]) if len(job.natural_key) == 1 else k
            else:
                counts["skipped"] += 1


async def _watermark(job: ExtractJob, feed: HookFeed, ctx: BatchContext) -> CursorValue | None:
    """The polling's watermark, when the version is the polling's own cursor: what it loaded is at least that new."""
    if job.incremental is None or job.incremental.cursor_field != feed.version_field:
        return None
    stored = await ctx.audit.get_watermark(ctx.tenant_id, ctx.batch_type, job.slug)
    return _parsed(stored.value if stored else None, feed)


def _parsed(value: Any, feed: HookFeed) -> CursorValue | None:
    if value is None:
        return None
    try:
        return parse_cursor(value, feed.version_type)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


async def _fetch(
    job: ExtractJob, feed: HookFeed, ctx: BatchContext, gathered: _Gathered, errors: ErrorSink, counts: dict[str, int]
) -> None:
    """Read each key's record from the source: the source's own record is its newest, so it replaces a push."""
    assert feed.fetch is not None
    fetch, client = feed.fetch, ctx.client(job.api)
    slots = asyncio.Semaphore(fetch.concurrency)

    async def one(ident: Any) -> Record | None:
        async with slots:
            try:
                response = await client.request("GET", fetch.path.replace("{id}", quote(str(ident), safe="")))
            except SourceError as ex:
                if ex.status != 404:
                    raise
                await errors.add(
                    screen="hook fetch",
                    message="the source no longer holds the record (deleted since its hook)",
                    natural_key=str(ident),
                    severity=3,
                    action="pass",
                )
                return None
        record = get_path(response.json(), fetch.record_path)
        return record if isinstance(record, dict) else None

    found = await asyncio.gather(*(one(ident) for ident in gathered.fetch.values()))
    for record in found:
        if record is None:
            counts["skipped"] += 1
            continue
        counts["fetched"] += 1
        k = natural_key(record, job.natural_key)
        if k in gathered.latest:
            gathered.duplicates += 1
        gathered.latest[k] = (gathered.version(record), record)
