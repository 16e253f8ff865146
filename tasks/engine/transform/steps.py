"""Declarative transform steps, applied record by record as records stream.

A step is chosen by name (`{"op": "rename", "fields": {"email_address": "email"}}`); a value that cannot
be converted raises `RecordError`, which sends that record (not the batch) to the error table. Field
names may be dotted paths (`address.city`). `Pipeline` runs every step, lookups included (async);
`apply_steps` runs steps that need no I/O.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RecordError
from prefect_restful_etl.tasks.engine.http.paths import get_path, own_copy, pop_path, set_path
from prefect_restful_etl.tasks.engine.transform.expressions import compile_expression, parse_date, parse_datetime
from prefect_restful_etl.tasks.engine.transform.lookups import Lookup, LookupSource, resolve_source

Record = dict[str, Any]
_ABSENT = object()


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    def apply(self, record: Record) -> Record:
        raise NotImplementedError

    def run(self, records: list[Record]) -> list[Record]:
        """Steps that drop or add records (filter, split) override this; the rest map one to one."""
        return [self.apply(record) for record in records]


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
    """Keep only these fields, in this order: `{"op": "select", "fields": ["id", "email", "address.city"]}`."""

    op: Literal["select"] = "select"
    fields: list[str]

    def apply(self, record: Record) -> Record:
        kept: Record = {}
        for name in self.fields:
            value = get_path(record, name, _ABSENT)
            if value is not _ABSENT:
                set_path(kept, name, value)
        return kept


class Drop(_Step):
    """Remove fields: `{"op": "drop", "fields": ["internal_notes", "meta.etag"]}`."""

    op: Literal["drop"] = "drop"
    fields: list[str]

    def apply(self, record: Record) -> Record:
        for name in self.fields:
            pop_path(record, name)
        return record


class Default(_Step):
    """Fill missing or null fields: `{"op": "default", "values": {"status": "active"}}`."""

    op: Literal["default"] = "default"
    values: dict[str, Any]

    def apply(self, record: Record) -> Record:
        for name, value in self.values.items():
            if get_path(record, name) is None:
                set_path(record, name, own_copy(value))
        return record


class Constant(_Step):
    """Set fields whatever they hold: `{"op": "constant", "values": {"source_system": "crm"}}`."""

    op: Literal["constant"] = "constant"
    values: dict[str, Any]

    def apply(self, record: Record) -> Record:
        for name, value in self.values.items():
            set_path(record, name, own_copy(value))
        return record


CastType = Literal["str", "int", "float", "decimal", "bool", "date", "datetime"]


class Cast(_Step):
    """Convert values: `{"op": "cast", "fields": {"lifetime_value": "decimal", "signed_up": "date"}}`.

    Nulls stay null; decimals, dates and datetimes become ISO text so they survive JSON unchanged.
    `"formats": ["%d/%m/%Y"]` (strptime) are tried for date and datetime fields before ISO 8601;
    numbers are read as epoch seconds (UTC). Casts are strict: the whole value must convert
    (`2024-03-01garbage` is no date), numbers must be finite (no `nan`, no `1e999`), a boolean is no
    number, and an object or list is no text. A datetime without a zone is taken as UTC and written
    with `+00:00`, as epoch seconds are; one with an offset keeps it.
    """

    op: Literal["cast"] = "cast"
    fields: dict[str, CastType]
    formats: list[str] = Field(default_factory=list)

    def apply(self, record: Record) -> Record:
        for name, to in self.fields.items():
            value = get_path(record, name)
            if value is None:
                continue
            try:
                converted = parse_date(value, self.formats) if to == "date" else (
                    parse_datetime(value, self.formats) if to == "datetime" else _CASTS[to](value)
                )  # fmt: skip
            except (TypeError, ValueError, InvalidOperation, ArithmeticError) as ex:
                raise RecordError(f"cannot cast {name} to {to}: {ex}", column=name, value=value) from ex
            set_path(record, name, converted)
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


def _no_bool(value: Any) -> None:
    # bool is an int in Python: int(True) would quietly become 1
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")


def _to_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError(f"{type(value).__name__} is not a single value")  # str() would write Python's repr
    return str(value)


def _to_int(value: Any) -> int:
    _no_bool(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _to_float(value: Any) -> float:
    _no_bool(value)
    number = float(value)
    if not math.isfinite(number):  # "nan", "inf" and "1e999" (which overflows to inf) all read as floats
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _to_decimal(value: Any) -> str:
    _no_bool(value)
    number = Decimal(str(value).strip())
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return str(number)


_CASTS: dict[str, Callable[[Any], Any]] = {
    "str": _to_str, "int": _to_int, "float": _to_float, "decimal": _to_decimal, "bool": _to_bool,
}  # fmt: skip


class MapValues(_Step):
    """Translate codes through a dictionary: `{"op": "map", "field": "status", "values": {"A": "active"}}`.

    A value is looked up as it is, then as text (JSON keys are text). `on_miss`: `reject` (RecordError),
    `default` (write `default`) or `keep` (leave the value). Nulls stay null.
    """

    op: Literal["map"] = "map"
    field: str
    values: dict[str, Any]
    target: str | None = None
    on_miss: Literal["reject", "default", "keep"] = "reject"
    default: Any = None

    def apply(self, record: Record) -> Record:
        value = get_path(record, self.field)
        if value is None:
            return record
        mapped = self.values.get(value, _ABSENT) if isinstance(value, str) else self.values.get(str(value), _ABSENT)
        if mapped is _ABSENT:
            if self.on_miss == "reject":
                raise RecordError(f"{self.field}: {value!r} is not in the map", column=self.field, value=value)
            mapped = self.default if self.on_miss == "default" else value
        set_path(record, self.target or self.field, own_copy(mapped))
        return record


_TEXT: dict[str, Callable[[str], str]] = {"trim": str.strip, "upper": str.upper, "lower": str.lower, "title": str.title}


class Text(_Step):
    """Trim or change case of text fields: `{"op": "trim", "fields": ["email"]}` (also upper, lower, title).

    Nulls stay null; any other non-text value is a RecordError (cast it to str first).
    """

    op: Literal["trim", "upper", "lower", "title"]
    fields: list[str]

    def apply(self, record: Record) -> Record:
        change = _TEXT[self.op]
        for name in self.fields:
            value = get_path(record, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise RecordError(f"{self.op} {name}: {type(value).__name__} is not text", column=name, value=value)
            set_path(record, name, change(value))
        return record


class Template(_Step):
    """Build text from fields: `{"op": "template", "target": "full_name", "template": "{first_name} {last_name}"}`.

    Placeholders are dotted paths and may carry a format spec (`{amount:.2f}`). A missing or null field
    becomes empty text, or a RecordError with `"missing": "error"`.
    """

    op: Literal["template"] = "template"
    target: str
    template: str
    missing: Literal["empty", "error"] = "empty"
    _parts: list[tuple[str, str | None, str]] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any) -> None:
        try:
            parsed = list(string.Formatter().parse(self.template))
        except ValueError as ex:
            raise ConfigError(f"template {self.template!r}", str(ex)) from ex
        for literal, name, spec, conversion in parsed:
            if name is not None and (not name or conversion or not all(p.strip() for p in name.split("."))):
                raise ConfigError(f"template {self.template!r}", "placeholders are {dotted.path} or {path:spec}")
            self._parts.append((literal, name, spec or ""))

    def apply(self, record: Record) -> Record:
        out = []
        for literal, name, spec in self._parts:
            out.append(literal)
            if name is None:
                continue
            value = get_path(record, name)
            if value is None:
                if self.missing == "error":
                    raise RecordError(f"template {self.target}: {name} is missing", column=name)
                continue
            try:
                out.append(format(value, spec))
            except (TypeError, ValueError) as ex:
                raise RecordError(f"template {self.target}: {name}: {ex}", column=name, value=value) from ex
        set_path(record, self.target, "".join(out))
        return record


class Flatten(_Step):
    """Lift nested objects into top-level fields: `{"op": "flatten", "fields": ["address"], "separator": "_"}`.

    `{"address": {"city": "Oslo"}}` becomes `{"address_city": "Oslo"}`. No `fields`: every object field.
    `depth` limits how many levels are lifted (default: all). Lists stay as they are. A name that
    already exists is a RecordError rather than a silent overwrite.
    """

    op: Literal["flatten"] = "flatten"
    fields: list[str] | None = None
    separator: str = "_"
    depth: int | None = Field(default=None, ge=1)

    def apply(self, record: Record) -> Record:
        names = self.fields if self.fields is not None else [k for k, v in record.items() if isinstance(v, dict)]
        for name in names:
            value = record.get(name)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise RecordError(f"flatten {name}: {type(value).__name__} is not an object", column=name, value=value)
            del record[name]
            for key, item in self._lift(name, value, self.depth):
                if key in record:
                    raise RecordError(f"flatten {name}: {key} already exists", column=key, value=item)
                record[key] = item
        return record

    def _lift(self, prefix: str, obj: dict[str, Any], depth: int | None) -> list[tuple[str, Any]]:
        pairs: list[tuple[str, Any]] = []
        for key, value in obj.items():
            name = f"{prefix}{self.separator}{key}"
            if isinstance(value, dict) and value and (depth is None or depth > 1):
                pairs.extend(self._lift(name, value, None if depth is None else depth - 1))
            else:
                pairs.append((name, value))
        return pairs


class Split(_Step):
    """Turn a list field into child records: an order's `lines` become order lines.

    ```json
    {"op": "split", "field": "lines", "parent_keys": {"id": "order_id"}, "index_field": "line_number"}
    ```
    Each child is the list item (an object; a scalar item goes in `value_field`) plus the parent's
    key fields, renamed as given, which win over the item's own. `keep_parent` also emits the parent,
    first and without the list. A missing or empty list yields no children.
    """

    op: Literal["split"] = "split"
    field: str
    parent_keys: dict[str, str] = Field(default_factory=dict)
    keep_parent: bool = False
    value_field: str = "value"
    index_field: str | None = None

    def run(self, records: list[Record]) -> list[Record]:
        return [out for record in records for out in self.split(record)]

    def split(self, record: Record) -> list[Record]:
        items = pop_path(record, self.field)
        if items is not None and not isinstance(items, list):
            message = f"split {self.field}: {type(items).__name__} is not a list"
            raise RecordError(message, column=self.field, value=items)
        keys = {child: get_path(record, parent) for parent, child in self.parent_keys.items()}
        out = [record] if self.keep_parent else []
        for index, item in enumerate(items or []):
            child = dict(item) if isinstance(item, dict) else {self.value_field: item}
            if self.index_field:
                child[self.index_field] = index
            child.update(keys)
            out.append(child)
        return out


class Filter(_Step):
    """Keep the records for which an expression is true: `{"op": "filter", "expression": "status != 'test'"}`."""

    op: Literal["filter"] = "filter"
    expression: str
    _test: Callable[[Record], Any] = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._test = compile_expression(self.expression)

    def run(self, records: list[Record]) -> list[Record]:
        test = self._test
        return [record for record in records if test(record)]


class Compute(_Step):
    """Computed fields, in order: `{"op": "compute", "fields": {"total": "price * quantity"}}`.

    Expressions are the safe language of `expressions.py`; a later field may use an earlier one.
    """

    op: Literal["compute"] = "compute"
    fields: dict[str, str]
    _compiled: list[tuple[str, Callable[[Record], Any]]] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any) -> None:
        self._compiled = [(name, compile_expression(source)) for name, source in self.fields.items()]

    def apply(self, record: Record) -> Record:
        for name, fn in self._compiled:
            try:
                set_path(record, name, fn(record))
            except RecordError as ex:
                raise RecordError(str(ex), column=name, value=ex.value) from ex
        return record


TransformStep = Annotated[
    Rename
    | Select
    | Drop
    | Default
    | Constant
    | Cast
    | MapValues
    | Text
    | Template
    | Flatten
    | Split
    | Filter
    | Compute
    | Lookup,
    Field(discriminator="op"),
]
_STEPS: TypeAdapter[list[TransformStep]] = TypeAdapter(list[TransformStep])


def parse_steps(raw: Sequence[TransformStep | Mapping[str, Any]]) -> list[TransformStep]:
    """Steps from plain data (dicts) or models; a bad step raises pydantic's ValidationError or ConfigError."""
    return _STEPS.validate_python(list(raw))


def apply_steps(steps: Sequence[TransformStep], record: Record) -> list[Record]:
    """Run every step over one record; returns the records it becomes (none if filtered out).

    Works on a shallow copy: records come fresh from the stage, so nested objects are not copied again.
    Lookups need I/O: use `Pipeline` for steps that include them.
    """
    records = [dict(record)]
    for step in steps:
        if isinstance(step, Lookup):
            raise ConfigError("steps", "a lookup step needs the async Pipeline, not apply_steps")
        records = step.run(records)
        if not records:
            break
    return records


class Pipeline:
    """Steps compiled once per batch, lookups bound to their sources; `await pipeline.process(record)`.

    `Pipeline(job.steps, lookups={"countries": StagedLookup(...), "customers": ApiLookup(...)})`
    checks every lookup's source before the first record (a ConfigError names a missing one).
    Synchronous steps run without awaiting anything. `filtered` counts the records filter steps dropped.
    """

    def __init__(
        self, steps: Sequence[TransformStep | Mapping[str, Any]], lookups: Mapping[str, LookupSource] | None = None
    ) -> None:
        self.steps = parse_steps(steps)
        self.filtered = 0  # records (or child records) that filter steps dropped, for the job's report
        self._stages: list[tuple[list[_Step], Lookup | None, LookupSource | None]] = []
        plain: list[_Step] = []
        for step in self.steps:
            if isinstance(step, Lookup):
                source = resolve_source(step.source, lookups or {}, infer=step.on_miss == "infer")
                self._stages.append((plain, step, source))
                plain = []
            else:
                plain.append(step)
        self._stages.append((plain, None, None))

    async def process(self, record: Record) -> list[Record]:
        """The records one input record becomes; a RecordError rejects the input record as a whole."""
        records = [dict(record)]
        for plain, lookup, source in self._stages:
            for step in plain:
                before, records = len(records), step.run(records)
                if isinstance(step, Filter):
                    self.filtered += before - len(records)
            if lookup is not None and source is not None:
                records = [await lookup.apply(r, source) for r in records]
        return records


async def run_pipeline(
    steps: Sequence[TransformStep | Mapping[str, Any]], record: Record, lookups: Mapping[str, LookupSource]
) -> list[Record]:
    """One record through `steps`; build a `Pipeline` once per batch instead when records stream."""
    return await Pipeline(steps, lookups).process(record)
