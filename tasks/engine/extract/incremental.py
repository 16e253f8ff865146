"""Incremental extracts: request parameters from the stored watermark, and the next watermark from records.

Records with a cursor field (`updated_at`) arrive from an API asked for those changed since the watermark
(`GET /customers?updated_since=2026-03-01T10:00:00Z`), configured as

```json
{"cursor_field": "meta.updated_at", "cursor_type": "datetime", "param": "updated_since",
 "lookback": "PT5M", "initial_value": "2020-01-01T00:00:00Z"}
```

Most APIs compare greater-or-equal, so the records at exactly the watermark come back on every run. To
drop those already extracted, the watermark row stores, next to the value, the natural keys of the records
whose cursor equals that value exactly (at most `max_keys`): value `2026-03-01T10:00:00Z`, keys_at_value
`["c-17", "c-42"]`. A record at the watermark whose key is listed is dropped; one whose key is not (new, or
beyond the cap) is kept. Keeping one too many is harmless, since a load diffs by natural key; dropping one
too many would lose a change, so anything not certainly seen is kept. Records older than the watermark
(requested through `lookback`, for late-committed changes) are always kept and never move the watermark.

The watermark keeps the source's own text: many APIs compare cursors as strings, where
`2030-01-01T00:00:00.000Z` re-written as `2030-01-01T00:00:00Z` sorts after `2030-01-01T00:00:00.500Z`. So the
value stored and sent back is the text the record held (or `datetime_format` applied, when one is declared);
a value the product works out itself (the watermark less the lookback, the run's end) is written the way
the source writes its cursors: the same separator, fraction digits and zone. Comparisons inside the product
are by value: instants for datetimes, numbers for ints.

An API that filters by expression takes the watermark inside a parameter's value: `template` writes it there,
escaped for its place (`escape`), so a quote in a cursor value cannot end the string early:

```json
{"cursor_field": "updated", "cursor_type": "str", "param": "filter",
 "template": "(updated >= \"{watermark}\")", "escape": "backslash"}
```
sends `GET /api/collections/customers/records?filter=(updated >= "2026-03-01 10:00:00.123Z")`; a first or full run
sends no filter at all. `{end}` in a template stands for the run's start time (as `end_param` sends it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.moments import format_datetime

CursorType = Literal["datetime", "int", "str"]
CursorValue = datetime | int | str


class Incremental(BaseModel):
    """How a job extracts only what changed: the cursor field, its type and the query parameters.

    ```
    GET /customers?updated_since=2026-03-01T09:55:00Z        (the watermark less a lookback of PT5M)
    200 {"data": [{"id": 17, "meta": {"updated_at": "2026-03-01T10:04:11Z"}}, ...]}
    ```
    The next run's watermark is the newest `meta.updated_at` read, as the source wrote it; records at exactly the
    watermark that the last run read are left out by their natural keys. A first or full run sends no filter
    (or `initial_value`). With `template`, the watermark goes inside an expression:
    `GET /records?filter=(updated >= "2026-03-01 10:00:00.123Z")`.
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {"cursor_field": "meta.updated_at", "param": "updated_since", "lookback": "PT5M"},
                {
                    "cursor_field": "updated",
                    "cursor_type": "str",
                    "param": "filter",
                    "template": '(updated >= "{watermark}")',
                    "escape": "backslash",
                },
            ]
        },
    )

    cursor_field: str = Field(min_length=1, description="Dotted path of the cursor in each record.")
    cursor_type: CursorType = Field(
        default="datetime", description="How cursors compare: as instants, as integers, or as text."
    )
    initial_value: str | int | None = Field(default=None, description="The watermark of a first or full run.")
    param: str | None = Field(default=None, description="Query parameter carrying the watermark.")
    end_param: str | None = Field(default=None, description="Query parameter carrying the run's start time.")
    lookback: timedelta = Field(default=timedelta(0), description="Seconds or ISO 8601 duration (PT5M).")
    inclusive: bool = Field(default=True, description="The API returns records >= the watermark.")
    datetime_format: str | None = Field(
        default=None,
        description="strftime for parameters (`%3f`: milliseconds); unset: the text the source gave, written its way.",
    )
    max_keys: int = Field(default=1000, ge=0, description="Natural keys remembered at the watermark.")
    template: str | None = Field(
        default=None,
        description='The value of `param` around the watermark: `(updated >= "{watermark}")`, '
        "`updated_at>'{watermark}'`.",
    )
    escape: Literal["none", "backslash", "sql"] = Field(
        default="none",
        description="How the watermark is escaped inside the template: none, backslash (before \\ \" and '), "
        "or sql (a ' doubled).",
    )

    @field_validator("lookback", mode="before")
    @classmethod
    def _plain_duration(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        date_part = value.upper().split("T")[0] if isinstance(value, str) else ""
        if date_part.startswith("P") and ("Y" in date_part or "M" in date_part):
            raise ValueError("years and months have no fixed length: write days (P30D), or PT1M for a minute")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.lookback < timedelta(0):
            raise ValueError("lookback must not be negative")
        if self.lookback and self.cursor_type == "str":
            raise ValueError("lookback needs a datetime or int cursor")
        if self.end_param and self.cursor_type != "datetime":
            raise ValueError("end_param needs a datetime cursor (it sends the run's start time)")
        if self.initial_value is not None:
            parse_cursor(self.initial_value, self.cursor_type)
        if self.template is not None and (self.param is None or "{watermark}" not in self.template):
            raise ValueError("template needs param (the parameter it is the value of) and {watermark} in its text")
        return self


_EPOCH = re.compile(r"^-?\d+(\.\d+)?$")
# The parts of an ISO 8601 text that say how it is written: date, separator, time, fraction, zone.
_ISO = re.compile(r"^(\d{4}-\d\d-\d\d)(?:([Tt ])(\d\d:\d\d(?::\d\d)?)(?:[.,](\d+))?(Z|z|[+-]\d\d:?\d\d)?)?$")


def escape_value(text: str, escape: str) -> str:
    """`text` ready to stand inside a quoted string of a filter expression."""
    if escape == "backslash":
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
    if escape == "sql":
        return text.replace("'", "''")
    return text


def parse_cursor(value: Any, cursor_type: CursorType) -> CursorValue:
    """The typed value: aware UTC datetimes (from ISO strings with Z, an offset or none, or epoch numbers)."""
    if type(value) is str and cursor_type == "datetime" and not _is_epoch(value):  # once per record: the usual
        moment = datetime.fromisoformat(value)
        zone = moment.tzinfo
        return moment if zone is UTC else moment.replace(tzinfo=UTC) if zone is None else moment.astimezone(UTC)
    if cursor_type == "str":
        return str(value)
    if isinstance(value, bool):
        raise ValueError(f"a {cursor_type} cursor cannot be a boolean")
    if cursor_type == "int":
        return int(value)
    if isinstance(value, str) and _is_epoch(value):
        value = float(value)  # epoch seconds, stored as the text the record gave
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _is_epoch(text: str) -> bool:
    """Epoch seconds as text (`1772359200`, `1772359200.5`); an ISO date's dash after its year says no at once,
    which spares the pattern a match for nearly every cursor (read once per record)."""
    text = text.strip()
    return "-" not in text[1:] and _EPOCH.match(text) is not None


def format_cursor(value: CursorValue) -> str | int:
    """ISO 8601 in UTC with `Z` for datetimes: for a value no source text tells the form of."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def write_like(template: str | int | float, moment: datetime) -> str | int | float:
    """`moment` written the way `template` (a cursor text of the source) writes its instant.

    `2026-03-01T10:00:00.000Z` gives `...HH:MM:SS.fffZ`, `2026-03-01 10:00:00+01:00` a space and that offset,
    `1772359200` epoch seconds. Digits beyond the template's are cut, never rounded up: the value is a lower
    bound of what to read, and an earlier bound only reads more.
    """
    if isinstance(template, (int, float)) or _EPOCH.match(str(template).strip()):
        seconds = moment.timestamp()
        return int(seconds // 1) if isinstance(template, int) or "." not in str(template) else seconds
    parts = _ISO.match(str(template).strip())
    if parts is None:
        return format_cursor(moment)
    _day, separator, clock, fraction, zone = parts.groups()
    local = moment.astimezone(_zone(zone))
    if separator is None:
        return local.date().isoformat()
    text = local.strftime(f"%Y-%m-%d{separator}%H:%M" + (":%S" if clock.count(":") == 2 else ""))
    if fraction:
        text += "." + f"{local.microsecond:06d}".ljust(len(fraction), "0")[: len(fraction)]
    return text + (zone or "")


def _zone(zone: str | None) -> timezone:
    if zone is None or zone in "Zz":
        return UTC
    sign, digits = (-1 if zone[0] == "-" else 1), zone[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


class Cursor:
    """One incremental run: its request parameters, which records to admit, and the watermark it reached.

    `value` and `keys_at_value` are the stored watermark going in (None and [] on a first or full run) and
    the watermark to store coming out, once the batch has succeeded.
    """

    def __init__(
        self,
        config: Incremental,
        value: str | int | None = None,
        keys_at_value: Iterable[str] = (),
        *,
        now: datetime | None = None,
    ) -> None:
        self.config = config
        if value is None:
            value, keys_at_value = config.initial_value, ()
        self._start = None if value is None else parse_cursor(value, config.cursor_type)
        self._start_text: Any = value  # the watermark as the source wrote it: what goes back on the wire
        self._start_keys = frozenset(str(k) for k in keys_at_value)
        self._max: CursorValue | None = self._start
        self._max_text: Any = value
        self._max_keys: set[str] = set(self._start_keys)
        self._end = (now or datetime.now(UTC)).astimezone(UTC)
        self.dropped = 0  # already extracted at the watermark
        self.unreadable = 0  # no cursor, or one that does not parse: admitted, but never moves the watermark

    @property
    def value(self) -> str | None:
        """The highest cursor value seen so far, as the source wrote it (the record's own text)."""
        return None if self._max_text is None else str(self._max_text)

    @property
    def keys_at_value(self) -> list[str]:
        """Natural keys of the records whose cursor equals `value` exactly (at most `max_keys`)."""
        return sorted(self._max_keys)

    def request_params(self) -> dict[str, Any]:
        """The query parameters for this run: the watermark (as the source wrote it) less the lookback, and
        the end if configured."""
        params: dict[str, Any] = {}
        if self.config.param and self._start is not None:
            if self.config.lookback or self.config.datetime_format:
                value = self._format_param(self._minus_lookback(self._start))
            else:
                value = self._start_text
            params[self.config.param] = value if self.config.template is None else self._templated(value)
        if self.config.end_param:
            params[self.config.end_param] = self._format_param(self._end)
        return params

    def admit(self, record: dict[str, Any], key: str | None = None) -> bool:
        """Note the record's cursor; False when the record (by natural `key`) was extracted at the watermark."""
        raw = get_path(record, self.config.cursor_field)
        try:
            value = parse_cursor(raw, self.config.cursor_type)
        except (TypeError, ValueError, OverflowError, OSError):
            self.unreadable += 1
            return True
        if self.config.inclusive and value == self._start and key is not None and key in self._start_keys:
            self.dropped += 1
            return False
        self._advance(value, raw, key)
        return True

    def _advance(self, value: CursorValue, raw: Any, key: str | None) -> None:
        if self._max is None or value > self._max:  # type: ignore[operator]  # one cursor type per run
            self._max, self._max_text, self._max_keys = value, raw, set()
        if value == self._max and key is not None and len(self._max_keys) < self.config.max_keys:
            self._max_keys.add(key)

    def _minus_lookback(self, value: CursorValue) -> CursorValue:
        if isinstance(value, datetime):
            return value - self.config.lookback
        if isinstance(value, int):
            return value - int(self.config.lookback.total_seconds())
        return value

    def _templated(self, watermark: str | int | float) -> str:
        """The template with the watermark (and the run's start) in place, each escaped for its place."""
        text = self.config.template or ""
        end = str(self._format_param(self._end))
        # One pass over the template, so that a value holding "{end}" is never replaced in its turn.
        parts = {
            "{watermark}": escape_value(str(watermark), self.config.escape),
            "{end}": escape_value(end, self.config.escape),
        }
        return re.sub(r"\{watermark\}|\{end\}", lambda match: parts[match.group(0)], text)

    def _format_param(self, value: CursorValue) -> str | int | float:
        if isinstance(value, datetime) and self.config.datetime_format:
            return format_datetime(value, self.config.datetime_format)
        if isinstance(value, datetime) and self._start_text is not None:
            return write_like(self._start_text, value)
        return format_cursor(value)
