"""What one read of a positional stream (pages by number or offset) saw: the natural keys it met, a key read twice
in it, and the shape of the read (its keys in order), so that two reads can be told apart or found alike.

A key read twice is a record that moved between pages while they were read (and so maybe another that was
skipped), or two records the source itself holds under one key. Only the second stays when the stream is read
again: two reads whose keys came in the same order, each key read twice as often and its later copies alike,
saw a source that did not move in between (`ReadShape`).

On the memory stage the keys are a Python set of the key values; on any other stage they rest on the stage
(`<job>.read`, a Redis hash), one question and one write a page, so memory does not grow with the stream.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from prefect_restful_etl.tasks.engine.exceptions import StageError
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.load.keysets import StagedKeySet
from prefect_restful_etl.tasks.engine.load.scd import natural_key
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey
from prefect_restful_etl.tasks.engine.stage.encoding import dump
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage


@dataclass(frozen=True)
class ReadShape:
    """One whole read: a fingerprint of its keys in order (and of each later copy of a repeated key), and the
    keys it read more than once. Equal shapes: the same records at the same places, the repeats alike."""

    fingerprint: int
    repeated: tuple[str, ...]
    first_page: int = field(default=0, compare=False)  # where the first repeat came, for the message


class ReadKeys:
    """`await reads.read(page)` for each page of one read, then `reads.shape()`; `drop()` before the next read."""

    def __init__(self, stage: Stage, key: StageKey, fields: list[str]) -> None:
        self.fields = fields
        self._plain = fields[0] if len(fields) == 1 and "." not in fields[0] else None
        self._memory: set[Any] | None = set() if isinstance(stage, MemoryStage) else None
        self._staged = None if self._memory is not None else StagedKeySet(stage, key)
        self._reset()

    def _reset(self) -> None:
        self._fingerprint, self._pages, self._first_page = 0, 0, 0
        self._repeated: dict[str, None] = {}  # insertion-ordered: the first repeat first

    async def read(self, page: list[Any]) -> None:
        """Note the page's keys; a key read before in this read (or twice on the page) is a repeat."""
        self._pages += 1
        keys = self._values(page) if self._memory is not None else self._texts(page)
        self._fingerprint = hash((self._fingerprint, tuple(keys)))
        present = {k for k in keys if k is not None}
        repeated = len(present) != sum(k is not None for k in keys)
        if self._memory is not None:
            if repeated or not self._memory.isdisjoint(present):
                self._note(page, keys, self._memory.__contains__)
            self._memory |= present
            return
        assert self._staged is not None
        members = [str(k) for k in present]
        before = {m for m, seen in zip(members, await self._staged.contains(members), strict=True) if seen}
        if repeated or before:
            self._note(page, keys, before.__contains__)
        await self._staged.add(members)

    def shape(self) -> ReadShape:
        return ReadShape(self._fingerprint, tuple(self._repeated), self._first_page)

    async def drop(self) -> None:
        self._reset()
        if self._memory is not None:
            self._memory.clear()
        elif self._staged is not None:
            await self._staged.drop()

    def _note(self, page: list[Any], keys: list[Any], before: Callable[[Any], bool]) -> None:
        """Each record of the page whose key came earlier: its key, and its content in the fingerprint, so a
        repeat counts as the source's own only when its copies read alike twice."""
        on_page: set[Hashable] = set()
        for record, k in zip(page, keys, strict=True):
            if k is None:
                continue
            if k in on_page or before(k):
                self._repeated.setdefault(str(k), None)
                self._fingerprint = hash((self._fingerprint, k, _content(record)))
                self._first_page = self._first_page or self._pages
            on_page.add(k)

    def _values(self, page: list[Any]) -> list[Any]:
        """Key values as they came (hashable ones): a set of them costs no text per record."""
        if self._plain is None:
            return self._texts(page)
        name = self._plain
        values = [r.get(name) if isinstance(r, dict) else None for r in page]
        return values if all(isinstance(v, (int, str, type(None))) for v in values) else self._texts(page)

    def _texts(self, page: list[Any]) -> list[str | None]:
        return [_text(r, self.fields) for r in page]


def _content(record: Any) -> bytes | None:
    """The record as the stage writes it; one the stage cannot hold is an error event anyway, told apart by key."""
    try:
        return dump(record, "a read")
    except (StageError, RecursionError):
        return None


def _text(record: Any, fields: list[str]) -> str | None:
    """The key as text, None when a part is missing (a keyless record cannot be told from another)."""
    if not isinstance(record, dict) or any(get_path(record, name) is None for name in fields):
        return None
    return natural_key(record, fields)
