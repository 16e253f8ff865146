"""Slowly changing dimensions: natural keys, change hashes and the plan for each staged record."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from prefect_restful_etl.tasks.engine.paths import get_path

Action = Literal["insert", "update", "unchanged"]


def natural_key(record: dict[str, Any], fields: Iterable[str]) -> str:
    """The record's natural key as text: `42`, or `42|EUR` for a key of several fields."""
    return "|".join("" if (v := get_path(record, f)) is None else str(v) for f in fields)


def row_hash(record: dict[str, Any], fields: Iterable[str]) -> str:
    """A digest of the compared fields, so a change in any of them (and only them) is seen."""
    values = [get_path(record, f) for f in fields]
    return hashlib.blake2b(orjson.dumps(values, default=str), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Current:
    """What the destination holds for one natural key: its id and the hash of its compared fields."""

    id: Any
    hash: str


@dataclass(frozen=True)
class Change:
    action: Action
    key: str
    record: dict[str, Any]
    destination_id: Any = None


def plan_type1(record: dict[str, Any], key: str, new_hash: str, current: Current | None) -> Change:
    """SCD type 1: insert what is new, overwrite what changed, leave the rest."""
    if current is None:
        return Change("insert", key, record)
    if current.hash != new_hash:
        return Change("update", key, record, current.id)
    return Change("unchanged", key, record, current.id)
