"""The CLI's output: a rich table for people, or JSON (`--json`) for scripts; the same rows either way."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")
errors = Console(stderr=True)


def table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Table:
    columns = list(columns or (rows[0].keys() if rows else []))
    result = Table(title=title)
    for name in columns:
        numeric = any(isinstance(row.get(name), int | float) and not isinstance(row.get(name), bool) for row in rows)
        result.add_column(name.replace("_", " "), justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        result.add_row(*(_cell(row.get(name)) for name in columns))
    return result


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if v) or "-"
    text = str(value)
    if _ISO_UTC.fullmatch(text):  # 2026-11-24T06:09:28+00:00 -> 2026-11-24 06:09:28: narrower, still UTC
        return text[:19].replace("T", " ")
    return text


def show(title: str, rows: Sequence[dict[str, Any]], *, as_json: bool, columns: Sequence[str] | None = None) -> None:
    if as_json:
        print(json.dumps(list(rows), default=str))
    elif rows:
        console.print(table(title, rows, columns))
    else:
        console.print(f"{title}: none")


def show_one(title: str, row: dict[str, Any] | None, *, as_json: bool) -> None:
    """A single record as a two-column table (field, value), or JSON (`null` when there is none)."""
    if as_json:
        print(json.dumps(row, default=str))
    elif row is None:
        console.print(f"{title}: none")
    else:
        console.print(table(title, [{"field": k, "value": _cell(v)} for k, v in row.items()]))
