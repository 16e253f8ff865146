"""Datetimes written as text in a declared format: strftime, plus `%3f` for milliseconds, which many APIs use
(`2026-03-01 10:00:00.123Z`) and strftime lacks."""

from __future__ import annotations

from datetime import UTC, datetime


def format_datetime(moment: datetime, fmt: str) -> str:
    """`moment` in UTC (a naive one is taken as UTC) as `fmt`: strftime's codes, `%3f` for milliseconds."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if "%3f" in fmt:
        fmt = fmt.replace("%3f", f"{moment.microsecond // 1000:03d}")
    return moment.strftime(fmt)
