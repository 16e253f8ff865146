"""Carrying out a load's planned changes through the destination API: one request per write, or a bulk upsert.

A write the API refuses (a 4xx) becomes an error event and the load goes on, up to the job's error threshold;
a destination that is down (429, 5xx, no connection, after the client's retries) fails the job, so that a
rerun, which diffs afresh, converges.

A create whose answer is lost (429, 5xx, a dropped connection: it may have landed) is never sent again blindly:
the load looks its key up first, and takes the row it finds as the create's; only a key that is still absent is
sent again. With an `Idempotency-Key` header (`idempotency_header`) the API itself recognises a create sent
twice, and the client sends it again as it would a PUT. A batch API's batch that holds creates is treated alike:
after a lost answer its creates are looked up, and only the rows not found are sent again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import LoadLimitExceeded, RetriableError, SourceError, first_failure
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.http.paginators import body_of
from prefect_restful_etl.tasks.engine.load.bulk import BulkWrite, failed_rows, request_body, row_results
from prefect_restful_etl.tasks.engine.load.destination import IndexChunk
from prefect_restful_etl.tasks.engine.load.scd import Change, KeyState, Version, Write
from prefect_restful_etl.tasks.engine.load.shapes import Shaper

__all__ = ["AuditColumns", "BulkWrite", "ErrorThreshold", "Writer", "WriterSettings"]
_REFUSALS = frozenset({400, 409, 422})  # a batch API's "some rows failed": read, not raised, when it names them


class ErrorThreshold(BaseModel):
    """Fail the load past this many refused writes, or past this share of the staged keys: `{"count": 50}`.

    ```
    POST /customers  {"external_id": "7", "email": "x"}
    422 {"detail": "email: 'x' is not a valid email address"}      -> an error event; the 51st such fails the load
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={"examples": [{"count": 50}, {"count": 100, "fraction": 0.05}]},
    )

    count: int | None = Field(default=None, ge=0, description="Fail as soon as more writes than this are refused.")
    fraction: float | None = Field(default=None, ge=0, le=1, description="Checked once the staged keys are done.")


class AuditColumns(BaseModel):
    """Fields stamped on each created or updated row: `{"batch_id": "etl_batch_id", "loaded_at": "etl_loaded_at"}`.

    Never compared for change, and not stamped by the PATCHes that only expire or soft-delete a row.
    ```
    POST /customers  {"external_id": "7", "name": "Acme", "etl_batch_id": "4f1c2a9e-...",
                      "etl_loaded_at": "2026-03-01T10:00:03.120000Z"}
    ```
    `etl_batch_id` is the batch's id (its Prefect flow run id, as in `etl_batch`); `etl_loaded_at` the moment of the
    write, in the load's `datetime_format`.
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={"examples": [{"batch_id": "etl_batch_id", "loaded_at": "etl_loaded_at"}]},
    )

    batch_id: str | None = Field(default="etl_batch_id", description="Where the batch's id goes; null: nowhere.")
    loaded_at: str | None = Field(default="etl_loaded_at", description="Where the write's time goes; null: nowhere.")

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
    shaper: Shaper | None = None  # the write shapes; default: POST path, PUT|PATCH|DELETE path/id

    def __post_init__(self) -> None:
        if self.shaper is None:
            self.shaper = Shaper(
                None, path=self.path, id_field=self.id_field, update_method=self.update_method, values={}
            )


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
            raise first_failure(failed) from None  # as itself; its siblings were cancelled

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
        """POST one new row (as the create shape says); returns its id. A lost answer is followed by a look-up
        of the key, never by a blind second POST: only a key the destination still lacks is sent again (see the
        module's docstring)."""
        client, settings, shaper = self._client, self._settings, self._shaper
        method, url, body = shaper.request(write, self._stamped(write.body))
        header = settings.idempotency_header
        if header:
            token = str(uuid.uuid5(self._run, f"{change.key}\x00{change.after.number if change.after else 0}"))
            response = await client.request(method, url, json=body, headers={header: token}, idempotent=True)
            return shaper.new_id(body_of(response) if response.content else None)
        find = settings.find_created
        attempt = 1
        while True:
            try:
                response = await client.request(method, url, json=body, attempts=1 if find else None)
                return shaper.new_id(body_of(response) if response.content else None)
            except RetriableError as lost:
                found = await find(change) if find else None
                if found is not None:
                    return found.id  # it landed: its answer was lost, not the row
                if find is None or attempt >= client.api.max_attempts:
                    raise
                await client.pause(attempt, lost)
                attempt += 1

    async def _send(self, write: Write) -> Any:
        """One update, expiry, soft delete or delete, as the write shapes say."""
        client = self._client
        record = self._stamped(write.body) if write.op == "update" else write.body
        method, url, body = self._shaper.request(write, record)
        if write.op == "delete":
            try:
                await client.request(method, url, json=body)
            except SourceError as ex:
                if ex.status != 404:  # already gone: a retried DELETE whose first answer was lost
                    raise
            return None
        # Every body holds whole values (no increments), so sending it twice does no harm.
        await client.request(method, url, json=body, idempotent=True)
        return None

    @property
    def _shaper(self) -> Shaper:
        assert self._settings.shaper is not None
        return self._settings.shaper

    def _bulk_item(self, bulk: BulkWrite, change: Change) -> Any:
        write = change.writes[0]
        record = self._stamped(write.body)
        if bulk.item == "record":
            return record
        method, url, body = self._shaper.request(write, record)
        return {"method": method, "url": url, "body": body}

    async def _bulk(self, bulk: BulkWrite, batch: list[Change], index: IndexChunk) -> None:
        where = f"POST {self._client.api.name}:{bulk.path}"
        accept = _REFUSALS if bulk.failures_path else frozenset()
        batch = list(batch)  # `_post_batch` takes out the rows a look-up found landed
        async with self._limit:
            try:
                response = await self._post_batch(bulk, batch, index, accept)
            except RetriableError:
                raise
            except SourceError as ex:
                for change in batch:
                    await self._refused(change.key, str(ex))
                return
        if response is None:  # every row landed, its answer lost
            return
        answer = body_of(response) if response.content else None
        if not response.is_success:
            await self._bulk_refused(bulk, batch, index, answer, response.status_code)
            return
        for change, (new_id, refusal) in zip(
            batch, row_results(bulk, answer, len(batch), self._settings.id_field), strict=True
        ):
            if refusal is not None:
                await self._refused(change.key, f"{where} refused the record: {refusal}")
            else:
                self._landed(change, new_id, index)

    async def _post_batch(
        self, bulk: BulkWrite, pending: list[Change], index: IndexChunk, accept: frozenset[int]
    ) -> httpx.Response | None:
        """POST one batch; None when its answer was lost but every row is known to have landed.

        An upsert by natural key, or a batch of updates (whole values), may be sent twice: the second finds what
        the first wrote. A batch of sub-requests holding creates is sent once per attempt: after a lost answer
        (429, 5xx, a cut) their keys are looked up, those found landed (and are taken out of `pending`), and the
        rest is sent again; a transactional batch one of whose creates landed landed whole."""
        client, find = self._client, self._settings.find_created
        if bulk.item == "record" or all(change.writes[0].op != "create" for change in pending):
            body = request_body(bulk, [self._bulk_item(bulk, change) for change in pending])
            return await client.request("POST", bulk.path, json=body, idempotent=True, accept_status=accept)
        attempt = 1
        while True:
            body = request_body(bulk, [self._bulk_item(bulk, change) for change in pending])
            try:
                once = 1 if find else None  # without a look-up, the client sends it again only if it never left
                return await client.request("POST", bulk.path, json=body, attempts=once, accept_status=accept)
            except RetriableError as lost:
                if find is None:
                    raise
                found = {id(change): await find(change) for change in pending if change.writes[0].op == "create"}
                whole = bulk.transactional and any(version is not None for version in found.values())
                for change in list(pending):
                    version = found.get(id(change))
                    if version is not None or whole:
                        pending.remove(change)
                        self._landed(change, version.id if version else None, index)
                if not pending:
                    return None
                if attempt >= client.api.max_attempts:
                    raise
                await client.pause(attempt, lost)
                attempt += 1

    async def _bulk_refused(
        self, bulk: BulkWrite, batch: list[Change], index: IndexChunk, answer: Any, status: int
    ) -> None:
        """A refused batch that names its failed rows: those are error events; the others landed, or (a
        transactional API) were rolled back and are sent again without the failed ones.

        A transaction that stops at its first failure (PocketBase's) names one row per answer, so a batch with
        several bad rows takes a round per bad row: each round sends fewer rows, and an answer that names none
        refuses all it held, so the rounds end."""
        where = f"POST {self._client.api.name}:{bulk.path} answered {status}"
        failed = failed_rows(bulk, answer, len(batch)) or dict.fromkeys(range(len(batch)), "the batch was refused")
        for position, reason in failed.items():
            await self._refused(batch[position].key, f"{where}, refusing the record: {reason}")
        rest = [change for position, change in enumerate(batch) if position not in failed]
        if not rest:
            return
        if bulk.transactional:
            await self._bulk(bulk, rest, index)
        else:
            for change in rest:
                self._landed(change, None, index)

    async def settle_duplicates(self, index: IndexChunk, keys: Iterable[str], remove: bool) -> None:
        """Keys the destination holds more than one row of (`KeyState.extras`): each extra row is an error event,
        and the load goes on with the newest row alone; `remove` deletes the extras (each counted as deleted)."""
        extras: list[tuple[str, Version]] = []
        for key in keys:
            state = index.get(key)
            found = state.extras() if state else []
            if state is None or not found:
                continue
            kept = state.newest()
            assert kept is not None
            for extra in found:
                fate = "deleted" if remove else "left as it is, never written (duplicates: report)"
                message = (
                    f"the destination holds {len(found) + 1} rows of this natural key: {kept.id!r} is the one "
                    f"written, {extra.id!r} is an extra, {fate}"
                )
                action = "remove" if remove else "report"
                await self._errors.add(
                    screen="load", message=message, natural_key=key, column=self._settings.id_field,
                    value=extra.id, severity=6, action=action,
                )  # fmt: skip
                extras.append((key, extra))
            index.set(key, state.without(found))
        if remove:
            await self._remove(extras)

    async def _remove(self, extras: list[tuple[str, Version]]) -> None:
        """DELETE each extra row, `concurrency` at a time (a dry run only counts them)."""

        async def one(key: str, extra: Version) -> None:
            async with self._limit:
                try:
                    await self._send(Write("delete", None, extra.id))
                except RetriableError:
                    raise
                except SourceError as ex:
                    await self._refused(key, str(ex))
                    return
            self.counts["deleted"] += 1

        if self._settings.dry_run:
            self.counts["deleted"] += len(extras)
            return
        try:
            async with asyncio.TaskGroup() as group:
                for key, extra in extras:
                    group.create_task(one(key, extra))
        except BaseExceptionGroup as failed:
            raise first_failure(failed) from None

    def _stamped(self, body: dict[str, Any] | None) -> dict[str, Any]:
        stamp = self._settings.stamp
        return {**(body or {}), **stamp} if stamp else dict(body or {})

    def _landed(self, change: Change, new_id: Any, index: IndexChunk) -> None:
        before = index[change.key] if change.key in index else KeyState()
        after = change.after
        if after is None:
            index.set(change.key, KeyState([], before.top, before.ended, before.closed))
        else:
            live = after if after.id is not None or new_id is None else replace(after, id=new_id)
            index.set(change.key, KeyState([live], max(before.top, live.number), before.ended, before.closed))
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
    index.set(key, KeyState([*state.live, version], max(state.top, version.number), state.ended, state.closed))


def _upsertable(change: Change) -> bool:
    return len(change.writes) == 1 and change.writes[0].op in ("create", "update")
