"""Type 2's validity fields, and how a destination row's current flag and version number are read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.exceptions import DestinationDataError


class History(BaseModel):
    """Type 2's validity fields, held by every version of a key in the destination.

    Key 7 after its email changed on 1 March (the first version expired, the second current):
    ```json
    {"id": "AC-1", "external_id": "7", "email": "old@x.io", "valid_from": "2026-01-01T00:00:00.000000Z",
     "valid_to": "2026-03-01T00:00:00.000000Z", "is_current": false, "version": 1}
    {"id": "AC-9", "external_id": "7", "email": "new@x.io", "valid_from": "2026-03-01T00:00:00.000000Z",
     "valid_to": null, "is_current": true, "version": 2}
    ```
    Intervals are half-open, [valid_from, valid_to): a version ends exactly where the next begins.
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {"valid_from": "valid_from", "valid_to": "valid_to", "current": "is_current", "version": "version"},
                {"valid_from": "start_date", "valid_to": "end_date", "current": None, "open_end": "9999-12-31"},
            ]
        },
    )

    valid_from: str = Field(default="valid_from", description="Where a version's start (the batch's time) goes.")
    valid_to: str = Field(default="valid_to", description="Where a version's end goes; `open_end` while current.")
    current: str | None = Field(
        default="is_current",
        description='A current flag (true/false, 1/0, "yes"/"no" '
        "...); without one, the current version is the one whose valid_to is `open_end`.",
    )
    version: str | None = Field(
        default="version", description="1, 2, 3 ... per key (numbers or numeric text); omit if the API has none."
    )
    open_end: Any = Field(default=None, description='valid_to of a current version: null or a far date "9999-12-31".')

    def fields(self) -> set[str]:
        return {f for f in (self.valid_from, self.valid_to, self.current, self.version) if f}

    def is_current(self, row: dict[str, Any]) -> bool:
        """The row's current flag, in any common encoding; one that reads as neither raises, since taking it for
        false would leave the key with no current version and every run would insert another."""
        if not self.current:
            return row.get(self.valid_to) == self.open_end
        value = row.get(self.current)
        flag = _flag(value)
        if flag is None:
            raise DestinationDataError(self.current, f"{_shown(value)} is not a current flag (true/false, 1/0, yes/no)")
        return flag

    def number(self, row: dict[str, Any]) -> int:
        """The row's version number, as a number or as numeric text; 0 when the API keeps none."""
        if not self.version:
            return 0
        value = row.get(self.version)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        raise DestinationDataError(self.version, f"{_shown(value)} is not a version number")

    def opened(self, at: str, number: int) -> dict[str, Any]:
        """The validity fields of a new current version."""
        fields: dict[str, Any] = {self.valid_from: at, self.valid_to: self.open_end}
        if self.current:
            fields[self.current] = True
        if self.version:
            fields[self.version] = number
        return fields

    def closed(self, at: str) -> dict[str, Any]:
        """The whole body of the PATCH that expires a version: only the validity fields change."""
        return {self.valid_to: at, **({self.current: False} if self.current else {})}


_TEXT_FLAGS = {
    **dict.fromkeys(("1", "true", "t", "yes", "y"), True),
    **dict.fromkeys(("0", "false", "f", "no", "n"), False),
}


def _flag(value: Any) -> bool | None:
    """True, 1, "1", "true", "t", "yes" (any case) and their opposites; None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {1: True, 0: False}.get(value)
    if isinstance(value, str):
        return _TEXT_FLAGS.get(value.strip().lower())
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."
