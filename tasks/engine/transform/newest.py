"""The `unique` screen's newest-wins bookkeeping: of the records sharing a natural key in one batch, the newest by
`newest_by` (the cursor), or the last read when there is none, is kept; the others are duplicates. A screen that
leaves `newest_by` out gets the incremental cursor of the extract its records come from, where the transform's
steps leave it in the record (`cursor_after`).

A record updated while the source was paged comes twice, its new version last: keeping the first would load
the old value. The winners rest in an index (on the stage, so a Redis-staged job holds none in its process):

```
restful-etl:acme:<batch>:shape-customers.newest-3   member -> [its newest_by value, its place in the output]
  '["17"]' -> '["2026-03-02T10:00:00Z", 1041]'
```
An earlier winner beaten by a later record is already staged: the job rewrites its output once at the end,
keeping only each key's winner (`keep`), and only when a winner was beaten (`superseded`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey
from prefect_restful_etl.tasks.engine.transform.steps import (
    Cast,
    Constant,
    Default,
    Drop,
    Filter,
    Flatten,
    Rename,
    Select,
    Split,
    TransformStep,
)


class KeyIndex(Protocol):
    async def get(self, members: Sequence[str]) -> list[str | None]:
        """The values of the members, None where absent, in one round trip."""

    async def put(self, mapping: Mapping[str, str]) -> None:
        """Set the members' values in one round trip."""

    async def drop(self) -> None:
        """Forget every member."""


class MemoryKeyIndex:
    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    async def get(self, members: Sequence[str]) -> list[str | None]:
        return [self._values.get(member) for member in members]

    async def put(self, mapping: Mapping[str, str]) -> None:
        self._values.update(mapping)

    async def drop(self) -> None:
        self._values.clear()


class StagedKeyIndex:
    """A `KeyIndex` on the stage: `StagedKeyIndex(stage, key.part("newest-3"))`, gone with the batch's keys."""

    def __init__(self, stage: Stage, key: StageKey) -> None:
        self.stage, self.key = stage, key

    async def get(self, members: Sequence[str]) -> list[str | None]:
        return await self.stage.index_get(self.key, members)

    async def put(self, mapping: Mapping[str, str]) -> None:
        await self.stage.index_put(self.key, mapping)

    async def drop(self) -> None:
        await self.stage.index_drop(self.key)


Winner = tuple[Any, int]  # the newest_by value (as the record held it) and the place in the output


class Newest:
    """One unique screen's winners, asked and written a chunk at a time (`prefetch`, `offer`, `flush`)."""

    def __init__(self, index: KeyIndex) -> None:
        self.index = index
        self.superseded = 0  # winners beaten later, already staged: the output needs rewriting
        self._known: dict[str, Winner | None] = {}  # fetched from the index, or set since the last flush
        self._changed: set[str] = set()

    async def prefetch(self, members: Sequence[str]) -> None:
        wanted = [m for m in dict.fromkeys(members) if m not in self._known]
        if wanted:
            for member, value in zip(wanted, await self.index.get(wanted), strict=True):
                self._known[member] = None if value is None else _winner(value)

    async def offer(self, member: str, value: Any, position: int) -> tuple[bool, Winner | None]:
        """Whether the record at `position` (holding `value`) is now its key's newest, and the other version it
        was measured against (None for the key's first record)."""
        if member not in self._known:
            await self.prefetch([member])
        other = self._known[member]
        if other is not None and not _newer((value, position), other):
            return False, other
        if other is not None:
            self.superseded += 1
        self._known[member] = (value, position)
        self._changed.add(member)
        return True, other

    async def flush(self) -> None:
        if self._changed:
            winners = {m: orjson.dumps(self._known[m], default=str).decode() for m in self._changed}
            await self.index.put(winners)
        self._known, self._changed = {}, set()

    async def positions(self, members: Sequence[str]) -> dict[str, int]:
        """Each member's winning place in the output (after the last `flush`)."""
        wanted = list(dict.fromkeys(members))
        values = await self.index.get(wanted)
        return {m: _winner(v)[1] for m, v in zip(wanted, values, strict=True) if v is not None}

    async def drop(self) -> None:
        self._known, self._changed = {}, set()
        await self.index.drop()


def _winner(text: str) -> Winner:
    value, position = orjson.loads(text)
    return value, int(position)


def _newer(candidate: Winner, holder: Winner) -> bool:
    """Whether `candidate` beats `holder`: the newer value (by value: instants, numbers), else the later read."""
    mine, theirs = _order(candidate[0]), _order(holder[0])
    return bool(mine > theirs) if mine != theirs else candidate[1] > holder[1]


def _order(value: Any) -> tuple[Any, ...]:
    """A value to compare by: nothing first, then numbers and instants by value, other text as text."""
    if value is None:
        return (0,)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return (2, value)
        return (1, (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
    return (2, str(value))


def cursor_after(path: str, steps: Sequence[TransformStep]) -> str | None:
    """Where a record holds the field at `path` (the source's cursor) once `steps` ran, or None when a step
    removes it or may write over it: only renames move it, a selection keeps it when it names it, a cast or a
    filter leaves it as it was; any other step that names it (or a record's change of shape) loses it."""
    found: str | None = path
    for step in steps:
        found = None if found is None else _carried(found, step)
    return found


def _carried(path: str, step: TransformStep) -> str | None:
    """Where the field at `path` is after `step` (see `cursor_after`)."""
    if isinstance(step, Rename):
        for old, new in step.fields.items():
            if _within(path, old):
                path = new + path[len(old) :]
            elif _within(path, new) or _within(new, path):
                return None  # another field takes its place
        return path
    if isinstance(step, Select):
        return path if any(_within(path, kept) for kept in step.fields) else None
    if isinstance(step, Drop):
        return None if any(_within(path, gone) for gone in step.fields) else path
    if isinstance(step, (Cast, Filter)):
        return path
    if isinstance(step, (Flatten, Split)):
        return None  # the records change shape: which field holds the cursor is not followed
    written = [name for name in (getattr(step, "field", None), getattr(step, "target", None)) if name]
    fields = getattr(step, "fields", None)
    written += list(fields) if isinstance(fields, (dict, list)) else []
    written += list(step.values) if isinstance(step, (Default, Constant)) else []
    return None if any(_within(path, name) or _within(name, path) for name in written) else path


def _within(path: str, field: str) -> bool:
    """Whether `path` is `field` or lies inside it."""
    return path == field or path.startswith(field + ".")
