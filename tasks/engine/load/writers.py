"""Carrying out a load's planned changes through the destination API: one request per write, or a bulk upsert.

A write the API refuses (a 4xx) becomes an error event and the load goes on, up to the job's error threshold;
a destination that is down (429, 5xx, no connection, after the client's retries) fails the job, so that a
rerun, which diffs afresh, converges.

A create whose answer is lost (429, 5xx, a dropped connection: it may have landed) is never sent again blindly:
the load looks its key up first, and takes the row it finds as the create's; only a key that is still absent is
sent again. With an `Idempotency-Key` header (`idempotency_header`) the API itself recognises a create sent
twice, and the client sends it again as it would a PUT.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import LoadLimitExceeded, RetriableError, SourceError
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.load.destination import IndexChunk
from prefect_restful_etl.tasks.engine.load.scd import Change, KeyState, Version, Write


class BulkWrite(BaseModel):
    """An upsert endpoint: a list of records in, one result per record out, in the same order.

    ```
    POST /customers/bulk  [{"external_id": "7", "name": "Acme", ...}, ...]
    200 [{"id": "AC-000007", "status": "created", "detail": null},
         {"id": null, "status": "error", "detail": "email: 'x' is not a valid email address"}]
    ```
    `{"path": "/customers/bulk", "batch_size": 100}`. It must match records by the job's natural key, so it
    serves types 0 and 1 (a type 2 key has several rows); deletes and expiries still go one by one.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    path: str = Field(min_length=1)
    batch_size: int = Field(default=100, ge=1, description="Records per request (the API's maximum or less).")
    results_path: str | None = Field(default=None, description="Where the per-record results are; default: the body.")
    status_field: str = "status"
    error_status: str = "error"
    message_field: str = "detail"


class ErrorThreshold(BaseModel):
    """Fail the load past this many refused writes, or past this share of the staged keys: `{"count": 50}`."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    count: int | None = Field(default=None, ge=0, description="Fail as soon as more writes than this are refused.")
    fraction: float | None = Field(default=None, ge=0, le=1, description="Checked once the staged keys are done.")


class AuditColumns(BaseModel):
    """Fields stamped on each created or updated row: `{"batch_id": "etl_batch_id", "loaded_at": "etl_loaded_at"}`.

    Never compared for change, and not stamped by the PATCHes that only expire or soft-delete a row.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    batch_id: str | None = "etl_batch_id"
    loaded_at: str | None = "etl_loaded_at"

    def fields(self) -> set[str]:
        return {f for f in (self.batch_id, self.loaded_at) if f}


@dataclass
class WriterSettings:
    path: str
    id_field: str
    update_method: str
    concurrency: int
    bulk: BulkWrite | None = None
    threshold: ErrorThreshold | None = None
    stamp: dict[str, Any] | None = None  # the audit columns' values
    dry_run: bool = False
    idempotency_header: str | None = None  # e.g. "Idempotency-Key": the API recognises a create sent twice
    # Looks a key up after a create's answer was lost: the row the create made, or None if it is absent.
    find_created: Callable[[Change], Awaitable[Version | None]] | None = None


class Writer:
    """Applies one chunk's changes at a time, `concurrency` keys in flight; keeps `counts` and the chunk's states."""

    def __init__(self, client: RestClient, settings: WriterSettings, errors: ErrorSink, counts: dict[str, int]) -> None:
        self._client, self._settings, self._errors, self.counts = client, settings, errors, counts
        self._path = settings.path.rstrip("/")
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._run = uuid.uuid4()  # idempotency keys: one per key and version within this load, new in the next

    async def apply(self, changes: Sequence[Change], index: IndexChunk) -> None:
        if self._settings.dry_run:
            for change in changes:
                self._count(change)
            return
        quiet = [c for c in changes if not c.writes]
        for change in quiet:
            self._count(change)
        bulk = self._settings.bulk
        bulked = [c for c in changes if bulk and _upsertable(c)]
        single = [c for c in changes if c.writes and not (bulk and _upsertable(c))]
        try:
            async with asyncio.TaskGroup() as group:
                for change in single:
                    group.create_task(self._change(change, index))
                if bulk is not None:
                    for start in range(0, len(bulked), bulk.batch_size):
                        group.create_task(self._bulk(bulk, bulked[start : start + bulk.batch_size], index))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first failure, as itself; its siblings were cancelled

    async def _change(self, change: Change, index: IndexChunk) -> None:
        """The writes of one key, in order; a refused one stops the rest of that key's writes."""
        new_id, landed = None, []
        async with self._limit:
            try:
                for write in change.writes:
                    written = await (self._create(change, write) if write.op == "create" else self._send(write))
                    landed.append(write)
                    if write.op == "create":
                        new_id = written
            except RetriableError:
                self._count_landed(change, landed)
                raise  # the API is down, not the record: fail the job so that a rerun converges
            except SourceError as ex:
                if change.after is not None and any(w.op == "create" for w in landed):
                    _add_live(index, change.key, replace(change.after, id=new_id))
                self._count_landed(change, landed)
                await self._refused(change.key, str(ex))
                return
        self._landed(change, new_id, index)

    async def _create(self, change: Change, write: Write) -> Any:
        """POST one new row; returns its id. A lost answer is followed by a look-up of the key, never by a blind
        second POST: only a key the destination still lacks is sent again (see the module's docstring)."""
        client, settings = self._client, self._settings
        body = self._stamped(write.body)
        header = settings.idempotency_header
        if header:
            token = str(uuid.uuid5(self._run, f"{change.key}\x00{change.after.number if change.after else 0}"))
            response = await client.request("POST", self._path, json=body, headers={header: token}, idempotent=True)
            return _id_of(response.json() if response.content else None, settings.id_field)
        find = settings.find_created
        attempt = 1
        while True:
            try:
                response = await client.request("POST", self._path, json=body, attempts=1 if find else None)
                return _id_of(response.json() if response.content else None, settings.id_field)
            except RetriableError as lost:
                found = await find(change) if find else None
                if found is not None:
                    return found.id  # it landed: its answer was lost, not the row
                if find is None or attempt >= client.api.max_attempts:
                    raise
                await client.pause(attempt, lost)
                attempt += 1

    async def _send(self, write: Write) -> Any:
        """One update, expiry, soft delete or delete."""
        client, settings = self._client, self._settings
        url = f"{self._path}/{quote(str(write.target), safe='')}"
        if write.op == "delete":
            try:
                await client.request("DELETE", url)
            except SourceError as ex:
                if ex.status != 404:  # already gone: a retried DELETE whose first answer was lost
                    raise
            return None
        method, body = (
            (settings.update_method, self._stamped(write.body)) if write.op == "update" else ("PATCH", write.body)
        )
        # Every body holds whole values (no increments), so sending it twice does no harm.
        await client.request(method, url, json=body, idempotent=True)
        return None

    async def _bulk(self, bulk: BulkWrite, batch: list[Change], index: IndexChunk) -> None:
        body = [self._stamped(change.writes[0].body) for change in batch]
        async with self._limit:
            try:
                # An upsert by natural key may be sent twice: the second finds what the first wrote.
                response = await self._client.request("POST", bulk.path, json=body, idempotent=True)
            except RetriableError:
                raise
            except SourceError as ex:
                for change in batch:
                    await self._refused(change.key, str(ex))
                return
        results = get_path(response.json(), bulk.results_path) if response.content else None
        if not isinstance(results, list) or len(results) != len(batch):
            results = [{}] * len(batch)  # no per-record results: the request's success is every record's
        for change, result in zip(batch, results, strict=True):
            result = result if isinstance(result, dict) else {}
            if result.get(bulk.status_field) == bulk.error_status:
                detail = result.get(bulk.message_field) or "refused"
                where = f"POST {self._client.api.name}:{bulk.path}"
                await self._refused(change.key, f"{where} refused the record: {detail}")
            else:
                self._landed(change, result.get(self._settings.id_field), index)

    def _stamped(self, body: dict[str, Any] | None) -> dict[str, Any]:
        stamp = self._settings.stamp
        return {**(body or {}), **stamp} if stamp else dict(body or {})

    def _landed(self, change: Change, new_id: Any, index: IndexChunk) -> None:
        before = index[change.key] if change.key in index else KeyState()
        after = change.after
        if after is None:
            index.set(change.key, KeyState([], before.top, before.ended))
        else:
            live = after if after.id is not None or new_id is None else replace(after, id=new_id)
            index.set(change.key, KeyState([live], max(before.top, live.number), before.ended))
        self._count(change)

    def _count(self, change: Change) -> None:
        if change.outcome != "expired":
            self.counts[change.outcome] += 1
        self.counts["expired"] += change.expires

    def _count_landed(self, change: Change, landed: list[Write]) -> None:
        """The writes of a key that landed before one failed: a created version counts as the key's outcome
        (type 2: the new version is there, only an expiry is missing, which the next run mends)."""
        if any(w.op == "create" for w in landed) and change.outcome != "expired":
            self.counts[change.outcome] += 1
        self.counts["expired"] += sum(w.op == "expire" for w in landed)

    async def _refused(self, key: str, message: str) -> None:
        self.counts["failed_writes"] += 1
        await self._errors.add(screen="load", message=message, natural_key=key, severity=7)
        threshold = self._settings.threshold
        if threshold is not None and threshold.count is not None and self.counts["failed_writes"] > threshold.count:
            raise LoadLimitExceeded(
                f"{self.counts['failed_writes']} writes refused, more than the threshold of "
                f"{threshold.count}; the last: {message}"
            )


def _add_live(index: IndexChunk, key: str, version: Version) -> None:
    """A version created before a later write of its key was refused: both are live now, and the key's
    next change (in a later chunk) mends them, as a rerun would."""
    state = index[key] if key in index else KeyState()
    index.set(key, KeyState([*state.live, version], max(state.top, version.number), state.ended))


def _upsertable(change: Change) -> bool:
    return len(change.writes) == 1 and change.writes[0].op in ("create", "update")


def _id_of(body: Any, id_field: str) -> Any:
    return body.get(id_field) if isinstance(body, dict) else None
