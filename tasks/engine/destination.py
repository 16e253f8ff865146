"""What the destination holds, by natural key: pulled whole through the extract machinery, or looked up key by key.

Only what the diff needs is kept per key (ids, hashes of the compared fields, type 2 version info), never
the rows themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.client import RestClient
from prefect_restful_etl.tasks.engine.jobbase import Endpoint
from prefect_restful_etl.tasks.engine.paths import get_path
from prefect_restful_etl.tasks.engine.scd import History, KeyState, SoftDelete, Version, natural_key, row_hash

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

    model_config = ConfigDict(extra="forbid")

    mode: Literal["pull", "by_key", "auto"] = "pull"
    params: dict[str, str] = Field(default_factory=dict, description="Natural key field -> query parameter; "
                                   "default: each key field's own name.")
    by_key_max: int = Field(default=100, ge=0, description="auto: the largest stage looked up key by key.")

    def choose(self, staged: int, *, must_pull: bool) -> LookupMode:
        if must_pull or self.mode == "pull":
            return "pull"
        if self.mode == "by_key":
            return "by_key"
        return "by_key" if staged <= self.by_key_max else "pull"


class DestinationIndex(Mapping[str, KeyState]):
    """Natural key -> KeyState, built from destination rows; a key looked up and not found maps to an empty state."""

    def __init__(
        self,
        *,
        key_fields: list[str],
        id_field: str,
        compare: list[str],
        history: History | None = None,
        soft_delete: SoftDelete | None = None,
    ) -> None:
        self.key_fields, self.id_field, self.compare = key_fields, id_field, compare
        self.history, self.soft_delete = history, soft_delete
        self._states: dict[str, KeyState] = {}
        self.rows = 0

    def __getitem__(self, key: str) -> KeyState:
        return self._states[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def set(self, key: str, state: KeyState) -> None:
        self._states[key] = state

    def add(self, row: dict[str, Any]) -> None:
        """Index one destination row."""
        key = natural_key(row, self.key_fields)
        state = self._states.setdefault(key, KeyState())
        history, soft = self.history, self.soft_delete
        version = Version(
            id=row.get(self.id_field),
            hash=row_hash(row, self.compare),
            number=history.number(row) if history else 0,
            valid_from=_text(row.get(history.valid_from)) if history else None,
            deleted=soft is not None and row.get(soft.field) == soft.value,
        )
        state.add(version, live=history.is_current(row) if history else True)
        self.rows += 1

    def live_keys(self) -> int:
        return sum(1 for state in self._states.values() if state.live)

    async def pull(self, client: RestClient, endpoint: Endpoint) -> None:
        """Every row of the collection, page by page: any paginator the API or endpoint states."""
        pages = client.paginate(endpoint.path, params=endpoint.params, records_path=endpoint.records_path,
                                paginator=endpoint.paginator)
        async for page in pages:
            for row in page:
                self.add(row)

    async def look_up(
        self, client: RestClient, endpoint: Endpoint, lookup: Lookup, staged: Mapping[str, dict[str, Any]],
        concurrency: int,
    ) -> None:
        """The rows of each staged key not yet indexed, `concurrency` GETs at a time."""
        limit = asyncio.Semaphore(concurrency)
        wanted = {key: record for key, record in staged.items() if key not in self._states}

        async def one(key: str, record: dict[str, Any]) -> None:
            params = {**endpoint.params, **self._filter(record, lookup)}
            async with limit:
                pages = client.paginate(endpoint.path, params=params, records_path=endpoint.records_path,
                                        paginator=endpoint.paginator)
                self._states.setdefault(key, KeyState())
                async for page in pages:
                    for row in page:
                        # An API that ignores the filter answers with other keys too: keep only this one.
                        if natural_key(row, self.key_fields) == key:
                            self.add(row)

        try:
            async with asyncio.TaskGroup() as group:
                for key, record in wanted.items():
                    group.create_task(one(key, record))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None

    def _filter(self, record: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
        return {lookup.params.get(f, f): get_path(record, f) for f in self.key_fields}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
