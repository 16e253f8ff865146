"""Transform steps one by one (good and bad values), their configuration errors, and the Pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
from pydantic import ValidationError

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RecordError
from prefect_restful_etl.tasks.engine.transform.lookups import StaticLookup
from prefect_restful_etl.tasks.engine.transform.steps import Pipeline, apply_steps, parse_steps, run_pipeline


def case_id(value: Any) -> str:
    """Readable ids: a step shows its op, a record its JSON (`cast-{"n": "abc"}`)."""
    if isinstance(value, dict) and "op" in value:
        return str(value["op"])
    return json.dumps(value)[:40] if isinstance(value, (dict, list)) else str(value)


def run(step: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
    return apply_steps(parse_steps([step]), record)


@pytest.mark.parametrize(
    "step,record,expected",
    [
        ({"op": "rename", "fields": {"a": "b"}}, {"a": 1, "c": 2}, [{"c": 2, "b": 1}]),
        ({"op": "rename", "fields": {"meta.at": "at"}}, {"meta": {"at": 1}}, [{"meta": {}, "at": 1}]),
        ({"op": "rename", "fields": {"absent": "b"}}, {"a": 1}, [{"a": 1}]),
        ({"op": "select", "fields": ["b", "a"]}, {"a": 1, "b": 2, "c": 3}, [{"b": 2, "a": 1}]),
        ({"op": "select", "fields": ["a", "x.y"]}, {"a": 1, "x": {"y": 2, "z": 3}}, [{"a": 1, "x": {"y": 2}}]),
        ({"op": "select", "fields": ["absent"]}, {"a": 1}, [{}]),
        ({"op": "drop", "fields": ["b", "x.z", "absent"]}, {"a": 1, "b": 2, "x": {"z": 3}}, [{"a": 1, "x": {}}]),
        ({"op": "default", "values": {"s": "new"}}, {"s": None}, [{"s": "new"}]),
        ({"op": "default", "values": {"s": "new"}}, {"s": "old"}, [{"s": "old"}]),
        ({"op": "default", "values": {"x.y": 0}}, {}, [{"x": {"y": 0}}]),
        ({"op": "default", "values": {"x.y": 0}}, {"x": None}, [{"x": {"y": 0}}]),
        ({"op": "constant", "values": {"src": "crm"}}, {"src": "x"}, [{"src": "crm"}]),
        ({"op": "cast", "fields": {"n": "int"}}, {"n": "42"}, [{"n": 42}]),
        ({"op": "cast", "fields": {"n": "int"}}, {"n": 3.0}, [{"n": 3}]),
        ({"op": "cast", "fields": {"n": "float"}}, {"n": "1.5"}, [{"n": 1.5}]),
        ({"op": "cast", "fields": {"n": "decimal"}}, {"n": 0.1}, [{"n": "0.1"}]),
        ({"op": "cast", "fields": {"n": "str"}}, {"n": 7}, [{"n": "7"}]),
        ({"op": "cast", "fields": {"b": "bool"}}, {"b": "Yes"}, [{"b": True}]),
        ({"op": "cast", "fields": {"b": "bool"}}, {"b": 0}, [{"b": False}]),
        ({"op": "cast", "fields": {"d": "date"}}, {"d": "2024-03-01T10:00:00Z"}, [{"d": "2024-03-01"}]),
        (
            {"op": "cast", "fields": {"d": "date"}, "formats": ["%d/%m/%Y"]},
            {"d": "05/03/2024"},
            [{"d": "2024-03-05"}],
        ),
        ({"op": "cast", "fields": {"t": "datetime"}}, {"t": "2024-03-01T10:00Z"}, [{"t": "2024-03-01T10:00:00+00:00"}]),
        ({"op": "cast", "fields": {"t": "datetime"}}, {"t": 0}, [{"t": "1970-01-01T00:00:00+00:00"}]),
        ({"op": "cast", "fields": {"t": "datetime"}}, {"t": "2024-03-01"}, [{"t": "2024-03-01T00:00:00+00:00"}]),
        ({"op": "cast", "fields": {"t": "datetime"}}, {"t": "2024-03-01 10:00"}, [{"t": "2024-03-01T10:00:00+00:00"}]),
        (
            {"op": "cast", "fields": {"t": "datetime"}, "formats": ["%d/%m/%Y %H:%M"]},
            {"t": "01/03/2024 10:00"},
            [{"t": "2024-03-01T10:00:00+00:00"}],
        ),
        (
            {"op": "cast", "fields": {"t": "datetime"}},
            {"t": "2024-03-01T10:00+02:00"},
            [{"t": "2024-03-01T10:00:00+02:00"}],
        ),
        ({"op": "cast", "fields": {"n": "float"}}, {"n": "-1e308"}, [{"n": -1e308}]),
        ({"op": "cast", "fields": {"n": "float"}}, {"n": 3}, [{"n": 3.0}]),
        ({"op": "cast", "fields": {"n": "int"}}, {"n": " -7 "}, [{"n": -7}]),
        ({"op": "cast", "fields": {"n": "decimal"}}, {"n": "1e3"}, [{"n": "1E+3"}]),
        ({"op": "cast", "fields": {"n": "int"}}, {"n": None}, [{"n": None}]),
        ({"op": "cast", "fields": {"a.n": "int"}}, {"a": {"n": "1"}}, [{"a": {"n": 1}}]),
        ({"op": "map", "field": "s", "values": {"A": "active"}}, {"s": "A"}, [{"s": "active"}]),
        ({"op": "map", "field": "s", "values": {"1": "active"}}, {"s": 1}, [{"s": "active"}]),
        ({"op": "map", "field": "s", "values": {"A": 1}, "target": "code"}, {"s": "A"}, [{"s": "A", "code": 1}]),
        ({"op": "map", "field": "s", "values": {}, "on_miss": "default", "default": "?"}, {"s": "Z"}, [{"s": "?"}]),
        ({"op": "map", "field": "s", "values": {}, "on_miss": "keep"}, {"s": "Z"}, [{"s": "Z"}]),
        ({"op": "map", "field": "s", "values": {}}, {"s": None}, [{"s": None}]),
        ({"op": "trim", "fields": ["a"]}, {"a": "  x "}, [{"a": "x"}]),
        ({"op": "upper", "fields": ["a"]}, {"a": "x"}, [{"a": "X"}]),
        ({"op": "lower", "fields": ["a", "b"]}, {"a": "X", "b": None}, [{"a": "x", "b": None}]),
        ({"op": "title", "fields": ["a"]}, {"a": "ada lovelace"}, [{"a": "Ada Lovelace"}]),
        (
            {"op": "template", "target": "name", "template": "{first} {last}"},
            {"first": "Ada", "last": "Lovelace"},
            [{"first": "Ada", "last": "Lovelace", "name": "Ada Lovelace"}],
        ),
        ({"op": "template", "target": "c", "template": "{a.b}!"}, {"a": {"b": "O"}}, [{"a": {"b": "O"}, "c": "O!"}]),
        ({"op": "template", "target": "p", "template": "{n:.2f} EUR"}, {"n": 2}, [{"n": 2, "p": "2.00 EUR"}]),
        ({"op": "template", "target": "p", "template": "[{x}]"}, {}, [{"p": "[]"}]),
        ({"op": "template", "target": "p", "template": "{{literal}}"}, {}, [{"p": "{literal}"}]),
        (
            {"op": "flatten"},
            {"id": 1, "a": {"city": "Oslo", "geo": {"lat": 1}}, "tags": ["x"]},
            [{"id": 1, "tags": ["x"], "a_city": "Oslo", "a_geo_lat": 1}],
        ),
        (
            {"op": "flatten", "fields": ["a"], "separator": ".", "depth": 1},
            {"a": {"geo": {"lat": 1}}, "b": {"c": 1}},
            [{"b": {"c": 1}, "a.geo": {"lat": 1}}],
        ),
        ({"op": "flatten", "fields": ["a"]}, {"a": None}, [{"a": None}]),
        ({"op": "flatten", "fields": ["a"]}, {"a": {"e": {}}}, [{"a_e": {}}]),
        ({"op": "filter", "expression": "status == 'active'"}, {"status": "active"}, [{"status": "active"}]),
        ({"op": "filter", "expression": "status == 'active'"}, {"status": "closed"}, []),
        ({"op": "filter", "expression": "amount"}, {"amount": 0}, []),
        (
            {"op": "compute", "fields": {"t": "p * q", "u": "t + 1"}},
            {"p": 2, "q": 3},
            [{"p": 2, "q": 3, "t": 6, "u": 7}],
        ),
        ({"op": "compute", "fields": {"a.b": "upper(c)"}}, {"c": "x"}, [{"c": "x", "a": {"b": "X"}}]),
    ],
    ids=case_id,
)
def test_step(step: dict[str, Any], record: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert run(step, record) == expected


SPLIT = {"op": "split", "field": "lines", "parent_keys": {"id": "order_id"}}


@pytest.mark.parametrize(
    "options,record,expected",
    [
        (
            {},
            {"id": 1, "lines": [{"sku": "a"}, {"sku": "b"}]},
            [{"sku": "a", "order_id": 1}, {"sku": "b", "order_id": 1}],
        ),
        ({"keep_parent": True}, {"id": 1, "lines": [{"sku": "a"}]}, [{"id": 1}, {"sku": "a", "order_id": 1}]),
        ({"index_field": "n"}, {"id": 1, "lines": [{"sku": "a"}]}, [{"sku": "a", "n": 0, "order_id": 1}]),
        ({}, {"id": 1, "lines": ["x"]}, [{"value": "x", "order_id": 1}]),
        ({"value_field": "tag"}, {"id": 1, "lines": ["x"]}, [{"tag": "x", "order_id": 1}]),
        ({}, {"id": 1, "lines": [{"order_id": 9}]}, [{"order_id": 1}]),
        ({}, {"id": 1, "lines": []}, []),
        ({"keep_parent": True}, {"id": 1}, [{"id": 1}]),
        (
            {"parent_keys": {"id": "order_id", "tenant": "tenant"}},
            {"id": 1, "tenant": "t", "lines": [{}]},
            [{"order_id": 1, "tenant": "t"}],
        ),
    ],
    ids=[
        "children",
        "keep-parent",
        "index",
        "scalar-items",
        "value-field",
        "parent-key-wins",
        "empty-list",
        "no-list-keeps-parent",
        "two-keys",
    ],
)
def test_split(options: dict[str, Any], record: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert run({**SPLIT, **options}, record) == expected


@pytest.mark.parametrize(
    "step,field",
    [
        ({"op": "constant", "values": {"meta": {"source": "crm"}}}, "meta"),
        ({"op": "default", "values": {"tags": ["new"]}}, "tags"),
        ({"op": "map", "field": "s", "values": {"A": {"code": 1}}}, "s"),
    ],
    ids=case_id,
)
def test_records_never_share_a_configured_object(step: dict[str, Any], field: str) -> None:
    steps = parse_steps([step])
    [first] = apply_steps(steps, {"s": "A"})
    first[field].clear()  # a later step editing inside the value
    [second] = apply_steps(steps, {"s": "A"})
    assert second[field]


def test_split_children_do_not_share_the_item() -> None:
    item = {"sku": "a"}
    children = run(SPLIT, {"id": 1, "lines": [item]})
    children[0]["sku"] = "changed"
    assert item == {"sku": "a"}


@pytest.mark.parametrize(
    "step,record,column",
    [
        ({"op": "cast", "fields": {"n": "int"}}, {"n": "abc"}, "n"),
        ({"op": "cast", "fields": {"n": "int"}}, {"n": 1.5}, "n"),
        ({"op": "cast", "fields": {"n": "int"}}, {"n": {"x": 1}}, "n"),
        ({"op": "cast", "fields": {"n": "float"}}, {"n": "1,5"}, "n"),
        ({"op": "cast", "fields": {"n": "decimal"}}, {"n": "12 EUR"}, "n"),
        ({"op": "cast", "fields": {"n": "decimal"}}, {"n": "NaN"}, "n"),
        ({"op": "cast", "fields": {"n": "decimal"}}, {"n": True}, "n"),
        ({"op": "cast", "fields": {"n": "float"}}, {"n": "nan"}, "n"),
        ({"op": "cast", "fields": {"n": "float"}}, {"n": "inf"}, "n"),
        ({"op": "cast", "fields": {"n": "float"}}, {"n": "-Infinity"}, "n"),
        ({"op": "cast", "fields": {"n": "float"}}, {"n": "1e999"}, "n"),
        ({"op": "cast", "fields": {"n": "float"}}, {"n": True}, "n"),
        ({"op": "cast", "fields": {"n": "int"}}, {"n": True}, "n"),
        ({"op": "cast", "fields": {"n": "int"}}, {"n": False}, "n"),
        ({"op": "cast", "fields": {"n": "int"}}, {"n": float("inf")}, "n"),
        ({"op": "cast", "fields": {"n": "str"}}, {"n": {"a": 1}}, "n"),
        ({"op": "cast", "fields": {"n": "str"}}, {"n": ["a"]}, "n"),
        ({"op": "cast", "fields": {"d": "date"}}, {"d": "2024-03-01garbage"}, "d"),
        ({"op": "cast", "fields": {"d": "date"}}, {"d": True}, "d"),
        ({"op": "cast", "fields": {"t": "datetime"}}, {"t": "2024-03-01garbage"}, "t"),
        ({"op": "cast", "fields": {"t": "datetime"}}, {"t": float("nan")}, "t"),
        ({"op": "cast", "fields": {"b": "bool"}}, {"b": "maybe"}, "b"),
        ({"op": "cast", "fields": {"d": "date"}}, {"d": "31/02/2024"}, "d"),
        ({"op": "cast", "fields": {"d": "date"}, "formats": ["%d/%m/%Y"]}, {"d": "2024/03/01"}, "d"),
        ({"op": "cast", "fields": {"t": "datetime"}}, {"t": "yesterday"}, "t"),
        ({"op": "map", "field": "s", "values": {"A": 1}}, {"s": "B"}, "s"),
        ({"op": "trim", "fields": ["a"]}, {"a": 5}, "a"),
        ({"op": "upper", "fields": ["a"]}, {"a": ["x"]}, "a"),
        ({"op": "template", "target": "t", "template": "{x}", "missing": "error"}, {}, "x"),
        ({"op": "template", "target": "t", "template": "{x:.2f}"}, {"x": "text"}, "x"),
        ({"op": "flatten", "fields": ["a"]}, {"a": "text"}, "a"),
        ({"op": "flatten"}, {"a": {"b": 1}, "a_b": 2}, "a_b"),
        ({"op": "split", "field": "lines"}, {"lines": "not a list"}, "lines"),
        ({"op": "filter", "expression": "amount > 10"}, {"amount": None}, None),
        ({"op": "compute", "fields": {"t": "p * q"}}, {"p": None, "q": 1}, "t"),
        ({"op": "compute", "fields": {"a.b": "1"}}, {"a": [1]}, "a.b"),
        ({"op": "default", "values": {"address.city": "?"}}, {"address": "Main St"}, "address.city"),
        ({"op": "default", "values": {"a.b.c": 0}}, {"a": {"b": 5}}, "a.b.c"),
        ({"op": "constant", "values": {"a.b": 1}}, {"a": 5}, "a.b"),
        ({"op": "rename", "fields": {"x": "a.b"}}, {"x": 1, "a": "text"}, "a.b"),
        ({"op": "map", "field": "s", "values": {"A": 1}, "target": "s.code"}, {"s": "A"}, "s.code"),
        ({"op": "template", "target": "a.b", "template": "x"}, {"a": True}, "a.b"),
    ],
    ids=case_id,
)
def test_bad_value_is_a_record_error(step: dict[str, Any], record: dict[str, Any], column: str | None) -> None:
    with pytest.raises(RecordError) as caught:
        run(step, record)
    assert caught.value.column == column


@pytest.mark.parametrize(
    "step,expectation",
    [
        ({"op": "explode"}, pytest.raises(ValidationError)),
        ({"op": "rename", "fields": {"a": "b"}, "typo": 1}, pytest.raises(ValidationError)),
        ({"op": "cast", "fields": {"a": "money"}}, pytest.raises(ValidationError)),
        ({"op": "upper"}, pytest.raises(ValidationError)),
        ({"op": "flatten", "depth": 0}, pytest.raises(ValidationError)),
        ({"op": "map", "field": "s", "values": {}, "on_miss": "ignore"}, pytest.raises(ValidationError)),
        ({"op": "template", "target": "t", "template": "{unclosed"}, pytest.raises(ConfigError, match="template")),
        ({"op": "template", "target": "t", "template": "{}"}, pytest.raises(ConfigError, match="placeholders")),
        ({"op": "template", "target": "t", "template": "{a!r}"}, pytest.raises(ConfigError, match="placeholders")),
        ({"op": "filter", "expression": "__import__('os')"}, pytest.raises(ConfigError, match="expression")),
        ({"op": "compute", "fields": {"x": "lambda: 1"}}, pytest.raises(ConfigError, match="Lambda")),
        ({"op": "filter", "expression": "a == 1"}, nullcontext()),
    ],
    ids=[
        "unknown-op",
        "extra-field",
        "unknown-cast",
        "text-without-fields",
        "depth-zero",
        "unknown-on-miss",
        "bad-template",
        "empty-placeholder",
        "conversion",
        "unsafe-filter",
        "unsafe-compute",
        "good",
    ],
)
def test_configuration_errors(step: dict[str, Any], expectation: AbstractContextManager[Any]) -> None:
    with expectation:
        parse_steps([step])


def test_apply_steps_leaves_the_input_record_alone() -> None:
    record = {"a": " x ", "b": 1}
    run({"op": "trim", "fields": ["a"]}, record)
    assert record == {"a": " x ", "b": 1}


def test_apply_steps_refuses_lookups() -> None:
    steps = parse_steps([{"op": "lookup", "field": "c", "source": {"DE": 1}}])
    with pytest.raises(ConfigError, match="Pipeline"):
        apply_steps(steps, {"c": "DE"})


STEPS: list[dict[str, Any]] = [
    {"op": "rename", "fields": {"country_code": "country"}},
    {"op": "upper", "fields": ["country"]},
    {
        "op": "lookup",
        "field": "country",
        "target": "country_id",
        "source": "countries",
        "on_miss": "default",
        "default": -1,
    },
    {"op": "split", "field": "lines", "parent_keys": {"id": "order_id", "country_id": "country_id"}},
    {"op": "filter", "expression": "quantity > 0"},
    {"op": "lookup", "field": "sku", "source": {"A": 100}},
]


async def test_pipeline_runs_sync_and_lookup_steps_in_order() -> None:
    pipeline = Pipeline(STEPS, lookups={"countries": StaticLookup({"DE": 49})})
    record = {"id": 7, "country_code": "de", "lines": [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 0}]}
    assert await pipeline.process(record) == [{"sku": 100, "quantity": 2, "order_id": 7, "country_id": 49}]
    other = {"id": 8, "country_code": "xx", "lines": [{"sku": "A", "quantity": 1}]}
    assert await pipeline.process(other) == [{"sku": 100, "quantity": 1, "order_id": 8, "country_id": -1}]


async def test_pipeline_rejects_the_record_on_a_lookup_miss() -> None:
    pipeline = Pipeline(STEPS, lookups={"countries": StaticLookup({})})
    with pytest.raises(RecordError) as caught:
        await pipeline.process({"id": 1, "country_code": "de", "lines": [{"sku": "Z", "quantity": 1}]})
    assert (caught.value.column, caught.value.value) == ("sku", "Z")


async def test_run_pipeline_for_one_record() -> None:
    out = await run_pipeline([{"op": "constant", "values": {"x": 1}}], {"a": 1}, {})
    assert out == [{"a": 1, "x": 1}]


def test_pipeline_names_a_missing_lookup_source_before_any_record() -> None:
    with pytest.raises(ConfigError, match="countries"):
        Pipeline(STEPS, lookups={})


async def test_pipeline_is_fast_enough_for_streams() -> None:
    pipeline = Pipeline(
        [
            {"op": "trim", "fields": ["email"]},
            {"op": "cast", "fields": {"n": "int"}},
            {"op": "compute", "fields": {"double": "n * 2"}},
            {"op": "filter", "expression": "double >= 0 and email != ''"},
            {"op": "lookup", "field": "c", "source": {"DE": 1}},
        ]
    )
    for n in range(5000):
        (out,) = await pipeline.process({"email": " a@b.c ", "n": str(n), "c": "DE"})
    assert out == {"email": "a@b.c", "n": 4999, "c": 1, "double": 9998}


def test_the_transform_engine_never_imports_prefect() -> None:
    modules = ["transform.steps", "transform.expressions", "transform.lookups", "transform.screens"]
    code = (
        "import sys\n"
        + "".join(f"import prefect_restful_etl.tasks.engine.{m}\n" for m in modules)
        + "assert not [m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
