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
    """Rename fields: `{"op": "rename", "fields": {"first_name": "given_name", "meta.updated_at": "updated_at"}}`

    ```
    {"id": 7, "first_name": "Ada", "meta": {"updated_at": "2026-03-01T10:00:00Z"}}
    -> {"id": 7, "meta": {}, "given_name": "Ada", "updated_at": "2026-03-01T10:00:00Z"}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"op": "rename", "fields": {"first_name": "given_name", "meta.updated_at": "updated_at"}}]
        }
    )

    op: Literal["rename"] = "rename"
    fields: dict[str, str] = Field(description="Old name (a dotted path) -> new name; a missing field is skipped.")

    def apply(self, record: Record) -> Record:
        for old, new in self.fields.items():
            value = pop_path(record, old, _ABSENT)
            if value is not _ABSENT:
                set_path(record, new, value)
        return record


class Select(_Step):
    """Keep only these fields, in this order: `{"op": "select", "fields": ["id", "email", "address.city"]}`.

    ```
    {"id": 7, "email": "ada@example.com", "notes": "VIP", "address": {"city": "Oslo", "zip": "0150"}}
    -> {"id": 7, "email": "ada@example.com", "address": {"city": "Oslo"}}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"op": "select", "fields": ["id", "email", "address.city"]}]}
    )

    op: Literal["select"] = "select"
    fields: list[str] = Field(description="The fields kept (dotted paths), in this order; missing ones are skipped.")

    def apply(self, record: Record) -> Record:
        kept: Record = {}
        for name in self.fields:
            value = get_path(record, name, _ABSENT)
            if value is not _ABSENT:
                set_path(kept, name, value)
        return kept


class Drop(_Step):
    """Remove fields: `{"op": "drop", "fields": ["internal_notes", "meta.etag"]}`.

    ```
    {"id": 7, "internal_notes": "call back", "meta": {"etag": "W/1", "version": 3}}
    -> {"id": 7, "meta": {"version": 3}}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"op": "drop", "fields": ["internal_notes", "meta.etag"]}]}
    )

    op: Literal["drop"] = "drop"
    fields: list[str] = Field(description="The fields removed (dotted paths).")

    def apply(self, record: Record) -> Record:
        for name in self.fields:
            pop_path(record, name)
        return record


class Default(_Step):
    """Fill missing or null fields: `{"op": "default", "values": {"status": "active"}}`.

    ```
    {"id": 7, "status": null}
    -> {"id": 7, "status": "active"}
    ```
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"op": "default", "values": {"status": "active"}}]})

    op: Literal["default"] = "default"
    values: dict[str, Any] = Field(description="Field (a dotted path) -> the value it gets when missing or null.")

    def apply(self, record: Record) -> Record:
        for name, value in self.values.items():
            if get_path(record, name) is None:
                set_path(record, name, own_copy(value))
        return record


class Constant(_Step):
    """Set fields whatever they hold: `{"op": "constant", "values": {"source_system": "crm"}}`.

    ```
    {"id": 7, "source_system": "import"}
    -> {"id": 7, "source_system": "crm"}
    ```
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"op": "constant", "values": {"source_system": "crm"}}]})

    op: Literal["constant"] = "constant"
    values: dict[str, Any] = Field(description="Field (a dotted path) -> the value it gets, whatever it held.")

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
    ```
    {"id": 7, "lifetime_value": 1234.5, "signed_up": "01/03/2024", "age": "42"}
    -> {"id": 7, "lifetime_value": "1234.5", "signed_up": "2024-03-01", "age": 42}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "op": "cast",
                    "fields": {"lifetime_value": "decimal", "signed_up": "date", "age": "int"},
                    "formats": ["%d/%m/%Y"],
                }
            ]
        }
    )

    op: Literal["cast"] = "cast"
    fields: dict[str, CastType] = Field(description="Field (a dotted path) -> the type its value becomes.")
    formats: list[str] = Field(
        default_factory=list, description="strptime formats tried for date and datetime fields before ISO 8601."
    )

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
    ```
    {"id": 7, "status": "A"}
    -> {"id": 7, "status": "active"}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"op": "map", "field": "status", "values": {"A": "active", "C": "closed"}, "on_miss": "keep"}]
        }
    )

    op: Literal["map"] = "map"
    field: str = Field(description="The field whose value is translated (a dotted path).")
    values: dict[str, Any] = Field(description='Code -> what it becomes (keys are text: `42` matches `"42"`).')
    target: str | None = Field(default=None, description="Where the result goes; default: replaces `field`.")
    on_miss: Literal["reject", "default", "keep"] = Field(
        default="reject", description="A value not in `values`: reject the record, write `default`, or keep it."
    )
    default: Any = Field(default=None, description="Written on a miss when `on_miss` is `default`.")

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
    ```
    {"id": 7, "email": "  ada@example.com "}
    -> {"id": 7, "email": "ada@example.com"}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"op": "trim", "fields": ["email"]}, {"op": "lower", "fields": ["email", "country"]}]
        }
    )

    op: Literal["trim", "upper", "lower", "title"] = Field(
        description="trim: strip surrounding whitespace; upper, lower, title: change the case."
    )
    fields: list[str] = Field(description="The text fields changed (dotted paths).")

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
    ```
    {"first_name": "Ada", "last_name": "Lovelace"}
    -> {"first_name": "Ada", "last_name": "Lovelace", "full_name": "Ada Lovelace"}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"op": "template", "target": "full_name", "template": "{first_name} {last_name}"}]
        }
    )

    op: Literal["template"] = "template"
    target: str = Field(description="The field the text goes to (a dotted path).")
    template: str = Field(description="Text with `{dotted.path}` or `{path:spec}` placeholders (`{amount:.2f}`).")
    missing: Literal["empty", "error"] = Field(
        default="empty", description="A missing or null placeholder: empty text, or reject the record."
    )
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
    ```
    {"id": 7, "address": {"city": "Oslo", "geo": {"lat": 59.9}}}
    -> {"id": 7, "address_city": "Oslo", "address_geo_lat": 59.9}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"op": "flatten", "fields": ["address"], "separator": "_"}]}
    )

    op: Literal["flatten"] = "flatten"
    fields: list[str] | None = Field(default=None, description="The top-level object fields lifted; null: every one.")
    separator: str = Field(default="_", description="Written between the names of each level.")
    depth: int | None = Field(default=None, ge=1, description="How many levels are lifted; null: all.")

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
    ```
    {"id": 12, "lines": [{"sku": "A-1"}, {"sku": "B-7"}]}
    -> [{"sku": "A-1", "line_number": 0, "order_id": 12}, {"sku": "B-7", "line_number": 1, "order_id": 12}]
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"op": "split", "field": "lines", "parent_keys": {"id": "order_id"}, "index_field": "line_number"}
            ]
        }
    )

    op: Literal["split"] = "split"
    field: str = Field(description="The list field whose items become records (a dotted path).")
    parent_keys: dict[str, str] = Field(
        default_factory=dict, description="Parent field -> its name on each child (the child's link to its parent)."
    )
    keep_parent: bool = Field(default=False, description="Also emit the parent, first and without the list.")
    value_field: str = Field(default="value", description="Where a scalar item goes in its child record.")
    index_field: str | None = Field(
        default=None, description="Where each child gets its position in the list (0 first)."
    )

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
    """Keep the records for which an expression is true: `{"op": "filter", "expression": "status != 'test'"}`.

    Records it drops are counted as `filtered`, never as errors.
    ```
    [{"id": 1, "status": "active"}, {"id": 2, "status": "test"}]
    -> [{"id": 1, "status": "active"}]
    ```
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"op": "filter", "expression": "status != 'test'"}]})

    op: Literal["filter"] = "filter"
    expression: str = Field(description="An expression of the record's fields (`status != 'test' and total > 0`).")
    _test: Callable[[Record], Any] = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._test = compile_expression(self.expression)

    def run(self, records: list[Record]) -> list[Record]:
        test = self._test
        return [record for record in records if test(record)]


class Compute(_Step):
    """Computed fields, in order: `{"op": "compute", "fields": {"total": "price * quantity"}}`.

    Expressions are the safe language of `expressions.py`; a later field may use an earlier one.
    ```
    {"price": 2.5, "quantity": 4}
    -> {"price": 2.5, "quantity": 4, "total": 10.0}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"op": "compute", "fields": {"total": "price * quantity"}}]}
    )

    op: Literal["compute"] = "compute"
    fields: dict[str, str] = Field(description="Field (a dotted path) -> the expression whose value it gets.")
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
