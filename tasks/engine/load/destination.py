"""What the destination holds, by natural key: pulled whole through the extract machinery, or looked up key by key.

Only what the diff needs is kept per key (ids, hashes of the compared fields, type 2 version info), never
the rows themselves, and it is kept on the stage: the load holds one chunk's keys at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import aclosing
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.exceptions import DestinationDataError, first_failure
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.jobbase import Endpoint
from prefect_restful_etl.tasks.engine.load.canonical import CompareAs, RowHasher, same_instant
from prefect_restful_etl.tasks.engine.load.history import History
from prefect_restful_etl.tasks.engine.load.scd import KeyState, SoftDelete, Version, natural_key
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey

LookupMode = Literal["pull", "by_key"]


class Lookup(BaseModel):
    """How the load learns what the destination holds.

    - `"pull"` (default): read the whole collection once, with the API's paginator, auth and rate limit.
    - `"by_key"`: one filtered GET per staged key, `GET /customers?external_id=7` -> the rows of key 7
      (every version, for type 2). `params` maps each natural key field to its query parameter.
    - `"auto"`: by_key when the stage holds at most `by_key_max` records, else pull. A pull costs one request
      per destination page, a lookup one per staged key: set `by_key_max` near the destination's page count.

    A full refresh that acts on missing keys always pulls: only the whole destination shows what is missing.
    ```json
    {"mode": "auto", "params": {"external_id": "external_id"}, "by_key_max": 200}
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [{"mode": "auto", "params": {"external_id": "external_id_eq"}, "by_key_max": 200}]
        },
    )

    mode: Literal["pull", "by_key", "auto"] = Field(
        default="pull", description="pull the whole collection, look keys up one by one, or choose by the stage's size."
    )
    params: dict[str, str] = Field(
        default_factory=dict, description="Natural key field -> query parameter; default: each key field's own name."
    )
    by_key_max: int = Field(default=100, ge=0, description="auto: the largest stage looked up key by key.")

    def choose(self, staged: int, *, must_pull: bool) -> LookupMode:
        if must_pull or self.mode == "pull":
            return "pull"
        if self.mode == "by_key":
            return "by_key"
        return "by_key" if staged <= self.by_key_max else "pull"


class IndexChunk(Mapping[str, KeyState]):
    """The index's states of one chunk's keys: the writer reads and updates them, `DestinationIndex.save`
    writes back the ones that changed. A key the destination does not hold is absent."""

    def __init__(self, states: dict[str, KeyState]) -> None:
        self._states = states
        self.changed: set[str] = set()

    def __getitem__(self, key: str) -> KeyState:
        return self._states[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def set(self, key: str, state: KeyState) -> None:
        self._states[key] = state
        self.changed.add(key)


class DestinationIndex:
    """Natural key -> KeyState of the destination, kept on the stage and read and written a chunk at a time.

    ```
    restful-etl:acme:<batch>:load-accounting-customers.index   (one index of the stage; Redis: a HASH)
      "7" -> '[2,[["AC-9","3f1c...",2,"2026-03-01T00:00:00.000000Z",false]],"2026-03-01T00:00:00.000000Z"]'
             top; each live row's id, hash, version, valid_from, deleted; the latest valid_to of a closed version
    ```
    On a Redis stage the load's process then holds one chunk's states, not the whole destination's.
    """

    def __init__(
        self,
        stage: Stage,
        key: StageKey,
        *,
        key_fields: list[str],
        id_field: str,
        compare: list[str],
        history: History | None = None,
        soft_delete: SoftDelete | None = None,
        compare_as: Mapping[str, CompareAs] | None = None,
    ) -> None:
        self.stage, self.key = stage, key
        self.key_fields, self.id_field, self.compare = key_fields, id_field, compare
        self.compare_as = compare_as or {}
        self.hash = RowHasher(compare, self.compare_as)  # staged records and destination rows alike
        self.history, self.soft_delete = history, soft_delete
        self.pulled_keys = 0  # keys the destination held when pulled (KeyState.present), before any write

    async def fetch(self, keys: Iterable[str]) -> IndexChunk:
        """The states of `keys` (one `index_get`); keys the destination does not hold are absent."""
        wanted = list(keys)
        found = await self.stage.index_get(self.key, wanted)
        return IndexChunk({key: _decode(text) for key, text in zip(wanted, found, strict=True) if text is not None})

    async def save(self, chunk: IndexChunk) -> None:
        """Write back the states the chunk's writes changed (one `index_put`), for the keys' later chunks."""
        await self.stage.index_put(self.key, {key: _encode(chunk[key]) for key in chunk.changed})
        chunk.changed.clear()

    async def scan(self, chunk_size: int = 1000) -> AsyncIterator[IndexChunk]:
        """Every indexed key's state, about `chunk_size` keys at a time (a key may come twice, see `index_scan`)."""
        async for found in self.stage.index_scan(self.key, chunk_size):
            yield IndexChunk({key: _decode(text) for key, text in found.items()})

    async def drop(self) -> None:
        await self.stage.index_drop(self.key)
        await self.stage.index_drop(self.duplicated_key)

    def version(self, row: dict[str, Any]) -> tuple[Version, bool, str | None]:
        """One destination row as a version of its key, whether it is live and (a closed type 2 version) where it
        ends; a row whose current flag or version number cannot be read raises DestinationDataError naming the
        field and the row."""
        history, soft = self.history, self.soft_delete
        try:
            number, live = (history.number(row), history.is_current(row)) if history else (0, True)
        except DestinationDataError as ex:
            raise DestinationDataError(ex.field, f"destination row {row.get(self.id_field)!r}: {ex.detail}") from None
        version = Version(
            id=row.get(self.id_field),
            hash=self.hash(row),
            number=number,
            valid_from=_text(row.get(history.valid_from)) if history else None,
            deleted=soft is not None and row.get(soft.field) == soft.value,
        )
        return version, live, None if live or not history else _text(row.get(history.valid_to))

    async def add(self, rows: list[dict[str, Any]]) -> None:
        """Index one page of destination rows, with what earlier pages held of their keys (type 2 versions
        of one key may span pages): one `index_get` and one `index_put`."""
        keyed = [(natural_key(row, self.key_fields), row) for row in rows]
        chunk = await self.fetch({key for key, _ in keyed})
        before = sum(state.present for state in chunk.values())
        for key, row in keyed:
            state = chunk.get(key) or KeyState()
            state.add(*self.version(row))
            chunk.set(key, state)
        self.pulled_keys += sum(state.present for state in chunk.values()) - before  # a key's rows may span pages
        duplicated = {key: "" for key in chunk.changed if chunk[key].extras()}
        await self.save(chunk)
        if duplicated:  # remembered on the stage, as the index is: `duplicated` reads them back
            await self.stage.index_put(self.duplicated_key, duplicated)

    @property
    def duplicated_key(self) -> StageKey:
        return self.key.part("duplicated")

    async def duplicated(self, chunk_size: int = 1000) -> AsyncIterator[IndexChunk]:
        """The states of the pulled keys the destination holds more than one row of, a chunk at a time."""
        async for found in self.stage.index_scan(self.duplicated_key, chunk_size):
            yield await self.fetch(found)

    async def pull(self, client: RestClient, endpoint: Endpoint) -> None:
        """Every row of the collection, page by page: any paginator the API or endpoint states."""
        pages = client.paginate(
            endpoint.path, params=endpoint.params, records_path=endpoint.records_path, paginator=endpoint.paginator
        )
        async with aclosing(pages):  # a row that fails the index stops the pages still in flight
            async for page in pages:
                await self.add(page)

    async def look_up(
        self,
        client: RestClient,
        endpoint: Endpoint,
        lookup: Lookup,
        staged: Mapping[str, dict[str, Any]],
        chunk: IndexChunk,
        concurrency: int,
    ) -> None:
        """The rows of each staged key the index does not hold yet, `concurrency` GETs at a time, into `chunk`
        (an empty state for a key the destination lacks, so that no later chunk asks again)."""
        limit = asyncio.Semaphore(concurrency)
        wanted = {key: record for key, record in staged.items() if key not in chunk}
        states: dict[str, KeyState] = {}

        async def one(key: str, record: dict[str, Any]) -> None:
            async with limit:
                states[key] = await self.state_of(client, endpoint, lookup, key, record)

        try:
            async with asyncio.TaskGroup() as group:
                for key, record in wanted.items():
                    group.create_task(one(key, record))
        except BaseExceptionGroup as failed:
            raise first_failure(failed) from None
        for key in wanted:
            chunk.set(key, states[key])

    async def state_of(
        self, client: RestClient, endpoint: Endpoint, lookup: Lookup, key: str, record: dict[str, Any]
    ) -> KeyState:
        """What the destination holds of one key now: one filtered GET (`lookup.params`), paged if need be."""
        state = KeyState()
        params = {**endpoint.params, **self._filter(record, lookup)}
        pages = client.paginate(
            endpoint.path, params=params, records_path=endpoint.records_path, paginator=endpoint.paginator
        )
        async with aclosing(pages):
            async for page in pages:
                for row in page:
                    # An API that ignores the filter answers with other keys too: keep only this one.
                    if natural_key(row, self.key_fields) == key:
                        state.add(*self.version(row))
        return state

    async def find_created(
        self, client: RestClient, endpoint: Endpoint, lookup: Lookup, key: str, record: dict[str, Any], after: Version
    ) -> Version | None:
        """After a create of `key` whose answer was lost: the live row it made, or None if it did not land.

        Types 0 and 1 take any live row of the key (a second create would make a duplicate, whoever made the
        first); type 2 the version the create opened: its number, or (an API without numbers) its start.
        """
        state = await self.state_of(client, endpoint, lookup, key, record)
        for version in state.live:
            if self.history is None:
                return version
            if self.history.version is not None and version.number == after.number:
                return version
            if self.history.version is None and same_instant(version.valid_from, after.valid_from):
                return version
        return None

    def _filter(self, record: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
        return {lookup.params.get(f, f): get_path(record, f) for f in self.key_fields}


def _encode(state: KeyState) -> str:
    rows = [[v.id, v.hash, v.number, v.valid_from, v.deleted] for v in state.live]
    return orjson.dumps([state.top, rows, state.ended, state.closed]).decode()


def _decode(text: str) -> KeyState:
    top, rows, ended, closed = orjson.loads(text)
    return KeyState([Version(*row) for row in rows], top, ended, [(number, start) for number, start in closed])


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
