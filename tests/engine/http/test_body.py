"""JSON bodies: parsed once per response; values no stage can hold become `Unrepresentable`, integers stay exact."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from prefect_restful_etl.tasks.engine.http.body import MAX_DEPTH, Unrepresentable, json_body, loads


@pytest.mark.parametrize(
    "text,expected",
    [
        pytest.param(b'{"a": [1, 2.5, "x", null, true]}', {"a": [1, 2.5, "x", None, True]}, id="plain"),
        pytest.param(b"12345678901234567890123", 12345678901234567890123, id="integer-beyond-64-bits-exact"),
        pytest.param(b"-9999999999999999999", -9999999999999999999, id="negative-beyond-64-bits-exact"),
        pytest.param(b'["\\ud800"]', ["\ud800"], id="lone-surrogate-kept-for-the-stage-check"),
        pytest.param(b'"caf\\u00e9"', "café", id="escapes"),
    ],
)
def test_loads_keeps_every_value_as_json_means_it(text: bytes, expected: Any) -> None:
    assert loads(text) == expected


@pytest.mark.parametrize(
    "text,reason",
    [
        pytest.param(b'{"v": NaN}', "NaN is not a number JSON can carry", id="nan"),
        pytest.param(b'{"v": -Infinity}', "-Infinity is not a number JSON can carry", id="infinity"),
        pytest.param(b'{"v": 1e400}', "1e400 is beyond the range of a float", id="beyond-float-range"),
    ],
)
def test_values_no_stage_can_hold_become_unrepresentable(text: bytes, reason: str) -> None:
    value = loads(text)["v"]
    assert isinstance(value, Unrepresentable) and value.reason == reason


def test_a_structure_too_deep_to_parse_costs_only_its_own_record() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    body = loads(b'{"data": [{"id": 1, "x": ' + deep + b'}, {"id": 2, "s": "[[{"}]}')
    assert body["data"][1] == {"id": 2, "s": "[[{"}  # brackets inside strings are text
    value, depth = body["data"][0]["x"], 0
    while isinstance(value, list):
        value, depth = value[0], depth + 1
    assert isinstance(value, Unrepresentable) and depth == MAX_DEPTH - 3  # body, data and the record hold 3


def test_json_body_parses_once_per_response() -> None:
    response = httpx.Response(200, json={"data": [1]})
    assert json_body(response) is json_body(response)


def test_json_body_refuses_what_is_not_json() -> None:
    with pytest.raises(ValueError):
        json_body(httpx.Response(200, text="<html>"))
