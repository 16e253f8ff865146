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
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prefect_restful_etl.tasks.engine.http.paths import get_path

CursorType = Literal["datetime", "int", "str"]
CursorValue = datetime | int | str


class Incremental(BaseModel):
    """How a job extracts only what changed: the cursor field, its type and the query parameters."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    cursor_field: str = Field(min_length=1, description="Dotted path of the cursor in each record.")
    cursor_type: CursorType = "datetime"
    initial_value: str | int | None = Field(default=None, description="The watermark of a first or full run.")
    param: str | None = Field(default=None, description="Query parameter carrying the watermark.")
    end_param: str | None = Field(default=None, description="Query parameter carrying the run's start time.")
    lookback: timedelta = Field(default=timedelta(0), description="Seconds or ISO 8601 duration (PT5M).")
    inclusive: bool = Field(default=True, description="The API returns records >= the watermark.")
    datetime_format: str | None = Field(default=None, description="strftime for parameters; ISO 8601 if unset.")
    max_keys: int = Field(default=1000, ge=0, description="Natural keys remembered at the watermark.")

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
        return self


def parse_cursor(value: Any, cursor_type: CursorType) -> CursorValue:
    """The typed value: aware UTC datetimes (from ISO strings with Z, an offset or none, or epoch numbers)."""
    if cursor_type == "str":
        return str(value)
    if isinstance(value, bool):
        raise ValueError(f"a {cursor_type} cursor cannot be a boolean")
    if cursor_type == "int":
        return int(value)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_cursor(value: CursorValue) -> str | int:
    """The stored form: ISO 8601 in UTC with `Z` for datetimes."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


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
        self._start_keys = frozenset(str(k) for k in keys_at_value)
        self._max: CursorValue | None = self._start
        self._max_keys: set[str] = set(self._start_keys)
        self._end = (now or datetime.now(UTC)).astimezone(UTC)
        self.dropped = 0  # already extracted at the watermark
        self.unreadable = 0  # no cursor, or one that does not parse: admitted, but never moves the watermark

    @property
    def value(self) -> str | None:
        """The highest cursor value seen so far, in its stored form (ISO 8601 UTC for datetimes)."""
        return None if self._max is None else str(format_cursor(self._max))

    @property
    def keys_at_value(self) -> list[str]:
        """Natural keys of the records whose cursor equals `value` exactly (at most `max_keys`)."""
        return sorted(self._max_keys)

    def request_params(self) -> dict[str, Any]:
        """The query parameters for this run: the watermark less the lookback, and the end if configured."""
        params: dict[str, Any] = {}
        if self.config.param and self._start is not None:
            params[self.config.param] = self._format_param(self._minus_lookback(self._start))
        if self.config.end_param:
            params[self.config.end_param] = self._format_param(self._end)
        return params

    def admit(self, record: dict[str, Any], key: str | None = None) -> bool:
        """Note the record's cursor; False when the record (by natural `key`) was extracted at the watermark."""
        try:
            value = parse_cursor(get_path(record, self.config.cursor_field), self.config.cursor_type)
        except (TypeError, ValueError, OverflowError, OSError):
            self.unreadable += 1
            return True
        if self.config.inclusive and value == self._start and key is not None and key in self._start_keys:
            self.dropped += 1
            return False
        self._advance(value, key)
        return True

    def _advance(self, value: CursorValue, key: str | None) -> None:
        if self._max is None or value > self._max:  # type: ignore[operator]  # one cursor type per run
            self._max, self._max_keys = value, set()
        if value == self._max and key is not None and len(self._max_keys) < self.config.max_keys:
            self._max_keys.add(key)

    def _minus_lookback(self, value: CursorValue) -> CursorValue:
        if isinstance(value, datetime):
            return value - self.config.lookback
        if isinstance(value, int):
            return value - int(self.config.lookback.total_seconds())
        return value

    def _format_param(self, value: CursorValue) -> str | int:
        if isinstance(value, datetime) and self.config.datetime_format:
            return value.strftime(self.config.datetime_format)
        return format_cursor(value)
