from __future__ import annotations

import pytest

from prefect_restful_etl.tasks.engine.scd import Current, natural_key, plan_type1, row_hash


@pytest.mark.parametrize(
    "record,fields,expected",
    [
        ({"id": 42}, ["id"], "42"),
        ({"id": 42, "currency": "EUR"}, ["id", "currency"], "42|EUR"),
        ({"meta": {"id": "a"}}, ["meta.id"], "a"),
        ({"id": None}, ["id"], ""),
    ],
    ids=["single", "composite", "nested", "null"],
)
def test_natural_key(record: dict, fields: list[str], expected: str) -> None:
    assert natural_key(record, fields) == expected


def test_row_hash_sees_only_compared_fields() -> None:
    a = {"name": "Acme", "email": "a@x.io", "loaded_at": "monday"}
    b = {"name": "Acme", "email": "a@x.io", "loaded_at": "tuesday"}
    assert row_hash(a, ["name", "email"]) == row_hash(b, ["name", "email"])
    assert row_hash(a, ["name", "email", "loaded_at"]) != row_hash(b, ["name", "email", "loaded_at"])


def test_row_hash_tells_types_apart() -> None:
    assert row_hash({"v": 1}, ["v"]) != row_hash({"v": "1"}, ["v"])
    assert row_hash({"v": None}, ["v"]) != row_hash({"v": ""}, ["v"])


@pytest.mark.parametrize(
    "current,action",
    [(None, "insert"), (Current("AC-1", "old"), "update"), (Current("AC-1", "same"), "unchanged")],
    ids=["new-key", "changed", "same"],
)
def test_plan_type1(current: Current | None, action: str) -> None:
    change = plan_type1({"external_id": "1"}, "1", "same", current)
    assert change.action == action
    assert change.destination_id == (current.id if current else None)
