"""Sets of keys a job remembers for a whole batch (natural keys seen, keys claimed), asked chunk by chunk.

In this process's memory, or on the stage, where a Redis stage keeps them out of the process: a batch of
200,000 records then holds no set of 200,000 keys. Members are strings; each call is one round trip.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol, runtime_checkable

from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey


@runtime_checkable
class KeySet(Protocol):
    async def contains(self, members: Sequence[str]) -> list[bool]:
        """For each member, whether it is in the set."""

    async def add(self, members: Collection[str]) -> None:
        """Put the members in the set."""

    async def drop(self) -> None:
        """Forget every member."""


class MemoryKeySet:
    """A Python set: for a screener of its own (tests, one-off use) and wherever nothing is staged."""

    def __init__(self) -> None:
        self._members: set[str] = set()

    async def contains(self, members: Sequence[str]) -> list[bool]:
        return [member in self._members for member in members]

    async def add(self, members: Collection[str]) -> None:
        self._members.update(members)

    async def drop(self) -> None:
        self._members.clear()


class StagedKeySet:
    """A set resting on the stage as an index whose values are empty: `StagedKeySet(stage, key.part("seen"))`.

    Being one of the batch's keys, it expires with the stage's TTL and goes with `drop_batch`.
    """

    def __init__(self, stage: Stage, key: StageKey) -> None:
        self.stage, self.key = stage, key

    async def contains(self, members: Sequence[str]) -> list[bool]:
        return [value is not None for value in await self.stage.index_get(self.key, members)]

    async def add(self, members: Collection[str]) -> None:
        await self.stage.index_put(self.key, dict.fromkeys(members, ""))

    async def drop(self) -> None:
        await self.stage.index_drop(self.key)


class Claims:
    """Keys claimed by kept records (a unique screen's): those of earlier chunks rest in a key set, this
    chunk's here, since a key is claimed only once its record's fate is known.

    `prefetch` asks the key set about a chunk's keys in one round trip and `flush` hands it the chunk's claims
    in one, so a key set on the stage costs two round trips a chunk, never one a record.
    """

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys
        self._before: dict[str, bool] = {}  # asked of the key set since the last flush: claimed earlier?
        self._new: set[str] = set()  # claimed since the last flush

    async def prefetch(self, members: Iterable[str]) -> None:
        wanted = [m for m in dict.fromkeys(members) if m not in self._before and m not in self._new]
        if wanted:
            self._before.update(zip(wanted, await self.keys.contains(wanted), strict=True))

    async def taken(self, member: str) -> bool:
        if member in self._new:
            return True
        if member not in self._before:  # not prefetched: ask for this one
            await self.prefetch([member])
        return self._before[member]

    def claim(self, member: str) -> None:
        self._new.add(member)

    async def flush(self) -> None:
        if self._new:
            await self.keys.add(self._new)
        self._before, self._new = {}, set()

    async def drop(self) -> None:
        self._before, self._new = {}, set()
        await self.keys.drop()
