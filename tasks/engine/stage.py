"""The stage: where records rest between jobs, keyed by tenant, batch and job; memory by default.

Every backend keeps the same four-method contract, so a job neither knows nor cares where its input rests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from prefect_restful_etl.tasks.engine.exceptions import StageError


@dataclass(frozen=True)
class StageKey:
    """`restful-etl:<tenant>:<batch>:<job>`: no tenant can name another tenant's records."""

    tenant_id: str
    batch_id: str
    job: str
    prefix: str = "restful-etl"

    def __str__(self) -> str:
        return f"{self.prefix}:{self.tenant_id}:{self.batch_id}:{self.job}"

    @property
    def batch_prefix(self) -> str:
        return f"{self.prefix}:{self.tenant_id}:{self.batch_id}:"


@runtime_checkable
class Stage(Protocol):
    async def append(self, key: StageKey, records: list[dict[str, Any]]) -> None:
        """Add one chunk of records after those already staged under `key`."""

    def read(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the staged records in chunks, in the order they were appended."""

    async def count(self, key: StageKey) -> int:
        """How many records rest under `key`."""

    async def clear(self, key: StageKey) -> None:
        """Forget `key`: a job clears its output before writing it, so a retried job stages nothing twice."""

    async def drop_batch(self, tenant_id: str, batch_id: str) -> int:
        """Forget every key of one batch; returns how many keys were removed."""


class MemoryStage:
    """Records in this process's memory: the default, for one-process runs (a Prefect flow run)."""

    _store: ClassVar[dict[str, list[dict[str, Any]]]] = {}

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
        doomed = [k for k in self._store if k.startswith(prefix)]
        for k in doomed:
            del self._store[k]
        return len(doomed)
