"""Declarative transform steps, applied record by record as records stream.

A step is chosen by name (`{"op": "rename", "fields": {"email_address": "email"}}`); a value that cannot
be converted raises `RecordError`, which sends that record (not the batch) to the error table.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.exceptions import RecordError
from prefect_restful_etl.tasks.engine.paths import get_path, pop_path, set_path

Record = dict[str, Any]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def apply(self, record: Record) -> Record:
        raise NotImplementedError


class Rename(_Step):
    """`{"op": "rename", "fields": {"first_name": "given_name", "meta.updated_at": "updated_at"}}`"""

    op: Literal["rename"] = "rename"
    fields: dict[str, str]

    def apply(self, record: Record) -> Record:
        for old, new in self.fields.items():
            value = pop_path(record, old, _ABSENT)
            if value is not _ABSENT:
                set_path(record, new, value)
        return record


class Select(_Step):
    """Keep only these fields, in this order: `{"op": "select", "fields": ["id", "email"]}`."""

    op: Literal["select"] = "select"
    fields: list[str]

    def apply(self, record: Record) -> Record:
        return {name: record[name] for name in self.fields if name in record}


class Default(_Step):
    """Fill missing or null fields: `{"op": "default", "values": {"status": "active"}}`."""

    op: Literal["default"] = "default"
    values: dict[str, Any]

    def apply(self, record: Record) -> Record:
        for name, value in self.values.items():
            if record.get(name) is None:
                record[name] = value
        return record


CastType = Literal["str", "int", "float", "decimal", "bool", "date", "datetime"]


class Cast(_Step):
    """Convert values: `{"op": "cast", "fields": {"lifetime_value": "decimal", "signed_up": "date"}}`.

    Nulls stay null; decimals become strings so they survive JSON without losing digits.
    """

    op: Literal["cast"] = "cast"
    fields: dict[str, CastType]

    def apply(self, record: Record) -> Record:
        for name, to in self.fields.items():
            value = record.get(name)
            if value is None:
                continue
            try:
                record[name] = _CASTS[to](value)
            except (TypeError, ValueError, InvalidOperation, ArithmeticError) as ex:
                raise RecordError(f"cannot cast {name} to {to}: {ex}", column=name, value=value) from ex
        return record


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "y", "t"}:
        return True
    if text in {"false", "0", "no", "n", "f"}:
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _to_int(value: Any) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


_CASTS: dict[str, Any] = {
    "str": str,
    "int": _to_int,
    "float": float,
    "decimal": lambda v: str(Decimal(str(v))),
    "bool": _to_bool,
    "date": lambda v: date.fromisoformat(str(v)[:10]).isoformat(),
    "datetime": lambda v: datetime.fromisoformat(str(v).replace("Z", "+00:00")).isoformat(),
}

_ABSENT = object()

TransformStep = Annotated[Rename | Select | Default | Cast, Field(discriminator="op")]


def apply_steps(steps: list[TransformStep], record: Record) -> list[Record]:
    """Run every step over one record; returns the records it becomes (none if filtered out)."""
    current = dict(record)
    for step in steps:
        current = step.apply(current)
    return [current]
