"""Incremental config and the Cursor: parameters from the watermark, the max cursor, and the dedupe at it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from prefect_restful_etl.tasks.engine.extract.incremental import Cursor, Incremental, format_cursor, parse_cursor

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def config(**fields: Any) -> Incremental:
    return Incremental(**{"cursor_field": "updated_at", "param": "updated_since", **fields})


@pytest.mark.parametrize(
    "lookback,expected",
    [
        pytest.param(300, timedelta(minutes=5), id="seconds"),
        pytest.param("300", timedelta(minutes=5), id="seconds-as-text"),
        pytest.param(1.5, timedelta(seconds=1.5), id="fractional-seconds"),
        pytest.param("PT5M", timedelta(minutes=5), id="iso-minutes"),
        pytest.param("P1DT2H", timedelta(days=1, hours=2), id="iso-days-hours"),
        pytest.param("P2W", timedelta(weeks=2), id="iso-weeks"),
    ],
)
def test_lookback_is_seconds_or_an_iso_duration(lookback: Any, expected: timedelta) -> None:
    assert config(lookback=lookback).lookback == expected


@pytest.mark.parametrize(
    "fields,message",
    [
        pytest.param({"lookback": "P1M"}, "years and months", id="months-are-ambiguous"),
        pytest.param({"lookback": "P1Y"}, "years and months", id="years-are-ambiguous"),
        pytest.param({"lookback": -5}, "negative", id="negative"),
        pytest.param({"lookback": 5, "cursor_type": "str"}, "datetime or int", id="lookback-on-str"),
        pytest.param({"end_param": "until", "cursor_type": "int"}, "end_param", id="end-param-on-int"),
        pytest.param({"initial_value": "yesterday"}, "Invalid isoformat", id="bad-initial-datetime"),
        pytest.param({"initial_value": "x", "cursor_type": "int"}, "invalid literal", id="bad-initial-int"),
        pytest.param({"cursor_field": ""}, "at least 1", id="empty-cursor-field"),
    ],
)
def test_bad_configs_fail_at_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**fields)


@pytest.mark.parametrize(
    "raw,cursor_type,expected",
    [
        pytest.param("2026-03-01T10:00:00Z", "datetime", datetime(2026, 3, 1, 10, tzinfo=UTC), id="zulu"),
        pytest.param("2026-03-01T12:00:00+02:00", "datetime", datetime(2026, 3, 1, 10, tzinfo=UTC), id="offset"),
        pytest.param("2026-03-01T10:00:00", "datetime", datetime(2026, 3, 1, 10, tzinfo=UTC), id="naive-is-utc"),
        pytest.param("2026-03-01", "datetime", datetime(2026, 3, 1, tzinfo=UTC), id="date-only"),
        pytest.param(1772359200, "datetime", datetime(2026, 3, 1, 10, tzinfo=UTC), id="epoch-seconds"),
        pytest.param(" 1772359200 ", "datetime", datetime(2026, 3, 1, 10, tzinfo=UTC), id="epoch-as-text"),
        pytest.param("-1.5", "datetime", datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC), id="negative-epoch"),
        pytest.param(
            "2026-03-01T10:00:00.250Z",
            "datetime",
            datetime(2026, 3, 1, 10, 0, 0, 250000, tzinfo=UTC),
            id="milliseconds",
        ),
        pytest.param("2026-03-01 11:00:00+01:00", "datetime", datetime(2026, 3, 1, 10, tzinfo=UTC), id="space"),
        pytest.param("42", "int", 42, id="int-from-text"),
        pytest.param(7, "str", "7", id="str"),
    ],
)
def test_parse_cursor_gives_comparable_values(raw: Any, cursor_type: Any, expected: Any) -> None:
    assert parse_cursor(raw, cursor_type) == expected


def test_format_cursor_stores_utc_with_z() -> None:
    assert format_cursor(datetime(2026, 3, 1, 10, 0, 0, 500000, tzinfo=UTC)) == "2026-03-01T10:00:00.500000Z"


@pytest.mark.parametrize(
    "fields,value,expected",
    [
        pytest.param({}, None, {}, id="first-run-without-initial-value"),
        pytest.param(
            {"initial_value": "2020-01-01T00:00:00Z"}, None, {"updated_since": "2020-01-01T00:00:00Z"}, id="initial"
        ),
        pytest.param(
            {}, "2026-03-01T10:00:00+01:00", {"updated_since": "2026-03-01T10:00:00+01:00"}, id="stored-text-as-given"
        ),
        pytest.param(
            {}, "2030-01-01T00:00:00.000Z", {"updated_since": "2030-01-01T00:00:00.000Z"}, id="milliseconds-kept"
        ),
        pytest.param(
            {"lookback": 1}, "2030-01-01T00:00:00.000Z", {"updated_since": "2029-12-31T23:59:59.000Z"}, id="ms-lookback"
        ),
        pytest.param(
            {"lookback": 90}, "2030-01-01 00:00:00+01:00", {"updated_since": "2029-12-31 23:58:30+01:00"}, id="offset"
        ),
        pytest.param({"lookback": 60}, "1772359200", {"updated_since": 1772359140}, id="epoch-text-lookback"),
        pytest.param({"lookback": "P1D"}, "2026-03-01", {"updated_since": "2026-02-28"}, id="date-only-lookback"),
        pytest.param(
            {"lookback": "PT5M"}, "2026-03-01T10:00:00Z", {"updated_since": "2026-03-01T09:55:00Z"}, id="lookback"
        ),
        pytest.param({"cursor_type": "int", "lookback": 60}, "1000", {"updated_since": 940}, id="int-lookback"),
        pytest.param({"cursor_type": "str"}, "v-9", {"updated_since": "v-9"}, id="str"),
        pytest.param(
            {"datetime_format": "%Y-%m-%d %H:%M"},
            "2026-03-01T10:00:00Z",
            {"updated_since": "2026-03-01 10:00"},
            id="datetime-format",
        ),
        pytest.param(
            {"end_param": "updated_before"},
            "2026-03-01T10:00:00Z",
            {"updated_since": "2026-03-01T10:00:00Z", "updated_before": "2026-03-02T12:00:00Z"},
            id="end-param-is-now",
        ),
        pytest.param({"param": None}, "2026-03-01T10:00:00Z", {}, id="no-param-client-side-only"),
    ],
)
def test_request_params(fields: dict[str, Any], value: str | None, expected: dict[str, Any]) -> None:
    assert Cursor(config(**fields), value, now=NOW).request_params() == expected


def test_max_cursor_compares_instants_not_text() -> None:
    cursor = Cursor(config(), now=NOW)
    for stamp in ["2026-03-01T10:30:00+02:00", "2026-03-01T09:00:00Z", "2026-03-01T08:59:59.999Z"]:
        assert cursor.admit({"updated_at": stamp})
    assert cursor.value == "2026-03-01T09:00:00Z"  # 10:30+02:00 is 08:30Z, textually larger but earlier


def test_the_watermark_keeps_the_text_the_source_gave() -> None:
    cursor = Cursor(config(), now=NOW)
    for stamp in ["2030-01-01T00:00:00.000Z", "2029-12-31T23:59:59.999Z", "2030-01-01T00:00:00Z"]:
        cursor.admit({"updated_at": stamp})
    assert cursor.value == "2030-01-01T00:00:00.000Z"  # the first text of the highest instant, never re-rendered
    assert Cursor(config(), cursor.value, now=NOW).request_params() == {"updated_since": "2030-01-01T00:00:00.000Z"}


def test_an_epoch_cursor_is_stored_as_the_source_wrote_it() -> None:
    cursor = Cursor(config(), "1772359200", now=NOW)
    assert cursor.admit({"updated_at": 1772359260.5}) and cursor.value == "1772359260.5"
    assert Cursor(config(), cursor.value, now=NOW).request_params() == {"updated_since": "1772359260.5"}


def test_nested_cursor_field_and_int_cursor() -> None:
    cursor = Cursor(config(cursor_field="meta.seq", cursor_type="int"), "5")
    kept = [r for r in ({"meta": {"seq": n}} for n in (3, 12, 9)) if cursor.admit(r)]
    assert len(kept) == 3 and cursor.value == "12"


def records(*pairs: tuple[str, str]) -> list[tuple[dict[str, Any], str]]:
    return [({"id": key, "updated_at": stamp}, key) for key, stamp in pairs]


T0, T1 = "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"

DEDUPE = [
    pytest.param(
        {},
        (T0, ["a", "b"]),
        records(("a", T0), ("c", T0), ("b", T1)),
        ["c", "b"],
        (T1, ["b"]),
        id="drops-seen-at-watermark",
    ),
    pytest.param(
        {}, (T0, ["a"]), records(("a", T0), ("c", T0)), ["c"], (T0, ["a", "c"]), id="same-watermark-more-keys"
    ),
    pytest.param({}, (T0, ["a"]), records(("a", T0)), [], (T0, ["a"]), id="nothing-new-keeps-watermark"),
    pytest.param(
        {"lookback": 3600},
        (T1, ["b"]),
        records(("a", T0), ("b", T1)),
        ["a"],
        (T1, ["b"]),
        id="lookback-records-kept-never-move-watermark",
    ),
    pytest.param(
        {"inclusive": False}, (T0, ["a"]), records(("a", T0)), ["a"], (T0, ["a"]), id="strictly-greater-api-drops-none"
    ),
    pytest.param(
        {"max_keys": 2},
        (None, []),
        records(("a", T1), ("b", T1), ("c", T1)),
        ["a", "b", "c"],
        (T1, ["a", "b"]),
        id="keys-capped",
    ),
    pytest.param(
        {"initial_value": T0}, (None, []), records(("a", T0), ("b", T1)), ["a", "b"], (T1, ["b"]), id="first-run"
    ),
]


@pytest.mark.parametrize("fields,stored,incoming,kept,after", DEDUPE)
def test_records_at_the_watermark_seen_last_time_are_dropped(
    fields: dict[str, Any],
    stored: tuple[str | None, list[str]],
    incoming: list[tuple[dict[str, Any], str]],
    kept: list[str],
    after: tuple[str, list[str]],
) -> None:
    cursor = Cursor(config(**fields), stored[0], stored[1], now=NOW)
    assert [r["id"] for r, key in incoming if cursor.admit(r, key)] == kept
    assert (cursor.value, cursor.keys_at_value) == after
    assert cursor.dropped == len(incoming) - len(kept)


def test_a_record_without_a_usable_cursor_is_admitted_but_moves_nothing() -> None:
    cursor = Cursor(config(), T0, ["a"], now=NOW)
    for record in ({"id": "x"}, {"id": "y", "updated_at": "not a date"}, {"id": "z", "updated_at": True}):
        assert cursor.admit(record, record["id"])
    assert cursor.unreadable == 3 and (cursor.value, cursor.keys_at_value) == (T0, ["a"])


def test_a_record_without_a_key_is_never_dropped() -> None:
    cursor = Cursor(config(), T0, ["a"], now=NOW)
    assert cursor.admit({"updated_at": T0}, None)
