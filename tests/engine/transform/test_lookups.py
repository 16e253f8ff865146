"""Lookup sources (static, staged, API), their per-batch caches, and the lookup step's miss policies."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RecordError
from prefect_restful_etl.tasks.engine.transform.lookups import (
    ApiLookup,
    InferringLookupSource,
    Lookup,
    LookupSource,
    StagedLookup,
    StaticLookup,
    resolve_source,
)

COUNTRIES = [{"code": "DE", "id": 49}, {"code": "FR", "id": 33}]


class FakeDimension:
    """A destination API's dimension: counts calls, like a respx route would."""

    def __init__(self, rows: list[dict[str, Any]], creatable: bool = True, answers: bool = True) -> None:
        self.rows = {row["code"]: row for row in rows}
        self.fetches: list[Any] = []
        self.created: list[dict[str, Any]] = []
        self.creatable = creatable
        self.answers = answers  # False: a creation returns no body, as a 201 or 204 without content does

    async def fetch_one(self, key: Any) -> dict[str, Any] | None:
        self.fetches.append(key)
        await asyncio.sleep(0)  # let concurrent lookups interleave
        return self.rows.get(key)

    async def create(self, record: dict[str, Any]) -> dict[str, Any] | None:
        self.created.append(record)
        await asyncio.sleep(0)
        if not self.creatable:
            return None
        row = {**record, "id": 1000 + len(self.created)}
        self.rows[record["code"]] = row
        return row if self.answers else None

    def lookup(self) -> ApiLookup:
        return ApiLookup(self.fetch_one, self.create, key_field="code", value_field="id")


def staged(chunks: list[Any], reads: list[int]) -> StagedLookup:
    async def records() -> AsyncIterator[Any]:
        reads.append(1)
        for chunk in chunks:
            yield chunk

    return StagedLookup(records, key_field="code", value_field="id")


@pytest.mark.parametrize(
    "mapping,key,expected",
    [
        ({"DE": 49}, "DE", 49),
        ({"DE": 49}, "XX", None),
        ({"42": "answer"}, 42, "answer"),
        ({42: "answer"}, "42", "answer"),
        ({True: "yes"}, True, "yes"),
    ],
    ids=["hit", "miss", "int-key-text-mapping", "int-mapping-text-key", "bool-stays-bool"],
)
async def test_static_lookup(mapping: dict[Any, Any], key: Any, expected: Any) -> None:
    assert await StaticLookup(mapping).get(key) == expected


@pytest.mark.parametrize(
    "chunks,key,expected",
    [
        ([COUNTRIES], "FR", 33),
        ([COUNTRIES[0], COUNTRIES[1]], "FR", 33),
        ([COUNTRIES], "XX", None),
        ([[{"code": "DE", "id": 1}], [{"code": "DE", "id": 2}]], "DE", 2),
        ([[{"code": None, "id": 1}, {"id": 2}]], None, None),
        ([[{"code": 7, "id": "seven"}]], "7", "seven"),
    ],
    ids=["in-a-chunk", "record-by-record", "miss", "last-wins", "keyless-skipped", "number-key"],
)
async def test_staged_lookup(chunks: list[Any], key: Any, expected: Any) -> None:
    assert await staged(chunks, []).get(key) == expected


async def test_staged_lookup_reads_the_stage_once_for_concurrent_first_lookups() -> None:
    reads: list[int] = []
    source = staged([COUNTRIES], reads)
    assert await asyncio.gather(*(source.get(code) for code in ["DE", "FR", "XX"] * 10)) == [49, 33, None] * 10
    assert reads == [1]


async def test_staged_lookup_whole_record_as_value() -> None:
    async def records() -> AsyncIterator[dict[str, Any]]:
        for row in COUNTRIES:
            yield row

    assert await StagedLookup(records, "code", None).get("DE") == {"code": "DE", "id": 49}


async def test_api_lookup_caches_hits_and_misses() -> None:
    dim = FakeDimension(COUNTRIES)
    source = dim.lookup()
    assert [await source.get(k) for k in ["DE", "XX", "DE", "XX", "FR"]] == [49, None, 49, None, 33]
    assert dim.fetches == ["DE", "XX", "FR"]
    assert source.fetched == 3


async def test_api_lookup_asks_once_per_key_however_many_wait() -> None:
    dim = FakeDimension(COUNTRIES)
    source = dim.lookup()
    await asyncio.gather(*(source.get("DE") for _ in range(20)))
    assert dim.fetches == ["DE"]


async def test_api_lookup_creates_an_inferred_member_once() -> None:
    dim = FakeDimension(COUNTRIES)
    source = dim.lookup()
    assert await source.get("IT") is None
    ids = await asyncio.gather(*(source.create_member("IT", {"name": "Unknown"}) for _ in range(5)))
    assert ids == [1001] * 5
    assert dim.created == [{"name": "Unknown", "code": "IT"}]
    assert await source.get("IT") == 1001
    assert dim.fetches == ["IT"]


@pytest.mark.parametrize(
    "creatable,expected",
    [(True, 1001), (False, None)],
    ids=["created-then-found", "never-found"],
)
async def test_api_lookup_creates_a_member_at_most_once_when_the_creation_answers_no_value(
    creatable: bool, expected: int | None
) -> None:
    dim = FakeDimension(COUNTRIES, creatable=creatable, answers=False)
    source = dim.lookup()
    values = [await source.create_member("IT", {"name": "Unknown"}) for _ in range(3)]
    assert values == [expected] * 3
    assert dim.created == [{"name": "Unknown", "code": "IT"}]  # posted once, however many records follow
    assert dim.fetches == ["IT"]  # and asked once for what the creation did not say
    assert await source.get("IT") == expected


async def test_lookup_step_rejects_later_records_rather_than_creating_a_member_again() -> None:
    dim = FakeDimension(COUNTRIES, creatable=False)
    source = dim.lookup()
    step = Lookup.model_validate({**STEP, "on_miss": "infer", "placeholder": {"name": "Unknown"}})
    for _ in range(3):
        with pytest.raises(RecordError, match="returned no value"):
            await step.apply({"country": "IT"}, source)
    assert len(dim.created) == 1


def test_sources_satisfy_the_protocols() -> None:
    dim = FakeDimension([])
    assert isinstance(StaticLookup({}), LookupSource)
    assert isinstance(staged([], []), LookupSource)
    assert isinstance(dim.lookup(), InferringLookupSource)
    assert not isinstance(StaticLookup({}), InferringLookupSource)
    assert not ApiLookup(dim.fetch_one, key_field="code", value_field="id").can_create


STEP = {"op": "lookup", "field": "country", "target": "country_id", "source": "countries"}


@pytest.mark.parametrize(
    "options,record,expected",
    [
        ({}, {"country": "DE"}, {"country": "DE", "country_id": 49}),
        ({"target": None}, {"country": "DE"}, {"country": 49}),
        (
            {"field": "address.country", "target": "address.country_id"},
            {"address": {"country": "FR"}},
            {"address": {"country": "FR", "country_id": 33}},
        ),
        ({"on_miss": "default", "default": -1}, {"country": "XX"}, {"country": "XX", "country_id": -1}),
        ({"default": -2}, {"country": None}, {"country": None, "country_id": -2}),
        ({}, {}, {"country_id": None}),
        (
            {"on_miss": "infer", "placeholder": {"name": "Unknown"}},
            {"country": "IT"},
            {"country": "IT", "country_id": 1001},
        ),
        ({"source": {"DE": "Germany"}}, {"country": "DE"}, {"country": "DE", "country_id": "Germany"}),
    ],
    ids=["hit", "replace-field", "dotted", "miss-default", "null-key-default", "absent-key", "infer", "inline"],
)
async def test_lookup_step(options: dict[str, Any], record: dict[str, Any], expected: dict[str, Any]) -> None:
    step = Lookup.model_validate({**STEP, **options})
    sources = {"countries": FakeDimension(COUNTRIES).lookup()}
    source = resolve_source(step.source, sources, infer=step.on_miss == "infer")
    assert await step.apply(record, source) == expected


@pytest.mark.parametrize(
    "options,record,message",
    [
        ({}, {"country": "XX"}, "no member for 'XX'"),
        ({}, {"country": {"code": "DE"}}, "a key must be a scalar"),
        ({}, {"country": ["DE"]}, "a key must be a scalar"),
        ({"on_miss": "infer"}, {"country": "IT"}, "returned no value"),
    ],
    ids=["miss-reject", "object-key", "list-key", "create-failed"],
)
async def test_lookup_step_rejects(options: dict[str, Any], record: dict[str, Any], message: str) -> None:
    step = Lookup.model_validate({**STEP, **options})
    source = FakeDimension(COUNTRIES, creatable=False).lookup()
    with pytest.raises(RecordError, match=message) as caught:
        await step.apply(record, source)
    assert caught.value.column == "country"
    assert caught.value.value == record["country"]


async def test_lookup_step_target_through_a_non_object_rejects_the_record() -> None:
    step = Lookup.model_validate({**STEP, "target": "country.id"})
    with pytest.raises(RecordError, match="country is str, not an object") as caught:
        await step.apply({"country": "DE"}, FakeDimension(COUNTRIES).lookup())
    assert (caught.value.column, caught.value.value) == ("country.id", "DE")


async def test_an_inferred_member_whose_key_path_meets_a_placeholder_value_rejects_the_record() -> None:
    source = ApiLookup(FakeDimension([]).fetch_one, FakeDimension([]).create, key_field="code.iso", value_field="id")
    step = Lookup.model_validate({**STEP, "on_miss": "infer", "placeholder": {"code": "unknown"}})
    with pytest.raises(RecordError, match=r"cannot set code\.iso"):
        await step.apply({"country": "IT"}, source)


async def staged_records() -> AsyncIterator[list[dict[str, Any]]]:
    yield [{"code": "DE", "name": {"en": "Germany"}, "tags": ["eu"]}]


@pytest.mark.parametrize(
    "source,options",
    [
        (StaticLookup({"DE": {"en": "Germany"}}), {}),
        (StagedLookup(staged_records, "code", None), {}),
        (StagedLookup(staged_records, "code", "tags"), {}),
        (StaticLookup({}), {"on_miss": "default", "default": {"en": "Unknown"}}),
    ],
    ids=["static-object", "staged-whole-record", "staged-list", "default-object"],
)
async def test_records_never_share_a_looked_up_object(source: LookupSource, options: dict[str, Any]) -> None:
    step = Lookup.model_validate({**STEP, **options})
    first = await step.apply({"country": "DE"}, source)
    pristine = copy.deepcopy(first["country_id"])
    first["country_id"].clear()  # a later step editing inside the first record's value (a rename of country_id.en)
    second = await step.apply({"country": "DE"}, source)
    assert second["country_id"] == pristine
    assert second["country_id"] is not first["country_id"]


@pytest.mark.parametrize(
    "source,infer,expectation",
    [
        ("countries", False, nullcontext()),
        ({"DE": 1}, False, nullcontext()),
        ("regions", False, pytest.raises(ConfigError, match=r"'regions'.*no such lookup source")),
        ("static", True, pytest.raises(ConfigError, match="needs a source that can create")),
        ("read_only_api", True, pytest.raises(ConfigError, match="needs a source that can create")),
        ("countries", True, nullcontext()),
    ],
    ids=["named", "inline", "unknown-name", "infer-static", "infer-without-create", "infer-api"],
)
def test_resolve_source(source: Any, infer: bool, expectation: AbstractContextManager[Any]) -> None:
    dim = FakeDimension(COUNTRIES)
    sources: dict[str, LookupSource] = {
        "countries": dim.lookup(),
        "static": StaticLookup({}),
        "read_only_api": ApiLookup(dim.fetch_one, key_field="code", value_field="id"),
    }
    with expectation:
        resolve_source(source, sources, infer=infer)
