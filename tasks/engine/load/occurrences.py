"""Where each natural key last occurs among a job's staged records, so that the last record of a key wins across
the whole stage, as it does within one chunk; the positions rest on the stage, so a Redis-staged job holds none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect_restful_etl.tasks.engine.exceptions import StageError
from prefect_restful_etl.tasks.engine.load.scd import natural_key
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey


class LastOccurrences:
    """Natural key -> the position (0, 1, 2 ... in stage order) of the key's last staged record.

    ```
    restful-etl:acme:<batch>:load-accounting-customers.last   (one index of the stage; Redis: a HASH)
      "7" -> "1041"
    ```
    `record` reads the staged records once before any is written, a chunk at a time; then `latest` keeps, of
    each chunk, only the records no later one replaces. Its keys are also every key the stage holds (`contains`).
    """

    def __init__(self, stage: Stage, key: StageKey, key_fields: list[str]) -> None:
        self.stage, self.key, self.key_fields = stage, key, key_fields

    async def record(self, source: StageKey) -> set[str]:
        """One pass over the records staged under `source`: a later chunk's position of a key overwrites an
        earlier one's, so the index ends holding each key's last. Returns every top-level field any record
        has (as wide as the records' schema, not as long as the stage)."""
        position, fields = 0, set[str]()
        async for chunk in self.stage.read(source):
            await self.stage.index_put(self.key, {self._key(r): str(position + i) for i, r in enumerate(chunk)})
            position += len(chunk)
            for record in chunk:
                fields.update(record)
        return fields

    async def latest(self, chunk: list[dict[str, Any]], start: int) -> dict[str, dict[str, Any]]:
        """The chunk's records that are their keys' last, by natural key; `start` is the chunk's first position
        (the same reading order as `record`'s)."""
        keyed = [(self._key(r), r) for r in chunk]
        wanted = list(dict.fromkeys(key for key, _ in keyed))
        last = dict(zip(wanted, await self.stage.index_get(self.key, wanted), strict=True))
        if None in last.values():  # silently skipping every record of the key would lose it
            raise StageError(f"the last positions of the staged keys are gone from {self.key} (expired?)")
        return {key: record for i, (key, record) in enumerate(keyed) if last[key] == str(start + i)}

    async def contains(self, keys: Sequence[str]) -> list[bool]:
        """For each key, whether the stage holds a record of it."""
        return [value is not None for value in await self.stage.index_get(self.key, keys)]

    async def drop(self) -> None:
        await self.stage.index_drop(self.key)

    def _key(self, record: dict[str, Any]) -> str:
        return natural_key(record, self.key_fields)
