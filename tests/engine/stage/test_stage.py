"""The stage contract, run against every backend (memory, Redis and MongoDB), and StageKey's safety checks."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, StageError
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey


@pytest.fixture
def batch() -> str:
    """A batch id of the test's own: MemoryStage's store is shared by the whole process."""
    return str(uuid.uuid4())


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"customer {i}", "active": i % 2 == 0, "tags": ["a", "b"]} for i in range(start, start + n)
    ]


async def read_all(stage: Stage, key: StageKey, chunk_size: int = 1000) -> list[list[dict[str, Any]]]:
    return [chunk async for chunk in stage.read(key, chunk_size)]


async def test_is_a_stage(stage: Stage) -> None:
    assert isinstance(stage, Stage)


async def test_round_trip_keeps_order_and_json_values(stage: Stage, batch: str) -> None:
    key = StageKey("acme", batch, "extract-customers")
    odd = {"id": None, "price": 12.5, "unicode": "Zoë ✓", "nested": {"list": [1, {"x": False}]}, "empty": {}}
    await stage.append(key, records(3))
    await stage.append(key, [odd, *records(2, start=3)])

    assert await read_all(stage, key) == [[*records(3), odd, *records(2, start=3)]]
    assert await stage.count(key) == 6


@pytest.mark.parametrize(
    "n,chunk_size,sizes",
    [(2500, 1000, [1000, 1000, 500]), (2000, 1000, [1000, 1000]), (3, 1, [1, 1, 1]), (5, 10, [5])],
    ids=["remainder", "exact", "one-by-one", "one-short-chunk"],
)
async def test_read_yields_chunks_of_chunk_size(
    stage: Stage, batch: str, n: int, chunk_size: int, sizes: list[int]
) -> None:
    key = StageKey("acme", batch, "extract-customers")
    await stage.append(key, records(n))

    chunks = await read_all(stage, key, chunk_size)

    assert [len(chunk) for chunk in chunks] == sizes
    assert [r for chunk in chunks for r in chunk] == records(n)


async def test_read_of_a_key_never_written_raises(stage: Stage, batch: str) -> None:
    with pytest.raises(StageError, match="nothing is staged"):
        await read_all(stage, StageKey("acme", batch, "never"))


async def test_count_of_a_key_never_written_is_zero(stage: Stage, batch: str) -> None:
    assert await stage.count(StageKey("acme", batch, "never")) == 0


@pytest.mark.parametrize("prepare", ["clear", "append-nothing"])
async def test_a_key_staged_empty_reads_as_no_chunks(stage: Stage, batch: str, prepare: str) -> None:
    key = StageKey("acme", batch, "transform-customers")
    if prepare == "clear":
        await stage.append(key, records(5))
        await stage.clear(key)
    else:
        await stage.append(key, [])  # a transform whose every record was rejected

    assert await read_all(stage, key) == []
    assert await stage.count(key) == 0


async def test_clear_then_append_stages_nothing_twice(stage: Stage, batch: str) -> None:
    key = StageKey("acme", batch, "extract-customers")
    await stage.append(key, records(4))
    await stage.clear(key)  # what a retried job does before writing its output again
    await stage.append(key, records(4))

    assert await read_all(stage, key) == [records(4)]


async def test_drop_batch_forgets_its_keys_only(stage: Stage, batch: str) -> None:
    other_batch = str(uuid.uuid4())
    extract, transform = StageKey("acme", batch, "extract"), StageKey("acme", batch, "transform")
    cleared = StageKey("acme", batch, "load")
    neighbours = [StageKey("acme", other_batch, "extract"), StageKey("globex", batch, "extract")]
    for key in (extract, transform, *neighbours):
        await stage.append(key, records(3))
    await stage.clear(cleared)

    assert await stage.drop_batch("acme", batch) == 3  # the cleared job's (empty) key counts too

    for key in (extract, transform, cleared):
        with pytest.raises(StageError):
            await read_all(stage, key)
    for key in neighbours:
        assert await read_all(stage, key) == [records(3)]
    assert await stage.drop_batch("acme", batch) == 0


async def test_tenants_with_one_batch_id_do_not_share_records(stage: Stage, batch: str) -> None:
    acme, globex = StageKey("acme", batch, "extract"), StageKey("globex", batch, "extract")
    await stage.append(acme, records(2))
    await stage.append(globex, records(1, start=100))

    assert await read_all(stage, acme) == [records(2)]
    assert await read_all(stage, globex) == [records(1, start=100)]


@pytest.mark.parametrize("char", [":", "*", "?", "[", "]", "\\"])
async def test_drop_batch_rejects_key_syntax_in_tenant_or_batch(stage: Stage, batch: str, char: str) -> None:
    key = StageKey("acme", batch, "extract")
    await stage.append(key, records(1))

    with pytest.raises(ConfigError, match="tenant_id"):
        await stage.drop_batch(f"ac{char}", batch)
    with pytest.raises(ConfigError, match="batch_id"):
        await stage.drop_batch("acme", f"{batch[:4]}{char}")
    assert await stage.count(key) == 1


@pytest.mark.parametrize("char", [":", "*", "?", "[", "]", "\\"])
@pytest.mark.parametrize("field", ["tenant_id", "batch_id", "job", "prefix"])
def test_stage_key_rejects_separator_and_glob_characters(field: str, char: str) -> None:
    parts = {"tenant_id": "acme", "batch_id": "b1", "job": "extract", "prefix": "restful-etl"}
    parts[field] = f"x{char}y"
    with pytest.raises(ConfigError, match=field):
        StageKey(**parts)


@pytest.mark.parametrize("field", ["tenant_id", "batch_id", "prefix"])
def test_stage_key_rejects_an_empty_tenant_batch_or_prefix(field: str) -> None:
    parts = {"tenant_id": "acme", "batch_id": "b1", "job": "extract", "prefix": "restful-etl"}
    parts[field] = ""
    with pytest.raises(ConfigError, match=field):
        StageKey(**parts)


def test_stage_key_names_tenant_batch_and_job() -> None:
    batch = uuid.UUID("0f9c2b1e-0000-4000-8000-000000000001")  # a flow run id may arrive as a UUID
    key = StageKey("acme", str(batch), "extract-customers")
    assert str(key) == "restful-etl:acme:0f9c2b1e-0000-4000-8000-000000000001:extract-customers"
    assert key.batch_prefix == "restful-etl:acme:0f9c2b1e-0000-4000-8000-000000000001:"
    assert str(StageKey("acme", batch, "x")) == str(StageKey("acme", str(batch), "x"))  # type: ignore[arg-type]


# The keyed index: a job's per-key bookkeeping (the load's natural key -> destination state, claimed keys).


async def scan_all(stage: Stage, key: StageKey, chunk_size: int = 1000) -> list[dict[str, str]]:
    return [chunk async for chunk in stage.index_scan(key, chunk_size)]


def fields(n: int) -> dict[str, str]:
    return {f"key-{i}": f'[{i},"AC-{i}"]' for i in range(n)}


async def test_index_put_then_get_in_field_order_with_none_where_absent(stage: Stage, batch: str) -> None:
    key = StageKey("acme", batch, "load").part("index")
    await stage.index_put(key, {"7": "a", "8|EUR": "b", "Zoë ✓": ""})
    await stage.index_put(key, {"7": "c"})  # a later write of a field wins

    assert await stage.index_get(key, ["8|EUR", "missing", "7", "Zoë ✓"]) == ["b", None, "c", ""]
    assert await stage.index_get(key, []) == []
    assert await stage.index_get(StageKey("acme", batch, "never").part("index"), ["7"]) == [None]


async def test_index_put_of_nothing_writes_nothing(stage: Stage, batch: str) -> None:
    key = StageKey("acme", batch, "load").part("index")
    await stage.index_put(key, {})

    assert await scan_all(stage, key) == []
    assert await stage.drop_batch("acme", batch) == 0


async def test_index_scan_yields_every_field_in_chunks(stage: Stage, batch: str) -> None:
    key = StageKey("acme", batch, "load").part("index")
    await stage.index_put(key, fields(2500))

    chunks = await scan_all(stage, key, chunk_size=500)

    assert len(chunks) > 1 and all(chunks)
    assert {f: v for chunk in chunks for f, v in chunk.items()} == fields(2500)
    assert await scan_all(stage, StageKey("acme", batch, "never").part("index")) == []


async def test_index_scan_tolerates_writes_between_its_chunks(stage: Stage, batch: str) -> None:
    """The load's second pass over missing keys writes their new states back while it scans."""
    key = StageKey("acme", batch, "load").part("index")
    await stage.index_put(key, fields(2500))

    seen: dict[str, str] = {}
    async for chunk in stage.index_scan(key, chunk_size=500):
        seen.update(chunk)
        await stage.index_put(key, dict.fromkeys(chunk, "retired"))

    assert seen.keys() == fields(2500).keys()
    assert set(await stage.index_get(key, list(fields(2500)))) == {"retired"}


async def test_index_drop_forgets_one_index_only(stage: Stage, batch: str) -> None:
    records_key = StageKey("acme", batch, "load")
    index, other = records_key.part("index"), records_key.part("seen")
    await stage.append(records_key, records(2))
    await stage.index_put(index, {"1": "x"})
    await stage.index_put(other, {"1": ""})

    await stage.index_drop(index)
    await stage.index_drop(index)  # dropping what is gone is no error

    assert await stage.index_get(index, ["1"]) == [None]
    assert await stage.index_get(other, ["1"]) == [""]
    assert await read_all(stage, records_key) == [records(2)]


async def test_drop_batch_forgets_its_indexes_too(stage: Stage, batch: str) -> None:
    other_batch = str(uuid.uuid4())
    mine = [StageKey("acme", batch, "load").part("index"), StageKey("acme", batch, "shape").part("unique-3")]
    neighbours = [StageKey("acme", other_batch, "load").part("index"), StageKey("globex", batch, "load").part("index")]
    await stage.append(StageKey("acme", batch, "extract"), records(1))
    for key in (*mine, *neighbours):
        await stage.index_put(key, {"7": "x"})

    assert await stage.drop_batch("acme", batch) == 3  # one job's records and two indexes

    for key in mine:
        assert await stage.index_get(key, ["7"]) == [None]
    for key in neighbours:
        assert await stage.index_get(key, ["7"]) == ["x"]
        await stage.index_drop(key)


async def test_tenants_with_one_batch_id_do_not_share_an_index(stage: Stage, batch: str) -> None:
    acme, globex = StageKey("acme", batch, "load").part("index"), StageKey("globex", batch, "load").part("index")
    await stage.index_put(acme, {"7": "acme's"})
    await stage.index_put(globex, {"8": "globex's"})

    assert await stage.index_get(acme, ["7", "8"]) == ["acme's", None]
    assert await scan_all(stage, globex) == [{"8": "globex's"}]


def test_a_part_of_a_key_is_a_key_of_the_same_batch() -> None:
    key = StageKey("acme", "b1", "load-customers")
    assert str(key.part("index")) == "restful-etl:acme:b1:load-customers.index"
    assert key.part("index").batch_prefix == key.batch_prefix
    with pytest.raises(ConfigError, match="job"):
        key.part("a:b")
