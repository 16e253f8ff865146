"""Values by meaning, not by representation: the canonical form a load hashes to tell a change from a re-spelling.

A destination answers in its own representation: `0` for the `0.0` it was sent, `"2026-03-01T01:00:00+01:00"`
for `"2026-03-01T00:00:00Z"`, a field left out for a null, keys in its own order, `1234.5` for the decimal text
`"1234.50"`. Hashed as JSON, each of these is a change, and every rerun rewrites the row (type 2: opens a
version) for nothing. So both sides are hashed in one canonical form:

| value | canonical form |
| --- | --- |
| a number | by value: a whole float is the integer (`0.0` -> `0`) |
| ISO 8601 text with a time of day | the instant in UTC, `2026-03-01T00:00:00.000000Z` (naive text is taken as UTC) |
| null, and a field the row lacks | null; inside an object a null member is dropped, as a missing one is |
| an object | its members in key order |
| a `decimal` field (`compare_as`) | numbers and numeric text alike by value: `"1234.50"`, `1234.5` -> `"1234.5"` |
| a `text` field (`compare_as`) | exactly as given |

Booleans stay booleans (`true` is no `1`), and text that is not a date and time stays text (`"7"` is no `7`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import orjson

from prefect_restful_etl.tasks.engine.http.paths import get_path

CompareAs = Literal["value", "decimal", "text"]
_INSTANT = "%Y-%m-%dT%H:%M:%S.%fZ"
_WHOLE = 2.0**53  # beyond this a float's integer is not exact: keep it a float


def canonical(value: Any) -> Any:
    """The canonical form of one JSON value (see the module's table)."""
    kind = type(value)
    if kind is str:
        return _instant(value) or value
    if kind is float:
        return int(value) if value.is_integer() and -_WHOLE < value < _WHOLE else value
    if kind is dict:
        return {key: canonical(item) for key, item in value.items() if item is not None}
    if kind is list:
        return [canonical(item) for item in value]
    if isinstance(value, Decimal):
        return canonical_decimal(value)
    if isinstance(value, datetime):
        return _utc(value)
    return value  # None, bool, int, and anything JSON does not hold


def canonical_decimal(value: Any) -> Any:
    """A decimal field's value: a number or numeric text as normalised decimal text; anything else as `canonical`."""
    kind = type(value)
    if kind is str:
        text = value
    elif kind is int or kind is float:
        text = repr(value)  # a float's shortest round-tripping digits: 0.1 is "0.1", not 0.1000000000000000055...
    elif isinstance(value, Decimal):
        text = str(value)
    else:
        return canonical(value)  # None, booleans, objects and lists are no decimals
    try:
        number = Decimal(text)
    except InvalidOperation:
        return canonical(value)
    if not number.is_finite():
        return canonical(value)
    normal = f"{number.normalize():f}"
    return "0" if normal == "-0" else normal


def _instant(text: str) -> str | None:
    """ISO 8601 text with a time of day as the UTC instant; None for any other text (cheap checks first)."""
    if len(text) < 16 or text[4] != "-" or text[13] != ":" or text[10] not in "Tt ":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _utc(moment)


def same_instant(a: str | None, b: str | None) -> bool:
    """Whether two texts name one instant (`...Z` and `...+01:00` alike), or are equal text."""
    return a == b or (a is not None and b is not None and _instant(a) is not None and _instant(a) == _instant(b))


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        return moment.strftime(_INSTANT)
    return moment.astimezone(UTC).strftime(_INSTANT)


_FORMS: dict[str, Callable[[Any], Any]] = {"value": canonical, "decimal": canonical_decimal, "text": lambda v: v}


class RowHasher:
    """A digest of a record's compared fields in canonical form: a change in any of them (and only them) is
    seen, a re-spelling of a value is not. Built once per load (it runs for every staged and destination row)."""

    def __init__(self, fields: Iterable[str], compare_as: Mapping[str, CompareAs] | None = None) -> None:
        forms = compare_as or {}
        self._plain = [(f, _FORMS[forms.get(f, "value")]) for f in fields]
        self._dotted = any("." in f for f, _ in self._plain)

    def __call__(self, record: dict[str, Any]) -> str:
        if self._dotted:
            values = [form(get_path(record, f)) for f, form in self._plain]
        else:
            get = record.get
            values = [form(get(f)) for f, form in self._plain]
        return hashlib.blake2b(
            orjson.dumps(values, default=str, option=orjson.OPT_SORT_KEYS), digest_size=16
        ).hexdigest()


def row_hash(record: dict[str, Any], fields: Iterable[str], compare_as: Mapping[str, CompareAs] | None = None) -> str:
    """`RowHasher(fields, compare_as)(record)`, for one record."""
    return RowHasher(fields, compare_as)(record)
