"""The memory stage, the default: records and indexes in this process's memory, for one-process runs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, StageError
from prefect_restful_etl.tasks.engine.stage.base import StageKey


class MemoryStage:
    """Records in this process's memory: the default, for one-process runs (a Prefect flow run)."""

    prefix: ClassVar[str] = "restful-etl"  # StageKey's default: every key of this process's memory stage has it
    _store: ClassVar[dict[str, list[dict[str, Any]]]] = {}
    _indexes: ClassVar[dict[str, dict[str, str]]] = {}

    async def append(self, key: StageKey, records: list[dict[str, Any]]) -> None:
        self._store.setdefault(str(key), []).extend(records)

    async def read(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[list[dict[str, Any]]]:
        if str(key) not in self._store:
            raise StageError(f"nothing is staged under {key}")
        records = self._store[str(key)]
        for start in range(0, len(records), chunk_size):
            yield records[start : start + chunk_size]

    async def count(self, key: StageKey) -> int:
        return len(self._store.get(str(key), ()))

    async def clear(self, key: StageKey) -> None:
        self._store.pop(str(key), None)
        self._store[str(key)] = []

    async def drop_batch(self, tenant_id: str, batch_id: str) -> int:
        prefix = StageKey(tenant_id, batch_id, "").batch_prefix
        dropped = 0
        for store in (self._store, self._indexes):
            doomed = [k for k in store if k.startswith(prefix)]
            for k in doomed:
                del store[k]
            dropped += len(doomed)
        return dropped

    async def index_put(self, key: StageKey, mapping: Mapping[str, str]) -> None:
        if mapping:
            self._indexes.setdefault(str(key), {}).update(mapping)

    async def index_get(self, key: StageKey, fields: Sequence[str]) -> list[str | None]:
        index = self._indexes.get(str(key), {})
        return [index.get(field) for field in fields]

    async def index_scan(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[dict[str, str]]:
        if chunk_size < 1:
            raise ConfigError("chunk_size", "must be at least 1")
        index = self._indexes.get(str(key), {})
        fields = list(index)  # the caller may set fields between chunks, which a dict's iterator would refuse
        for start in range(0, len(fields), chunk_size):
            yield {field: index[field] for field in fields[start : start + chunk_size]}

    async def index_drop(self, key: StageKey) -> None:
        self._indexes.pop(str(key), None)
