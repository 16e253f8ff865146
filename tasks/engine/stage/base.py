"""The stage's contract: where records rest between jobs, keyed by tenant, batch and job.

Every backend keeps the same contract, so a job neither knows nor cares where its input rests: records
(append, read, count, clear, drop_batch) and a job's keyed index, a map of strings such as natural key ->
what the destination holds (index_put, index_get, index_scan, index_drop), which on Redis lets a job's
per-key bookkeeping rest outside its process too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prefect_restful_etl.tasks.engine.exceptions import ConfigError

# `:` separates the parts of a key; the rest are glob characters of Redis' SCAN MATCH (and `\\` escapes them).
# A part holding one could name, or let drop_batch match, another tenant's or batch's keys.
_UNSAFE_IN_KEY = frozenset(":*?[]\\")

DEFAULT_TTL = 7 * 24 * 3600
"""Seconds a stage server keeps what a batch staged after its last write: long enough to restart a failed
batch after a weekend."""


@dataclass(frozen=True)
class StageKey:
    """`restful-etl:<tenant>:<batch>:<job>`: no tenant can name another tenant's records.

    No part may hold `:` or a glob character (`* ? [ ] \\`), so a part can neither reach into the next
    part nor widen a Redis SCAN MATCH; such a key raises `ConfigError` when it is built.
    """

    tenant_id: str
    batch_id: str
    job: str
    prefix: str = "restful-etl"

    def __post_init__(self) -> None:
        # The job may be empty: StageKey(tenant, batch, "") names the batch as a whole (see batch_prefix).
        for field, value, required in (
            ("prefix", self.prefix, True),
            ("tenant_id", self.tenant_id, True),
            ("batch_id", self.batch_id, True),
            ("job", self.job, False),
        ):
            text = str(value)  # a batch id may arrive as a flow run's UUID
            if required and not text:
                raise ConfigError(field, "must not be empty")
            unsafe = sorted(set(text) & _UNSAFE_IN_KEY)
            if unsafe:
                raise ConfigError(field, f"must not contain {' '.join(unsafe)} (it would change whose keys match)")

    def __str__(self) -> str:
        return f"{self.prefix}:{self.tenant_id}:{self.batch_id}:{self.job}"

    @property
    def batch_prefix(self) -> str:
        return f"{self.prefix}:{self.tenant_id}:{self.batch_id}:"

    def part(self, name: str) -> StageKey:
        """`<job>.<name>`: a key beside the job's own for its bookkeeping (`load-customers.index`).

        Job slugs hold no `.`, so no job's records can rest under it; it is one of the batch's keys, so
        `drop_batch` and the stage's TTL cover it, and it is checked like any other key.
        """
        return StageKey(self.tenant_id, self.batch_id, f"{self.job}.{name}", self.prefix)


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
        """Forget every key of one batch, records and indexes; returns how many keys were removed."""

    async def index_put(self, key: StageKey, mapping: Mapping[str, str]) -> None:
        """Set fields of the index under `key` (a map of strings), one chunk in one round trip."""

    async def index_get(self, key: StageKey, fields: Sequence[str]) -> list[str | None]:
        """The values of `fields` in the index under `key`, None where absent, in one round trip."""

    def index_scan(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[dict[str, str]]:
        """Yield the index's fields and values, about `chunk_size` at a time; nothing for an absent index.

        Fields set meanwhile may or may not come; a field may come twice (Redis' HSCAN promises every field
        at least once), so a caller must take a repeat as harmless.
        """

    async def index_drop(self, key: StageKey) -> None:
        """Forget the index under `key`."""
