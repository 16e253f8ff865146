"""SchemaChecker: per-record violations with their column, local format checks, drift, and loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RecordError, SourceError
from prefect_restful_etl.tasks.engine.extract.schema import SchemaChecker, load_schema
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient

BASE = "http://127.0.0.1:8999/api"

CUSTOMER: dict[str, Any] = {
    "type": "object",
    "required": ["id", "email"],
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": "string", "format": "email"},
        "updated_at": {"type": "string", "format": "date-time"},
        "status": {"enum": ["active", "closed"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
        },
    },
}
GOOD = {"id": 1, "email": "ann@example.com", "updated_at": "2026-03-01T10:00:00Z", "status": "active"}


@pytest.mark.parametrize(
    "record,column,value",
    [
        pytest.param({**GOOD, "id": "one"}, "id", "one", id="wrong-type"),
        pytest.param({"id": 1}, "email", None, id="missing-required"),
        pytest.param({**GOOD, "email": "ann.example.com"}, "email", "ann.example.com", id="bad-email"),
        pytest.param({**GOOD, "email": "ann@localhost"}, "email", "ann@localhost", id="email-without-domain-dot"),
        pytest.param({**GOOD, "updated_at": "2026-02-30T10:00:00Z"}, "updated_at", None, id="impossible-date"),
        pytest.param({**GOOD, "updated_at": "2026-03-01T10:00:00"}, "updated_at", None, id="date-time-without-offset"),
        pytest.param({**GOOD, "updated_at": "2026-03-01 10:00:00Z"}, "updated_at", None, id="date-time-with-space"),
        pytest.param({**GOOD, "updated_at": "2026-03-01T25:00:00Z"}, "updated_at", None, id="hour-25"),
        pytest.param({**GOOD, "status": "gone"}, "status", "gone", id="enum"),
        pytest.param({**GOOD, "address": {"zip": "1234"}}, "address.zip", "1234", id="nested-column"),
    ],
)
def test_a_bad_record_gives_message_and_column(record: dict[str, Any], column: str, value: Any) -> None:
    checker = SchemaChecker(CUSTOMER)
    violation = checker.check(record)
    assert violation is not None and violation.column == column
    assert violation.message.startswith(f"{column}: ")
    if value is not None:
        assert violation.value == value
    error = violation.as_error()
    assert isinstance(error, RecordError) and error.column == column


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(GOOD, id="plain"),
        pytest.param({**GOOD, "updated_at": "2026-03-01T10:00:00.123456+05:30"}, id="fraction-and-offset"),
        pytest.param({**GOOD, "updated_at": "2026-03-01t10:00:00z"}, id="lowercase-t-and-z"),
        pytest.param({**GOOD, "email": "a.b+tag@mail.example.co.uk"}, id="email-plus-tag"),
        pytest.param({"id": 2, "email": "x@y.io", "address": {"city": "Lyon", "zip": "69001"}}, id="nested"),
    ],
)
def test_a_good_record_passes(record: dict[str, Any]) -> None:
    assert SchemaChecker(CUSTOMER).check(record) is None


def test_additional_properties_name_the_extra_column() -> None:
    checker = SchemaChecker({**CUSTOMER, "additionalProperties": False})
    violation = checker.check({**GOOD, "nickname": "Annie"})
    assert violation is not None and (violation.column, violation.value) == ("nickname", "Annie")


def test_counts_checked_and_failed() -> None:
    checker = SchemaChecker(CUSTOMER)
    for record in (GOOD, {"id": 1}, GOOD):
        checker.check(record)
    assert (checker.checked, checker.failed) == (3, 1)


def test_drift_reports_unexpected_fields_and_unseen_properties() -> None:
    checker = SchemaChecker(CUSTOMER)
    checker.check({**GOOD, "phone": "555", "address": {"city": "Lyon", "country": "FR"}})
    checker.check({**GOOD, "phone": None})
    drift = checker.drift()
    assert drift.unexpected_fields == ("address.country", "phone")
    assert drift.unseen_properties == ("address.zip",)
    assert drift.drifted


def test_drift_reports_a_missing_object_once_not_each_child() -> None:
    checker = SchemaChecker(CUSTOMER)
    checker.check(GOOD)
    assert checker.drift().unseen_properties == ("address",)


def test_no_drift_when_records_match() -> None:
    checker = SchemaChecker({"type": "object", "properties": {"id": {}}})
    checker.check({"id": 1})
    assert not checker.drift().drifted


def test_the_declared_dialect_is_honoured() -> None:
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "integer"}]}
    assert SchemaChecker(draft7).check([1]) is None  # `items` as a list is draft 7; 2020-12 would reject the schema


@pytest.mark.parametrize(
    "schema,message",
    [
        pytest.param({"type": "thing"}, "not a valid JSON Schema", id="bad-type"),
        pytest.param({"properties": {"id": {"minimum": "zero"}}}, "not a valid JSON Schema", id="bad-keyword-value"),
    ],
)
def test_an_invalid_schema_is_a_config_error(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SchemaChecker(schema, source="schemas/customer.json")


async def test_load_from_a_relative_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "customer.json").write_text(json.dumps(CUSTOMER))
    monkeypatch.chdir(tmp_path)
    checker = await SchemaChecker.load("schemas/customer.json")
    assert checker.check({"id": 1}) is not None
    assert await load_schema("customer.json", base_dir=tmp_path / "schemas") == CUSTOMER


@pytest.mark.parametrize(
    "content,message",
    [
        pytest.param(None, "cannot be read", id="missing-file"),
        pytest.param("{not json", "is not JSON", id="not-json"),
        pytest.param("[1, 2]", "not a JSON object", id="not-an-object"),
    ],
)
async def test_a_bad_schema_file_is_a_config_error(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "s.json").write_text(content)
    with pytest.raises(ConfigError, match=message):
        await load_schema("s.json", base_dir=tmp_path)


async def test_load_from_a_url_through_the_rest_client_once() -> None:
    url = f"{BASE}/metadata/customer.json"
    with respx.mock:
        route = respx.get(url).mock(return_value=httpx.Response(200, json=CUSTOMER))
        async with RestClient(ApiConfig(name="crm", base_url=BASE)) as client:
            checker = await SchemaChecker.load(url, client=client)
            for _ in range(3):
                checker.check(GOOD)
    assert route.call_count == 1


async def test_load_from_a_url_through_a_plain_httpx_client() -> None:
    url = "http://127.0.0.1:8999/schemas/customer.json"
    with respx.mock:
        respx.get(url).mock(return_value=httpx.Response(200, json=CUSTOMER))
        async with httpx.AsyncClient() as client:
            assert await load_schema(url, client=client) == CUSTOMER
        assert await load_schema(url) == CUSTOMER  # a client of its own


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(404), id="404"),
        pytest.param(httpx.ConnectError("refused"), id="unreachable"),
    ],
)
async def test_an_unfetchable_schema_url_is_a_source_error(response: Any) -> None:
    url = "http://127.0.0.1:8999/schemas/customer.json"
    with respx.mock:
        respx.get(url).mock(side_effect=[response])
        with pytest.raises(SourceError, match=r"schemas/customer\.json"):
            await load_schema(url)
