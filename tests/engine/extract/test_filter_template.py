"""Incremental filters written as expressions: the watermark inside a parameter's value, escaped for its place."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from prefect_restful_etl.tasks.engine.extract.incremental import Cursor, Incremental, escape_value
from prefect_restful_etl.tasks.engine.moments import format_datetime

NOW = datetime(2026, 3, 2, 8, 30, 0, 456789, tzinfo=UTC)


@pytest.mark.parametrize(
    "config,watermark,expected",
    [
        pytest.param(
            {"cursor_field": "updated", "param": "filter", "template": '(updated >= "{watermark}")',
             "datetime_format": "%Y-%m-%d %H:%M:%S.%3fZ"},
            "2026-03-01T10:00:00.123Z",
            {"filter": '(updated >= "2026-03-01 10:00:00.123Z")'},
            id="pocketbase-filter-milliseconds",
        ),
        pytest.param(
            {"cursor_field": "updated_at", "cursor_type": "str", "param": "where",
             "template": "updated_at>'{watermark}'", "escape": "sql"},
            "o'clock",
            {"where": "updated_at>'o''clock'"},
            id="sql-quote-doubled",
        ),
        pytest.param(
            {"cursor_field": "v", "cursor_type": "str", "param": "filter", "template": 'v >= "{watermark}"',
             "escape": "backslash"},
            'a"b\\c',
            {"filter": 'v >= "a\\"b\\\\c"'},
            id="backslash-escapes-quote-and-backslash",
        ),
        pytest.param(
            {"cursor_field": "updated", "param": "filter",
             "template": '(updated >= "{watermark}" && updated < "{end}")', "datetime_format": "%Y-%m-%dT%H:%M:%SZ"},
            "2026-03-01T10:00:00Z",
            {"filter": '(updated >= "2026-03-01T10:00:00Z" && updated < "2026-03-02T08:30:00Z")'},
            id="watermark-and-end",
        ),
        pytest.param(
            {"cursor_field": "v", "cursor_type": "str", "param": "filter", "template": 'v >= "{watermark}"'},
            "{end}",
            {"filter": 'v >= "{end}"'},
            id="a-value-holding-a-placeholder-is-not-replaced-again",
        ),
    ],
)  # fmt: skip
def test_the_watermark_is_written_into_the_template(config: dict, watermark: str, expected: dict) -> None:
    cursor = Cursor(Incremental.model_validate(config), value=watermark, now=NOW)
    assert cursor.request_params() == expected


def test_a_first_run_sends_no_filter() -> None:
    config = Incremental(cursor_field="updated", param="filter", template='(updated >= "{watermark}")')
    assert Cursor(config, now=NOW).request_params() == {}


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"cursor_field": "u", "template": "u > {watermark}"}, id="no-param"),
        pytest.param({"cursor_field": "u", "param": "filter", "template": "u > 1"}, id="no-placeholder"),
    ],
)
def test_a_template_without_its_parameter_or_placeholder_is_refused(config: dict) -> None:
    with pytest.raises(ValidationError, match="template needs param"):
        Incremental.model_validate(config)


def test_escapes_and_milliseconds() -> None:
    assert escape_value("it's", "none") == "it's"
    assert format_datetime(NOW, "%Y-%m-%d %H:%M:%S.%3fZ") == "2026-03-02 08:30:00.456Z"
    assert format_datetime(NOW.replace(tzinfo=None), "%H:%M:%S.%fZ") == "08:30:00.456789Z"
