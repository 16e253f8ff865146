"""Canonical values: a destination's re-spelling of a value is no change; a change of meaning is."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from prefect_restful_etl.tasks.engine.load.canonical import CompareAs, canonical, canonical_decimal, row_hash


def test_row_hash_sees_only_compared_fields() -> None:
    a = {"name": "Acme", "email": "a@x.io", "loaded_at": "monday"}
    b = {"name": "Acme", "email": "a@x.io", "loaded_at": "tuesday"}
    assert row_hash(a, ["name", "email"]) == row_hash(b, ["name", "email"])
    assert row_hash(a, ["name", "email", "loaded_at"]) != row_hash(b, ["name", "email", "loaded_at"])


@pytest.mark.parametrize(
    "staged,stored,compare_as",
    [
        (0.0, 0, None),
        (2, 2.0, None),
        (-0.0, 0, None),
        ("2026-03-01T00:00:00Z", "2026-03-01T01:00:00.000+01:00", None),
        ("2026-03-01T00:00:00.000000Z", "2026-03-01 00:00:00+00:00", None),
        ("2026-03-01T00:00:00", "2026-03-01T00:00:00Z", None),  # naive means UTC, as the cast step reads it
        ("2026-03-01T00:00:00.5Z", "2026-02-28T19:00:00.500-05:00", None),
        (None, "<absent>", None),
        ({"a": 1, "b": None}, {"a": 1.0}, None),
        ({"a": 1, "b": {"c": 2}}, {"b": {"c": 2.0}, "a": 1}, None),
        ([1, {"x": None}], [1.0, {}], None),
        ("1234.50", 1234.5, "decimal"),
        ("10", 10.0, "decimal"),
        ("0.10", "0.1", "decimal"),
        (Decimal("5.00"), "5", "decimal"),
        ("-0", 0, "decimal"),
        (None, "<absent>", "decimal"),
    ],
)
def test_a_re_spelling_is_no_change(staged: Any, stored: Any, compare_as: CompareAs | None) -> None:
    forms = {"v": compare_as} if compare_as else None
    row = {} if stored == "<absent>" else {"v": stored}
    assert row_hash({"v": staged}, ["v"], forms) == row_hash(row, ["v"], forms)


@pytest.mark.parametrize(
    "staged,stored,compare_as",
    [
        (1, "1", None),  # text is not a number unless the field is a decimal
        (None, "", None),
        (True, 1, None),
        (False, 0, "decimal"),
        (0.1, 0.10000001, None),
        ("2026-03-01T00:00:00Z", "2026-03-01T00:00:01Z", None),
        ("2026-03-01T00:00:00Z", "2026-03-01T00:00:00+01:00", None),
        ("2026-03-01", "2026-03-01T00:00:00Z", None),  # a date is not an instant
        ("1234.50", 1234.51, "decimal"),
        ("2026-03-01T00:00:00Z", "2026-03-01T01:00:00+01:00", "text"),
        ([1, 2], [2, 1], None),
        ({"a": 1}, {"a": 1, "b": 0}, None),
        ("007", 7, None),
    ],
)
def test_a_change_of_meaning_is_a_change(staged: Any, stored: Any, compare_as: CompareAs | None) -> None:
    forms = {"v": compare_as} if compare_as else None
    assert row_hash({"v": staged}, ["v"], forms) != row_hash({"v": stored}, ["v"], forms)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("Acme Ltd", "Acme Ltd"),
        ("2026-13-01T00:00:00Z", "2026-13-01T00:00:00Z"),  # not a date: kept as text
        ("+44 20 7946 0000", "+44 20 7946 0000"),
        (2.0**60, 2.0**60),  # too large for an exact integer: kept a float
        (1.5, 1.5),
    ],
)
def test_canonical_keeps_what_it_cannot_read(value: Any, expected: Any) -> None:
    assert canonical(value) == expected


@pytest.mark.parametrize("value", ["n/a", "", "NaN", "Infinity", [1], {"a": 1}])
def test_a_decimal_field_that_holds_no_finite_number_compares_as_itself(value: Any) -> None:
    assert canonical_decimal(value) == canonical(value)
