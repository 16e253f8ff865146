"""The natural keys one read of a positional stream (pages by number or offset) has seen: a key read twice in
one read is a record that moved between pages while they were read, and so maybe another that was skipped.

On the memory stage the keys are a Python set of the key values; on any other stage they rest on the stage
(`<job>.read`, a Redis hash), one question and one write a page, so memory does not grow with the stream.
"""

from __future__ import annotations

from typing import Any

from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.load.keysets import StagedKeySet
from prefect_restful_etl.tasks.engine.load.scd import natural_key
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage


class ReadKeys:
    """`await reads.repeats(page)`: whether a record of `page` came before in this read (or twice on it)."""

    def __init__(self, stage: Stage, key: StageKey, fields: list[str]) -> None:
        self.fields = fields
        self._plain = fields[0] if len(fields) == 1 and "." not in fields[0] else None
        self._memory: set[Any] | None = set() if isinstance(stage, MemoryStage) else None
        self._staged = None if self._memory is not None else StagedKeySet(stage, key)

    async def repeats(self, page: list[Any]) -> bool:
        keys = self._values(page) if self._memory is not None else self._texts(page)
        present = {k for k in keys if k is not None}
        repeated = len(present) != sum(k is not None for k in keys)
        if self._memory is not None:
            repeated = repeated or not self._memory.isdisjoint(present)
            self._memory |= present
            return repeated
        assert self._staged is not None
        members = [str(k) for k in present]
        repeated = repeated or any(await self._staged.contains(members))
        await self._staged.add(members)
        return repeated

    async def drop(self) -> None:
        if self._memory is not None:
            self._memory.clear()
        elif self._staged is not None:
            await self._staged.drop()

    def _values(self, page: list[Any]) -> list[Any]:
        """Key values as they came (hashable ones): a set of them costs no text per record."""
        if self._plain is None:
            return self._texts(page)
        field = self._plain
        values = [r.get(field) if isinstance(r, dict) else None for r in page]
        return values if all(isinstance(v, (int, str, type(None))) for v in values) else self._texts(page)

    def _texts(self, page: list[Any]) -> list[str | None]:
        return [_text(r, self.fields) for r in page]


def _text(record: Any, fields: list[str]) -> str | None:
    """The key as text, None when a part is missing (a keyless record cannot be told from another)."""
    if not isinstance(record, dict) or any(get_path(record, field) is None for field in fields):
        return None
    return natural_key(record, fields)
