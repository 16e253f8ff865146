"""Quality screens: each check on good and bad values, fates, stop, the summary and the screen dimension."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
from pydantic import ValidationError

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, ScreenStop
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, TransformJob
from prefect_restful_etl.tasks.engine.load.keysets import MemoryKeySet, StagedKeySet
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage
from prefect_restful_etl.tasks.engine.transform.lookups import StaticLookup
from prefect_restful_etl.tasks.engine.transform.screens import (
    Fate,
    Screener,
    ScreenFailure,
    ScreenResult,
    ScreenSummary,
    Unique,
    parse_screens,
)


def case_id(value: Any) -> str:
    if isinstance(value, dict) and "check" in value:
        return str(value["check"])
    return json.dumps(value)[:40] if isinstance(value, (dict, list)) else str(value)


async def failures_of(screen: dict[str, Any], record: dict[str, Any]) -> list[ScreenFailure]:
    screener = Screener([{"name": "s", **screen}], lookups={"countries": StaticLookup({"DE": 49})})
    return list((await screener.screen(record)).failures)


@pytest.mark.parametrize(
    "screen,record",
    [
        ({"check": "not_null", "column": "email"}, {"email": "a@b.c"}),
        ({"check": "not_null", "column": "email"}, {"email": ""}),
        ({"check": "not_null", "column": "a.b"}, {"a": {"b": 0}}),
        ({"check": "type", "column": "n", "expected": "int"}, {"n": 3}),
        ({"check": "type", "column": "n", "expected": "number"}, {"n": 3.5}),
        ({"check": "type", "column": "d", "expected": "date"}, {"d": "2024-03-01"}),
        ({"check": "type", "column": "t", "expected": "datetime"}, {"t": "2024-03-01T10:00:00Z"}),
        ({"check": "type", "column": "o", "expected": "object"}, {"o": {}}),
        ({"check": "type", "column": "n", "expected": "int"}, {"n": None}),
        ({"check": "pattern", "column": "zip", "pattern": "^[0-9]{4}$"}, {"zip": "0150"}),
        ({"check": "pattern", "column": "zip", "pattern": "^[0-9]{4}$"}, {"zip": 1234}),
        ({"check": "range", "column": "age", "min": 0, "max": 130}, {"age": 130}),
        ({"check": "range", "column": "age", "min": 0}, {"age": 1e9}),
        ({"check": "range", "column": "d", "min": "2000-01-01"}, {"d": "2024-03-01"}),
        ({"check": "range", "column": "age", "max": 10}, {}),
        ({"check": "range", "column": "ltv", "min": 0}, {"ltv": "10.50"}),
        ({"check": "range", "column": "ltv", "min": 0.1, "max": 0.1}, {"ltv": "0.10"}),
        ({"check": "range", "column": "ltv", "min": -1, "max": 1}, {"ltv": "-1E+0"}),
        ({"check": "type", "column": "ltv", "expected": "decimal"}, {"ltv": "-250.00"}),
        ({"check": "type", "column": "ltv", "expected": "decimal"}, {"ltv": "1E+3"}),
        ({"check": "type", "column": "ltv", "expected": "decimal"}, {"ltv": 7}),
        ({"check": "type", "column": "ltv", "expected": "decimal"}, {"ltv": 7.5}),
        ({"check": "allowed_values", "column": "s", "values": ["a", "b"]}, {"s": "b"}),
        ({"check": "allowed_values", "column": "s", "values": [1, 2]}, {"s": None}),
        ({"check": "length", "column": "code", "min": 2, "max": 3}, {"code": "abc"}),
        ({"check": "length", "column": "tags", "max": 2}, {"tags": ["x"]}),
        ({"check": "exists", "column": "country", "lookup": "countries"}, {"country": "DE"}),
        ({"check": "exists", "column": "country", "lookup": {"FR": 1}}, {"country": "FR"}),
        ({"check": "exists", "column": "country", "lookup": "countries"}, {"country": None}),
        ({"check": "rule", "expression": "discount <= price"}, {"discount": 1, "price": 2}),
        ({"check": "unique", "columns": ["id"]}, {"id": 1}),
    ],
    ids=case_id,
)
async def test_screen_passes(screen: dict[str, Any], record: dict[str, Any]) -> None:
    assert await failures_of(screen, record) == []


@pytest.mark.parametrize(
    "screen,record,column,value,message",
    [
        ({"check": "not_null", "column": "email"}, {}, "email", None, "email is missing"),
        ({"check": "not_null", "column": "email"}, {"email": None}, "email", None, "missing"),
        ({"check": "not_null", "column": "email", "blank_is_null": True}, {"email": "  "}, "email", "  ", "blank"),
        ({"check": "type", "column": "n", "expected": "int"}, {"n": "3"}, "n", "3", "not of type int"),
        ({"check": "type", "column": "n", "expected": "int"}, {"n": True}, "n", "True", "not of type int"),
        ({"check": "type", "column": "n", "expected": "number"}, {"n": "3.5"}, "n", "3.5", "number"),
        ({"check": "type", "column": "d", "expected": "date"}, {"d": "2024-02-30"}, "d", "2024-02-30", "date"),
        ({"check": "type", "column": "d", "expected": "date"}, {"d": "2024-03-01T10"}, "d", "2024-03-01T10", "date"),
        ({"check": "type", "column": "t", "expected": "datetime"}, {"t": "soon"}, "t", "soon", "datetime"),
        ({"check": "type", "column": "l", "expected": "list"}, {"l": "x"}, "l", "x", "list"),
        ({"check": "pattern", "column": "zip", "pattern": "^[0-9]{4}$"}, {"zip": "12345"}, "zip", "12345", "match"),
        ({"check": "pattern", "column": "zip", "pattern": "x"}, {"zip": {"x": 1}}, "zip", "{'x': 1}", "not text"),
        ({"check": "range", "column": "age", "min": 0}, {"age": -1}, "age", "-1", "below 0"),
        ({"check": "range", "column": "age", "max": 130}, {"age": 131}, "age", "131", "above 130"),
        ({"check": "range", "column": "age", "max": 130}, {"age": "old"}, "age", "old", "cannot be compared"),
        ({"check": "range", "column": "ltv", "min": 0}, {"ltv": "-250.00"}, "ltv", "-250.00", "'-250.00' is below 0"),
        ({"check": "range", "column": "ltv", "max": 0.1}, {"ltv": "0.10000001"}, "ltv", "0.10000001", "above 0.1"),
        ({"check": "range", "column": "ltv", "min": 0}, {"ltv": "NaN"}, "ltv", "NaN", "not a number"),
        ({"check": "range", "column": "ltv", "min": 0}, {"ltv": " 1"}, "ltv", " 1", "not a number"),
        ({"check": "type", "column": "ltv", "expected": "decimal"}, {"ltv": "12 EUR"}, "ltv", "12 EUR", "decimal"),
        ({"check": "type", "column": "ltv", "expected": "decimal"}, {"ltv": "Infinity"}, "ltv", "Infinity", "decimal"),
        ({"check": "type", "column": "ltv", "expected": "decimal"}, {"ltv": float("nan")}, "ltv", "nan", "decimal"),
        ({"check": "type", "column": "ltv", "expected": "decimal"}, {"ltv": True}, "ltv", "True", "decimal"),
        ({"check": "range", "column": "age", "max": 130}, {"age": True}, "age", "True", "boolean"),
        ({"check": "range", "column": "d", "max": "2024-12-31"}, {"d": "2025-01-01"}, "d", "2025-01-01", "above"),
        ({"check": "allowed_values", "column": "s", "values": ["a"]}, {"s": "A"}, "s", "A", "not an allowed value"),
        ({"check": "allowed_values", "column": "s", "values": ["a"]}, {"s": ["a"]}, "s", "['a']", "not an allowed"),
        ({"check": "length", "column": "code", "min": 2}, {"code": "a"}, "code", "a", "below 2"),
        ({"check": "length", "column": "code", "max": 3}, {"code": "abcd"}, "code", "abcd", "above 3"),
        ({"check": "length", "column": "code", "max": 3}, {"code": 12345}, "code", "12345", "has no length"),
        (
            {"check": "exists", "column": "country", "lookup": "countries"},
            {"country": "XX"},
            "country",
            "XX",
            "no match in countries",
        ),
        (
            {"check": "exists", "column": "country", "lookup": "countries"},
            {"country": {"c": 1}},
            "country",
            "{'c': 1}",
            "no match",
        ),
        (
            {"check": "rule", "expression": "discount <= price", "column": "discount"},
            {"discount": 3, "price": 2},
            "discount",
            "3",
            "is false",
        ),
        ({"check": "rule", "expression": "discount <= price"}, {"discount": None, "price": 2}, None, None, "TypeError"),
    ],
    ids=case_id,
)
async def test_screen_fails(
    screen: dict[str, Any], record: dict[str, Any], column: str | None, value: str | None, message: str
) -> None:
    (failure,) = await failures_of(screen, record)
    assert (failure.screen, failure.column, failure.value) == ("s", column, value)
    assert message in failure.message


@pytest.mark.parametrize(
    "records,fates",
    [
        ([{"id": 1}, {"id": 2}, {"id": 1}], ["passed", "passed", "flagged"]),
        ([{"id": 1}, {"id": "1"}], ["passed", "flagged"]),
        ([{"id": None}, {"id": None}], ["passed", "passed"]),
        ([{"id": 1, "bad": True}, {"id": 1}], ["rejected", "passed"]),
        ([{"id": [1]}, {"id": [1]}], ["passed", "flagged"]),
    ],
    ids=["duplicate", "same-key-as-text", "null-key-unchecked", "rejected-record-claims-no-key", "unhashable-key"],
)
async def test_a_unique_screen_that_passes_flags_each_later_record_of_a_key(
    records: list[dict[str, Any]], fates: list[str]
) -> None:
    screener = Screener(
        [
            {"name": "good", "check": "rule", "expression": "not bad"},
            {"name": "one per id", "check": "unique", "columns": ["id"], "action": "pass"},
        ]
    )
    assert [(await screener.screen(r)).fate for r in records] == fates


NEWEST = [
    pytest.param(
        None, [{"id": 1, "v": "old"}, {"id": 2}, {"id": 1, "v": "new"}], [1, 2], "kept the one read later", id="last"
    ),
    pytest.param(
        "updated_at",
        [{"id": 1, "updated_at": "2026-03-02T10:00:00Z"}, {"id": 1, "updated_at": "2026-03-01T10:00:00+00:00"}],
        [0],
        "kept the one whose updated_at '2026-03-02T10:00:00Z' is newer than the other's '2026-03-01T10:00:00+00:00'",
        id="newest-by-cursor-read-first",
    ),
    pytest.param(
        "updated_at",
        [{"id": 1, "updated_at": "2026-03-01T12:00:00+02:00"}, {"id": 1, "updated_at": "2026-03-01T10:30:00Z"}],
        [1],
        "is newer than",
        id="instants-by-value-not-text",
    ),
    pytest.param(
        "seq", [{"id": 1, "seq": 10}, {"id": 1, "seq": 9}], [0], "seq 10 is newer than the other's 9", id="numbers"
    ),
]


@pytest.mark.parametrize("newest_by,records,kept,message", NEWEST)
async def test_the_newest_record_of_a_key_wins_and_the_other_is_a_duplicate(
    newest_by: str | None, records: list[dict[str, Any]], kept: list[int], message: str
) -> None:
    screener = Screener([{"name": "one per id", "check": "unique", "columns": ["id"], "newest_by": newest_by}])
    results = [await screener.screen(r) for r in records]
    await screener.flush()
    staged = [r for r, result in zip(records, results, strict=True) if result.kept]
    survivors = await screener.keep(staged, 0)
    assert [records.index(r) for r in survivors] == kept
    (event,) = [f for result in results for f in result.failures]
    assert event.screen == "one per id" and event.column == "id" and message in event.message
    assert screener.duplicates == 1 and screener.summary.rejected == 0


async def test_unique_composite_key() -> None:
    screener = Screener([{"name": "u", "check": "unique", "columns": ["tenant", "id"], "action": "pass"}])
    results = [
        await screener.screen(r) for r in [{"tenant": "a", "id": 1}, {"tenant": "b", "id": 1}, {"tenant": "a", "id": 1}]
    ]
    assert [r.fate for r in results] == ["passed", "passed", "flagged"]
    assert results[2].failures[0].column == "tenant, id"


class CountingKeySet(MemoryKeySet):
    def __init__(self) -> None:
        super().__init__()
        self.round_trips = 0

    async def contains(self, members: Sequence[str]) -> list[bool]:
        self.round_trips += 1
        return await super().contains(members)

    async def add(self, members: Collection[str]) -> None:
        self.round_trips += 1
        await super().add(members)


async def test_unique_keys_kept_in_a_key_set_chunk_by_chunk() -> None:
    """The transform's way: one question before a chunk, one write after it; a reject still claims no key."""
    key_sets: dict[str, CountingKeySet] = {}
    screener = Screener(
        [
            {"name": "good", "check": "rule", "expression": "not bad"},
            {"name": "one per id", "check": "unique", "columns": ["id"], "action": "stop"},
        ],
        key_sets=lambda name: key_sets.setdefault(name, CountingKeySet()),
    )
    chunks = [[{"id": 1}, {"id": 2, "bad": True}, {"id": 1}], [{"id": 2}, {"id": 1}, {"id": 3}, {"id": 2}]]
    fates = []
    for chunk in chunks:
        await screener.prefetch(chunk)
        fates.append([(await screener.screen(r)).fate for r in chunk])
        await screener.flush()

    assert fates == [["passed", "rejected", "stop"], ["passed", "stop", "passed", "stop"]]
    assert list(key_sets) == ["unique-2"]  # named for the screen's processing order
    assert key_sets["unique-2"].round_trips == 4  # per chunk: one question, one write
    assert await key_sets["unique-2"].contains(['["1"]', '["2"]', '["3"]']) == [True, True, True]
    await screener.drop()
    assert await key_sets["unique-2"].contains(['["1"]']) == [False]


async def test_unique_keys_on_a_redis_stage(redis_url: str) -> None:
    key = StageKey("acme", "b1", "shape-customers")
    async with RedisStage.from_url(redis_url) as stage:
        screener = Screener(
            [{"name": "u", "check": "unique", "columns": ["tenant", "id"], "action": "pass"}],
            key_sets=lambda name: StagedKeySet(stage, key.part(name)),
        )
        fates = []
        for chunk in ([{"tenant": "a|1", "id": "x"}, {"tenant": "a", "id": "1|x"}], [{"tenant": "a", "id": "1|x"}]):
            await screener.prefetch(chunk)
            fates += [(await screener.screen(r)).fate for r in chunk]
            await screener.flush()
        assert await stage.index_get(key.part("unique-1"), ['["a|1","x"]', '["a","1|x"]']) == ["", ""]

    assert fates == ["passed", "passed", "flagged"]


SCREENS: list[dict[str, Any]] = [
    {
        "name": "email present",
        "check": "not_null",
        "column": "email",
        "category": "completeness",
        "severity": 6,
        "action": "reject",
    },
    {
        "name": "known status",
        "check": "allowed_values",
        "column": "status",
        "values": ["active", "closed"],
        "category": "validity",
        "severity": 2,
        "action": "pass",
    },
    {"name": "sane amount", "check": "range", "column": "amount", "max": 1_000_000, "severity": 10, "action": "stop"},
]


@pytest.mark.parametrize(
    "record,fate,failed",
    [
        ({"email": "a@b.c", "status": "active", "amount": 1}, Fate.PASSED, []),
        ({"email": "a@b.c", "status": "odd", "amount": 1}, Fate.FLAGGED, ["known status"]),
        ({"status": "odd", "amount": 1}, Fate.REJECTED, ["email present", "known status"]),
        ({"status": "odd", "amount": 10**9}, Fate.STOP, ["email present", "known status", "sane amount"]),
    ],
    ids=["passed", "flagged", "rejected-all-failures-reported", "stop-is-worst"],
)
async def test_fate_is_the_worst_action(record: dict[str, Any], fate: Fate, failed: list[str]) -> None:
    result = await Screener(SCREENS).screen(record)
    assert result.fate is fate
    assert [f.screen for f in result.failures] == failed
    assert result.kept is (fate in (Fate.PASSED, Fate.FLAGGED))


async def test_stop_raises_after_the_failures_are_reported() -> None:
    screener = Screener(SCREENS)
    result = await screener.screen({"email": "x", "status": "active", "amount": 10**9})
    assert screener.summary.stopped == 1
    assert result.failures[0].as_error_event() == {
        "screen": "sane amount",
        "severity": 10,
        "action": "stop",
        "column": "amount",
        "value": str(10**9),
        "message": "amount 1000000000 is above 1000000",
    }
    with pytest.raises(ScreenStop) as caught:
        result.raise_for_stop()
    assert caught.value.screen == "sane amount"


def test_raise_for_stop_is_quiet_otherwise() -> None:
    ScreenResult((), Fate.PASSED).raise_for_stop()


async def test_failing_value_is_stringified_and_truncated() -> None:
    (failure,) = await failures_of({"check": "length", "column": "bio", "max": 10}, {"bio": "x" * 5000})
    assert failure.value is not None and len(failure.value) == 200 and failure.value.endswith("…")


async def test_summary_and_quality_score() -> None:
    screener = Screener(SCREENS)
    for record in [
        {"email": "a", "status": "active", "amount": 1},
        {"email": "a", "status": "active", "amount": 2},
        {"email": "a", "status": "odd", "amount": 3},  # flagged, severity 2
        {"status": "active", "amount": 4},  # rejected, severity 6
    ]:
        await screener.screen(record)
    assert screener.summary.as_dict() == {
        "screened": 4,
        "passed": 2,
        "flagged": 1,
        "rejected": 1,
        "stopped": 0,
        "quality_score": 80.0,  # 100 * (1 - (2 + 6) / (10 * 4))
        "pass_rate": 50.0,
        "max_severity": 6,
        "failures_by_screen": {"known status": 1, "email present": 1},
    }


def test_empty_summary_scores_100() -> None:
    assert (ScreenSummary().quality_score, ScreenSummary().pass_rate) == (100.0, 100.0)


def test_dimension_rows_in_processing_order() -> None:
    rows = Screener(
        [
            *SCREENS,
            {"name": "u", "check": "unique", "columns": ["id"]},
            {"name": "r", "check": "rule", "expression": "amount > 0"},
        ]
    ).dimension_rows()
    assert rows[0] == {
        "name": "email present",
        "type": "column",
        "category": "completeness",
        "severity": 6,
        "action": "reject",
        "processing_order": 1,
    }
    assert [(r["name"], r["type"], r["processing_order"], r["category"]) for r in rows[3:]] == [
        ("u", "structure", 4, None),
        ("r", "business_rule", 5, None),
    ]


@pytest.mark.parametrize(
    "screen,expectation",
    [
        ({"check": "not_null", "column": "a"}, nullcontext()),
        ({"check": "spellcheck", "column": "a"}, pytest.raises(ValidationError)),
        ({"check": "not_null"}, pytest.raises(ValidationError)),
        ({"check": "not_null", "column": "a", "severity": 0}, pytest.raises(ValidationError)),
        ({"check": "not_null", "column": "a", "severity": 11}, pytest.raises(ValidationError)),
        ({"check": "not_null", "column": "a", "action": "ignore"}, pytest.raises(ValidationError)),
        ({"check": "not_null", "column": "a", "type": "structure"}, pytest.raises(ValidationError)),
        ({"check": "range", "column": "a"}, pytest.raises(ValidationError, match="min, max or both")),
        ({"check": "allowed_values", "column": "a", "values": []}, pytest.raises(ValidationError)),
        ({"check": "unique", "columns": []}, pytest.raises(ValidationError)),
        ({"check": "type", "column": "a", "expected": "money"}, pytest.raises(ValidationError)),
        ({"check": "pattern", "column": "a", "pattern": "("}, pytest.raises(ConfigError, match="invalid pattern")),
        ({"check": "rule", "expression": "().__class__"}, pytest.raises(ConfigError, match="expression")),
        ({"check": "exists", "column": "a", "lookup": "regions"}, pytest.raises(ConfigError, match="regions")),
    ],
    ids=[
        "good",
        "unknown-check",
        "no-column",
        "severity-0",
        "severity-11",
        "unknown-action",
        "wrong-type",
        "range-without-bounds",
        "no-allowed-values",
        "no-key-columns",
        "unknown-type",
        "bad-regex",
        "unsafe-rule",
        "unknown-lookup",
    ],
)
def test_configuration_errors(screen: dict[str, Any], expectation: AbstractContextManager[Any]) -> None:
    with expectation:
        Screener([{"name": "s", **screen}], lookups={"countries": StaticLookup({})})


def test_screen_names_are_unique() -> None:
    with pytest.raises(ConfigError, match="share this name"):
        parse_screens(
            [{"name": "s", "check": "not_null", "column": "a"}, {"name": "s", "check": "unique", "columns": ["a"]}]
        )


CRM = {"crm": {"name": "crm", "base_url": "https://crm.example.com"}}


def shaped(
    steps: list[dict[str, Any]], unique: dict[str, Any], cursor: str | None = "updated_at", between: int = 0
) -> TransformJob:
    """The last transform of a batch type: an extract (with `cursor` as its incremental cursor_field), then
    `between` transforms that change nothing, then one with `steps` and a unique screen (`unique`, merged in)."""
    extract = {"kind": "extract", "name": "Extract", "api": "crm", "endpoint": {"path": "/customers"},
               "natural_key": ["id"]} | ({"incremental": {"cursor_field": cursor}} if cursor else {})  # fmt: skip
    jobs: list[dict[str, Any]] = [extract]
    for n in range(between):
        jobs.append({"kind": "transform", "name": f"Pass {n}", "source": jobs[-1]["name"]})
    screen = {"name": "one per customer", "check": "unique", "columns": ["id"]} | unique
    jobs.append({"kind": "transform", "name": "Shape", "source": jobs[-1]["name"], "steps": steps, "screens": [screen]})
    job = BatchType.model_validate({"name": "b", "apis": CRM, "jobs": jobs}).jobs[-1]
    assert isinstance(job, TransformJob)
    return job


async def test_a_unique_screen_keeps_the_newest_by_the_source_extracts_cursor_when_it_names_none() -> None:
    job = shaped([{"op": "rename", "fields": {"meta.updated_at": "updated_at"}}], {}, cursor="meta.updated_at")
    screener = Screener(job.screens)
    records = [{"id": 1, "updated_at": "2026-03-02T10:00:00Z"}, {"id": 1, "updated_at": "2026-03-01T10:00:00Z"}]
    results = [await screener.screen(r) for r in records]
    await screener.flush()
    assert [result.kept for result in results] == [True, False]  # the first, newer, stays
    (event,) = [f for result in results for f in result.failures]
    assert "kept the one whose updated_at '2026-03-02T10:00:00Z' is newer" in event.message


@pytest.mark.parametrize(
    "steps,unique,cursor,between,newest_by",
    [
        pytest.param([], {}, "updated_at", 0, "updated_at", id="as-extracted"),
        pytest.param([], {}, "updated_at", 2, "updated_at", id="through-earlier-transforms"),
        pytest.param([{"op": "rename", "fields": {"meta": "m"}}], {}, "meta.updated_at", 0, "m.updated_at",
                     id="its-parent-renamed"),
        pytest.param([{"op": "cast", "fields": {"updated_at": "datetime"}}, {"op": "filter", "expression": "id > 0"}],
                     {}, "updated_at", 0, "updated_at", id="cast-and-filtered"),
        pytest.param([{"op": "select", "fields": ["id", "updated_at"]}], {}, "updated_at", 0, "updated_at",
                     id="selected"),
        pytest.param([{"op": "select", "fields": ["id"]}], {}, "updated_at", 0, None, id="selected-away"),
        pytest.param([{"op": "drop", "fields": ["meta"]}], {}, "meta.updated_at", 0, None, id="dropped"),
        pytest.param([{"op": "rename", "fields": {"created_at": "updated_at"}}], {}, "updated_at", 0, None,
                     id="another-field-renamed-onto-it"),
        pytest.param([{"op": "constant", "values": {"updated_at": "x"}}], {}, "updated_at", 0, None,
                     id="overwritten"),
        pytest.param([{"op": "flatten"}], {}, "meta.updated_at", 0, None, id="flattened"),
        pytest.param([], {"newest_by": "seq"}, "updated_at", 0, "seq", id="its-own"),
        pytest.param([], {"newest_by": None}, "updated_at", 0, None, id="null-the-last-read"),
        pytest.param([], {}, None, 0, None, id="no-cursor-the-last-read"),
    ],
)  # fmt: skip
def test_which_field_a_unique_screen_keeps_the_newest_by(
    steps: list[dict[str, Any]], unique: dict[str, Any], cursor: str | None, between: int, newest_by: str | None
) -> None:
    (screen,) = shaped(steps, unique, cursor, between).screens
    assert isinstance(screen, Unique) and screen.newest_by == newest_by
