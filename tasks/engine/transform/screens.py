"""Kimball's quality screens: column, structure and business-rule checks with a severity and an action.

```json
[{"name": "email present", "check": "not_null", "column": "email", "category": "completeness",
  "severity": 6, "action": "reject"},
 {"name": "one row per customer", "check": "unique", "columns": ["customer_id"], "severity": 8},
 {"name": "known country", "check": "exists", "column": "country", "lookup": "countries", "action": "pass"},
 {"name": "discount below price", "check": "rule", "expression": "discount <= price", "severity": 4}]
```
`check` chooses the screen; `type` (column, structure, business_rule) follows from it. Defaults:
severity 5, action `reject`. Column screens other than `not_null` let nulls through: completeness
is `not_null`'s one job. A `Screener` runs a job's screens over each record of one batch, in the
declared order, and keeps the batch's `ScreenSummary`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, model_validator

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RecordError, ScreenStop
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.load.keysets import Claims, KeySet, MemoryKeySet
from prefect_restful_etl.tasks.engine.transform.expressions import compile_expression
from prefect_restful_etl.tasks.engine.transform.lookups import LookupSource, resolve_source
from prefect_restful_etl.tasks.engine.transform.newest import KeyIndex, MemoryKeyIndex, Newest

Record = dict[str, Any]
Problem = tuple[str | None, Any, str]  # column, failing value, message


class _Screen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(min_length=1, description="Names the screen in `etl_screen` and in each error event.")
    category: str = Field(default="", description='Free text: "completeness", "validity", "consistency".')
    severity: int = Field(default=5, ge=1, le=10, description="1 (cosmetic) to 10 (fatal); weighs the quality score.")
    action: Literal["pass", "reject", "stop"] = Field(
        default="reject",
        description="A failing record: reject (kept out), pass (staged, flagged), or stop (the batch, before loading).",
    )
    if TYPE_CHECKING:  # each concrete screen declares its own Literal field; no field of the base model
        type: str

    def dimension_row(self, order: int) -> dict[str, Any]:
        """The `etl_screen` dimension row; `order` is the processing order (1 runs first)."""
        kind = self.type  # each concrete screen declares its own Literal type
        return {"name": self.name, "type": kind, "category": self.category or None, "severity": self.severity,
                "action": self.action, "processing_order": order}  # fmt: skip


class _ColumnScreen(_Screen):
    type: Literal["column"] = Field(default="column", description="Its type in `etl_screen`; follows from `check`.")
    column: str = Field(min_length=1, description="A field name or dotted path.")

    def problem(self, record: Record) -> Problem | None:
        value = get_path(record, self.column)
        if value is None:
            return None
        message = self.test(value)
        return None if message is None else (self.column, value, message)

    def test(self, value: Any) -> str | None:
        """Why `value` fails, or None when it passes."""
        raise NotImplementedError


class NotNull(_ColumnScreen):
    """A field must be there and not null: `{"name": "email present", "check": "not_null", "column": "email",
    "blank_is_null": true}`

    ```
    {"id": 202, "email": " "}
    -> rejected, an error event: email is blank
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "email present", "check": "not_null", "column": "email", "blank_is_null": True, "severity": 8}
            ]
        }
    )

    check: Literal["not_null"] = "not_null"
    blank_is_null: bool = Field(default=False, description="Whitespace-only text counts as missing.")

    def problem(self, record: Record) -> Problem | None:
        value = get_path(record, self.column)
        if value is None:
            return (self.column, None, f"{self.column} is missing")
        if self.blank_is_null and isinstance(value, str) and not value.strip():
            return (self.column, value, f"{self.column} is blank")
        return None


def _is_iso(parse: Any, value: Any) -> bool:
    try:
        parse(value.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def _decimal(value: Any) -> Decimal | None:
    """Numeric text (as the cast step writes decimals: `"10.50"`) as a finite Decimal; anything else None."""
    if not isinstance(value, str) or value != value.strip():
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_TYPES: dict[str, Any] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "decimal": lambda v: (
        _decimal(v) is not None or (isinstance(v, int) and _is_number(v)) or (isinstance(v, float) and math.isfinite(v))
    ),
    "bool": lambda v: isinstance(v, bool),
    "date": lambda v: isinstance(v, str) and len(v) == 10 and _is_iso(date.fromisoformat, v),
    "datetime": lambda v: isinstance(v, str) and _is_iso(datetime.fromisoformat, v),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


class TypeScreen(_ColumnScreen):
    """A value must be of a type: `{"name": "amount is a number", "check": "type", "column": "amount",
    "expected": "number"}`

    `date` and `datetime` mean ISO 8601 text, as the cast step writes them; `decimal` means a finite
    number, or text that reads as one (`"10.50"`, as the cast step writes decimals).
    ```
    {"id": 7, "amount": "12,50"}
    -> rejected, an error event: amount is not of type number
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "amount is a number", "check": "type", "column": "amount", "expected": "number"}]
        }
    )

    check: Literal["type"] = "type"
    expected: Literal["str", "int", "number", "decimal", "bool", "date", "datetime", "list", "object"] = Field(
        description="The type the value must have; `date`, `datetime` and `decimal` accept the cast step's text."
    )

    def test(self, value: Any) -> str | None:
        return None if _TYPES[self.expected](value) else f"{self.column} is not of type {self.expected}"


class Pattern(_ColumnScreen):
    """Text must match a regular expression: `{"name": "postcode format", "check": "pattern", "column": "postcode",
    "pattern": "^[0-9]{4}$"}`

    Searched as JSON Schema's `pattern` is: anchor it to match the whole value. Numbers are read as text.
    Python's regular expressions backtrack, and cannot be interrupted: a pattern with nested repeats
    (`^(a+)+$`) can take exponential time on a long value that almost matches. Avoid nested quantifiers.
    ```
    {"id": 7, "postcode": "N1 9GU"}
    -> rejected, an error event: postcode does not match '^[0-9]{4}$'
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "postcode format", "check": "pattern", "column": "postcode", "pattern": "^[0-9]{4}$"}]
        }
    )

    check: Literal["pattern"] = "pattern"
    pattern: str = Field(description="A regular expression (Python's), searched in the value's text.")
    _regex: re.Pattern[str] = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        try:
            self._regex = re.compile(self.pattern)
        except re.error as ex:
            raise ConfigError(f"screen {self.name!r}", f"invalid pattern {self.pattern!r}: {ex}") from ex

    def test(self, value: Any) -> str | None:
        if isinstance(value, (dict, list)):
            return f"{self.column} is not text"
        return None if self._regex.search(str(value)) else f"{self.column} does not match {self.pattern!r}"


class _Bounded(_ColumnScreen):
    min: int | float | str | None = Field(default=None, description="The least allowed (inclusive); null: none.")
    max: int | float | str | None = Field(default=None, description="The most allowed (inclusive); null: none.")

    @model_validator(mode="after")
    def _one_bound(self) -> _Bounded:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self

    def _outside(self, measure: Any, what: str, shown: Any = None, bounds: tuple[Any, Any] | None = None) -> str | None:
        """Why `measure` is out of bounds (`shown` as the value, `bounds` in place of min and max), or None."""
        shown = measure if shown is None else shown
        low, high = bounds or (self.min, self.max)
        try:
            if low is not None and measure < low:
                return f"{what} {shown!r} is below {self.min!r}"
            if high is not None and measure > high:
                return f"{what} {shown!r} is above {self.max!r}"
        except TypeError:
            return f"{what} {shown!r} cannot be compared with {self.min if self.min is not None else self.max!r}"
        return None


def _as_written(bound: Any) -> Decimal | None:
    # The bound as the configuration wrote it: Decimal(0.1) is 0.1000000000000000055..., which "0.1" is below
    return None if bound is None else Decimal(str(bound))


class Range(_Bounded):
    """A value must lie between bounds: `{"name": "sane age", "check": "range", "column": "age", "min": 0, "max": 130}`

    Bounds are inclusive. With number bounds, numeric text compares as a number, exactly (the cast step
    writes decimals as text: `"-250.00"` is below 0); other text bounds compare as text, so ISO dates work
    (`"min": "2000-01-01"`).
    ```
    {"id": 204, "lifetime_value": "-250.00"}
    -> rejected, an error event: lifetime_value '-250.00' is below 0
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "lifetime value not negative", "check": "range", "column": "lifetime_value", "min": 0},
                {"name": "sane age", "check": "range", "column": "age", "min": 0, "max": 130},
            ]
        }
    )

    check: Literal["range"] = "range"

    def test(self, value: Any) -> str | None:
        if isinstance(value, bool):
            return f"{self.column} is a boolean"
        if isinstance(value, str) and self._number_bounds():
            number = _decimal(value)
            if number is None:
                return f"{self.column} {value!r} is not a number and cannot be compared with {self._a_bound()!r}"
            return self._outside(number, self.column, value, (_as_written(self.min), _as_written(self.max)))
        return self._outside(value, self.column)

    def _number_bounds(self) -> bool:
        return all(_is_number(bound) for bound in (self.min, self.max) if bound is not None)

    def _a_bound(self) -> Any:
        return self.min if self.min is not None else self.max


class Length(_Bounded):
    """The length of text or a list must lie between bounds: `{"name": "short code", "check": "length",
    "column": "code", "min": 2, "max": 3}`

    ```
    {"id": 7, "code": "ABCD"}
    -> rejected, an error event: length of code 4 is above 3
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "short code", "check": "length", "column": "code", "min": 2, "max": 3}]
        }
    )

    check: Literal["length"] = "length"

    def test(self, value: Any) -> str | None:
        if not isinstance(value, (str, list, dict)):
            return f"{self.column} has no length"
        return self._outside(len(value), f"length of {self.column}")


class AllowedValues(_ColumnScreen):
    """A value must be one of a list: `{"name": "known status", "check": "allowed_values", "column": "status",
    "values": ["active", "closed"]}`

    ```
    {"id": 7, "status": "archived"}
    -> rejected, an error event: status 'archived' is not an allowed value
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "known status", "check": "allowed_values", "column": "status", "values": ["active", "closed"]}
            ]
        }
    )

    check: Literal["allowed_values"] = "allowed_values"
    values: list[Any] = Field(min_length=1, description='The values allowed (compared as JSON values: 1 is not "1").')

    def test(self, value: Any) -> str | None:
        return None if value in self.values else f"{self.column} {value!r} is not an allowed value"


class Unique(_Screen):
    """A natural key once per batch: `{"name": "one row per id", "check": "unique", "columns": ["id"],
    "newest_by": "updated_at"}`

    With `reject` (the default), the newest record of a key is kept, by `newest_by` compared by value (instants,
    numbers; by default the source extract's incremental cursor), or the last read when there is none or they
    tie; the others are duplicates, not staged, each an error event naming both versions (a record updated while
    the source was paged comes twice, the new one last).
    With `pass` or `stop`, the first record of a key passes and a later one fails. A record the other screens
    reject does not take part. A key with a null part is not checked. Keys compare as text (`42` and `"42"`
    are one key), as the load's natural key does.
    ```
    {"id": 7, "email": "old@x.io", "updated_at": "2026-03-01T10:00:00Z"}
    {"id": 7, "email": "new@x.io", "updated_at": "2026-03-01T10:05:00Z"}
    -> the second is staged; the first is a duplicate, an error event naming both versions
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "one row per customer", "check": "unique", "columns": ["id"], "newest_by": "updated_at"}
            ]
        }
    )

    type: Literal["structure"] = Field(
        default="structure", description="Its type in `etl_screen`; follows from `check`."
    )
    check: Literal["unique"] = "unique"
    columns: list[str] = Field(min_length=1, description="The fields (dotted paths) whose values make the key.")
    newest_by: str | None = Field(
        default=None,
        description="The field (the cursor) whose newest value wins a key. Left out: the incremental cursor_field"
        " of the extract the records come from, where the steps leave it in the record (renamed, cast, selected),"
        " else the last read; null: the last read.",
    )

    def key(self, record: Record) -> tuple[str, ...] | None:
        parts = [get_path(record, c) for c in self.columns]
        if any(p is None for p in parts):
            return None
        return tuple(str(p) for p in parts)

    def member(self, record: Record) -> str | None:
        """The key as one string, for a key set."""
        key = self.key(record)
        return None if key is None else _member(key)


class Exists(_Screen):
    """Referential integrity through a lookup source of the batch (or an inline mapping).

    `{"name": "known country", "check": "exists", "column": "country", "lookup": "countries"}`
    A null value is not checked.
    ```
    {"id": 205, "country": "ZZ"}
    -> rejected, an error event: country 'ZZ' has no match in countries
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "known country", "check": "exists", "column": "country", "lookup": "countries"},
                {
                    "name": "known currency",
                    "check": "exists",
                    "column": "currency",
                    "lookup": {"EUR": True, "USD": True},
                },
            ]
        }
    )

    type: Literal["structure"] = Field(
        default="structure", description="Its type in `etl_screen`; follows from `check`."
    )
    check: Literal["exists"] = "exists"
    column: str = Field(min_length=1, description="A field name or dotted path.")
    lookup: str | dict[str, Any] = Field(description="The name of one of the job's `lookups`, or an inline mapping.")


class Rule(_Screen):
    """A business rule that must hold, in the safe expression language.

    `{"name": "discount below price", "check": "rule", "expression": "discount <= price", "column": "discount"}`
    `column` only says which field an error event blames. A rule that cannot be evaluated fails.
    ```
    {"id": 7, "price": 10, "discount": 12}
    -> rejected, an error event: rule 'discount <= price' is false
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "discount below price",
                    "check": "rule",
                    "expression": "discount <= price",
                    "column": "discount",
                }
            ]
        }
    )

    type: Literal["business_rule"] = Field(
        default="business_rule", description="Its type in `etl_screen`; follows from `check`."
    )
    check: Literal["rule"] = "rule"
    expression: str = Field(description="An expression of the record's fields that must be true.")
    column: str | None = Field(default=None, description="The field an error event names; null: none.")
    _test: Any = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._test = compile_expression(self.expression)

    def problem(self, record: Record) -> Problem | None:
        try:
            if self._test(record):
                return None
            message = f"rule {self.expression!r} is false"
        except RecordError as ex:
            message = str(ex)
        return (self.column, get_path(record, self.column) if self.column else None, message)


Screen = Annotated[
    NotNull | TypeScreen | Pattern | Range | Length | AllowedValues | Unique | Exists | Rule,
    Field(discriminator="check"),
]
_SCREENS: TypeAdapter[list[Screen]] = TypeAdapter(list[Screen])
_MAX_VALUE_CHARS = 200


class Fate(StrEnum):
    """What becomes of a screened record: the worst action among its failures decides."""

    PASSED = "passed"
    FLAGGED = "flagged"  # failed only `pass` screens: goes on, with error events
    REJECTED = "rejected"
    STOP = "stop"
    DUPLICATE = "duplicate"  # an older version of a key a newer record holds: not staged, not a quality failure


_FATE_OF_ACTION = {"pass": Fate.FLAGGED, "reject": Fate.REJECTED, "stop": Fate.STOP}
_RANK = {Fate.PASSED: 0, Fate.FLAGGED: 1, Fate.REJECTED: 2, Fate.STOP: 3, Fate.DUPLICATE: 2}


@dataclass(frozen=True, slots=True)
class ScreenFailure:
    """One failed screen on one record: one row of `etl_error_event`."""

    screen: str
    type: str
    category: str
    severity: int
    action: str
    column: str | None
    value: str | None  # stringified and cut to 200 characters
    message: str

    def as_error_event(self) -> dict[str, Any]:
        """Keyword arguments for the job's error sink (it adds batch, job, tenant and natural key)."""
        return {"screen": self.screen, "severity": self.severity, "action": self.action,
                "column": self.column, "value": self.value, "message": self.message}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScreenResult:
    failures: tuple[ScreenFailure, ...]
    fate: Fate

    @property
    def kept(self) -> bool:
        """Whether the record goes on to the next job (passed or flagged)."""
        return self.fate in (Fate.PASSED, Fate.FLAGGED)

    def raise_for_stop(self, scrub: Callable[[str], str] = lambda text: text) -> None:
        """Raise ScreenStop for a `stop` failure: call it after writing the failures as error events.

        The message quotes the failing value and goes on to Prefect's state and logs: pass the batch's
        `scrub` (`ErrorSink.scrub`) so that a credential in a record never gets there.
        """
        if self.fate is Fate.STOP:
            first = next(f for f in self.failures if f.action == "stop")
            raise ScreenStop(first.screen, scrub(first.message))


@dataclass
class ScreenSummary:
    """A batch's quality report, record by record.

    `quality_score` is 100 minus the severity-weighted share of bad records: each record counts its
    worst failure's severity out of 10 (a record with a severity-10 failure counts as wholly bad, one
    with only a severity-2 flag as a fifth bad), so many small flags weigh less than a few rejects.
    100 when nothing was screened or nothing failed; `pass_rate` is the plain share without failures.
    """

    screened: int = 0
    passed: int = 0
    flagged: int = 0
    rejected: int = 0
    stopped: int = 0
    max_severity: int = 0
    failures_by_screen: Counter[str] = field(default_factory=Counter)
    _severity_total: int = 0

    def add(self, result: ScreenResult) -> None:
        if result.fate is Fate.DUPLICATE:  # a version of a record, not a record of its own
            return
        self.screened += 1
        fate = result.fate
        if fate is Fate.PASSED:
            self.passed += 1
            return
        self.flagged += fate is Fate.FLAGGED
        self.rejected += fate is Fate.REJECTED
        self.stopped += fate is Fate.STOP
        worst = max(f.severity for f in result.failures)
        self.max_severity = max(self.max_severity, worst)
        self._severity_total += worst
        self.failures_by_screen.update(f.screen for f in result.failures)

    @property
    def quality_score(self) -> float:
        if not self.screened:
            return 100.0
        return round(100.0 * (1 - self._severity_total / (10 * self.screened)), 2)

    @property
    def pass_rate(self) -> float:
        return round(100.0 * self.passed / self.screened, 2) if self.screened else 100.0

    def as_dict(self) -> dict[str, Any]:
        return {"screened": self.screened, "passed": self.passed, "flagged": self.flagged,
                "rejected": self.rejected, "stopped": self.stopped, "quality_score": self.quality_score,
                "pass_rate": self.pass_rate, "max_severity": self.max_severity,
                "failures_by_screen": dict(self.failures_by_screen)}  # fmt: skip


def parse_screens(raw: Sequence[Screen | Mapping[str, Any]]) -> list[Screen]:
    """Screens from plain data or models; names must be unique (they key the error events)."""
    screens = _SCREENS.validate_python(list(raw))
    seen: set[str] = set()
    for screen in screens:
        if screen.name in seen:
            raise ConfigError(f"screen {screen.name!r}", "two screens share this name")
        seen.add(screen.name)
    return screens


class Screener:
    """One batch's screening of one job's records: `result = await screener.screen(record)`.

    `Screener(job.screens, lookups={"countries": StagedLookup(...)})`; build one per batch, since it
    remembers the natural keys seen. Write `result.failures` as error events, then call
    `result.raise_for_stop()`; `screener.summary` is the quality report.

    Those keys rest in memory unless `key_sets` makes a key set per unique screen from a name such as
    `unique-3` (the screen's processing order): `lambda name: StagedKeySet(stage, key.part(name))`, and
    `indexes` an index for the newest-wins screens (`newest-3`). Then, per chunk, `await
    screener.prefetch(records)` before screening it and `await screener.flush()` after. Kept records are
    counted in order (their place in the job's output); when a later record beat a kept one (`superseded`),
    the output is read once more through `keep`, which leaves each key's winner only.
    """

    def __init__(
        self,
        screens: Sequence[Screen | Mapping[str, Any]],
        lookups: Mapping[str, LookupSource] | None = None,
        key_sets: Callable[[str], KeySet] | None = None,
        indexes: Callable[[str], KeyIndex] | None = None,
    ) -> None:
        self.screens = parse_screens(screens)
        self.summary = ScreenSummary()
        self._sources = {s.name: resolve_source(s.lookup, lookups or {}) for s in self.screens if isinstance(s, Exists)}
        make = key_sets or (lambda name: MemoryKeySet())
        index = indexes or (lambda name: MemoryKeyIndex())
        uniques = [(order, s) for order, s in enumerate(self.screens, start=1) if isinstance(s, Unique)]
        self._claims = {s.name: Claims(make(f"unique-{o}")) for o, s in uniques if s.action != "reject"}
        self._newest = {s.name: Newest(index(f"newest-{o}")) for o, s in uniques if s.action == "reject"}
        self.kept = 0  # records kept so far: the next kept record's place in the output
        self.duplicates = 0  # older versions of a key: dropped, whether read before or after the newest

    @property
    def superseded(self) -> int:
        """Kept records a later, newer record of their key beat: they are in the output until `keep` runs."""
        return sum(newest.superseded for newest in self._newest.values())

    def dimension_rows(self) -> list[dict[str, Any]]:
        return [screen.dimension_row(order) for order, screen in enumerate(self.screens, start=1)]

    async def prefetch(self, records: Iterable[Record]) -> None:
        """Learn which of these records' keys earlier chunks claimed: one question per unique screen."""
        chunk = list(records)
        for screen in self.screens:
            if isinstance(screen, Unique):
                members = [m for m in (screen.member(record) for record in chunk) if m is not None]
                if screen.name in self._newest:
                    await self._newest[screen.name].prefetch(members)
                else:
                    await self._claims[screen.name].prefetch(members)

    async def flush(self) -> None:
        """Hand the keys claimed since the last flush to the key sets: one write per unique screen."""
        for claims in self._claims.values():
            await claims.flush()
        for newest in self._newest.values():
            await newest.flush()

    async def drop(self) -> None:
        """Forget every claimed key (a job's retry screens its input afresh)."""
        for claims in self._claims.values():
            await claims.drop()
        for newest in self._newest.values():
            await newest.drop()

    async def keep(self, output: list[Record], start: int) -> list[Record]:
        """Of a chunk of the job's output (its first record at place `start`), the records that are still their
        keys' newest: after the last `flush`, for the rewrite `superseded` calls for."""
        winning = [True] * len(output)
        for screen in self.screens:
            if isinstance(screen, Unique) and screen.name in self._newest:
                members = [screen.member(record) for record in output]
                places = await self._newest[screen.name].positions([m for m in members if m is not None])
                for i, member in enumerate(members):
                    winning[i] = winning[i] and (member is None or places.get(member) == start + i)
        return [record for record, kept in zip(output, winning, strict=True) if kept]

    async def screen(self, record: Record) -> ScreenResult:
        failures: list[ScreenFailure] = []
        claims: list[tuple[Claims, str]] = []
        for screen in self.screens:
            if isinstance(screen, Unique) and screen.name in self._newest:
                continue  # decided once the record's fate by the other screens is known
            if isinstance(screen, Unique):
                problem, claim = await self._unique(screen, record)
                if claim:
                    claims.append(claim)
            elif isinstance(screen, Exists):
                problem = await self._exists(screen, record)
            else:
                problem = screen.problem(record)
            if problem is not None:
                failures.append(_failure(screen, *problem))
        fate = max((_FATE_OF_ACTION[f.action] for f in failures), key=_RANK.__getitem__, default=Fate.PASSED)
        if fate in (Fate.PASSED, Fate.FLAGGED) and self._newest:
            fate = await self._offer_newest(record, failures, fate)
        result = ScreenResult(tuple(failures), fate)
        if result.kept:
            self.kept += 1
            for keys, member in claims:
                keys.claim(member)
        self.summary.add(result)
        return result

    async def _offer_newest(self, record: Record, failures: list[ScreenFailure], fate: Fate) -> Fate:
        """The record against its keys' newest so far: it wins (an older one becomes a duplicate) or it is one."""
        for screen in self.screens:
            if not (isinstance(screen, Unique) and screen.name in self._newest):
                continue
            key = screen.key(record)
            if key is None:
                continue
            value = get_path(record, screen.newest_by) if screen.newest_by else None
            wins, other = await self._newest[screen.name].offer(_member(key), value, self.kept)
            if other is not None:
                self.duplicates += 1
                failures.append(_failure(screen, *_two_versions(screen, key, (value, self.kept), other, wins)))
            if not wins:
                fate = Fate.DUPLICATE
        return fate

    async def _unique(self, screen: Unique, record: Record) -> tuple[Problem | None, tuple[Claims, str] | None]:
        key = screen.key(record)
        if key is None:
            return None, None
        claims, member = self._claims[screen.name], _member(key)
        if await claims.taken(member):
            shown = key[0] if len(key) == 1 else key
            return (", ".join(screen.columns), shown, f"natural key {shown!r} already seen in this batch"), None
        return None, (claims, member)

    async def _exists(self, screen: Exists, record: Record) -> Problem | None:
        value = get_path(record, screen.column)
        if value is None:
            return None
        if isinstance(value, (dict, list)) or await self._sources[screen.name].get(value) is None:
            where = screen.lookup if isinstance(screen.lookup, str) else "the inline mapping"
            return (screen.column, value, f"{screen.column} {value!r} has no match in {where}")
        return None


def _two_versions(
    screen: Unique, key: tuple[str, ...], this: tuple[Any, int], other: tuple[Any, int], kept_this: bool
) -> Problem:
    """The error event of a duplicate: which version of the key is kept (and so which is dropped), and why."""
    shown = key[0] if len(key) == 1 else key
    kept, dropped = (this, other) if kept_this else (other, this)
    if screen.newest_by and kept[0] != dropped[0]:
        why = f"the one whose {screen.newest_by} {kept[0]!r} is newer than the other's {dropped[0]!r}"
    else:
        why = "the one read later" + (f" (both have {screen.newest_by} {kept[0]!r})" if screen.newest_by else "")
    return ", ".join(screen.columns), shown, f"natural key {shown!r} came twice in this batch: kept {why}"


def _member(key: tuple[str, ...]) -> str:
    return orjson.dumps(key).decode()  # JSON keeps ("a|b",) and ("a", "b") apart, as the tuples were


def _failure(screen: _Screen, column: str | None, value: Any, message: str) -> ScreenFailure:
    shown = None if value is None else str(value)
    if shown is not None and len(shown) > _MAX_VALUE_CHARS:
        shown = shown[: _MAX_VALUE_CHARS - 1] + "…"
    kind = screen.type
    return ScreenFailure(screen.name, kind, screen.category, screen.severity, screen.action, column, shown, message)
