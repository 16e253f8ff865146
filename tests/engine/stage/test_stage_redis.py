"""RedisStage against a real redis-server: layout, chunking, TTL, tenant isolation, outages."""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, StageError, StageUnavailable
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.redis import DEFAULT_TTL, RedisStage

from fixtures.servers import free_port
from fixtures.servers.redis import RedisServer

TTL = 3600


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own emptied database, for looking at what the stage wrote."""
    async with aioredis.Redis.from_url(redis_url) as redis_client:
        yield redis_client


@pytest.fixture
def stage(client: aioredis.Redis) -> RedisStage:
    return RedisStage(client, ttl=TTL)


@pytest.fixture
def batch() -> str:
    return str(uuid.uuid4())


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"customer {i}"} for i in range(n)]


async def keys(client: aioredis.Redis) -> set[str]:
    return {name.decode() async for name in client.scan_iter(match="*")}


async def calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def rpush_calls(client: aioredis.Redis) -> int:
    return await calls(client, "rpush")


async def test_records_rest_in_one_list_per_key_as_orjson(
    stage: RedisStage, client: aioredis.Redis, batch: str
) -> None:
    key = StageKey("acme", batch, "extract-customers")
    await stage.append(key, records(3))

    assert await keys(client) == {f"restful-etl:acme:{batch}:extract-customers", f"restful-etl:acme:{batch}::jobs"}
    assert await client.lrange(str(key), 0, -1) == [orjson.dumps(r) for r in records(3)]
    assert await client.hkeys(f"restful-etl:acme:{batch}::jobs") == [b"extract-customers"]


async def test_the_stages_prefix_names_the_keys(client: aioredis.Redis, batch: str) -> None:
    stage = RedisStage(client, prefix="etl-test")
    await stage.append(StageKey("acme", batch, "extract"), records(1))

    assert f"etl-test:acme:{batch}:extract" in await keys(client)
    assert await stage.drop_batch("acme", batch) == 1
    assert await keys(client) == set()


async def test_append_pushes_in_chunks_of_write_chunk(client: aioredis.Redis, batch: str) -> None:
    stage = RedisStage(client, write_chunk=1000)
    before = await rpush_calls(client)

    await stage.append(StageKey("acme", batch, "extract"), records(2500))

    assert await rpush_calls(client) - before == 3
    assert await stage.count(StageKey("acme", batch, "extract")) == 2500


async def test_a_reader_of_100k_records_holds_one_chunk_at_a_time(
    stage: RedisStage, client: aioredis.Redis, batch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = StageKey("acme", batch, "extract")
    for start in range(0, 100_000, 10_000):
        await stage.append(key, [{"i": i} for i in range(start, start + 10_000)])
    fetched: list[tuple[int, int, int]] = []  # (start, end, items returned) of every LRANGE
    real_lrange = client.lrange

    async def counting_lrange(name: str, start: int, end: int) -> list[bytes]:
        items = await real_lrange(name, start, end)
        fetched.append((start, end, len(items)))
        return items

    monkeypatch.setattr(client, "lrange", counting_lrange)
    consumed = 0
    async for chunk in stage.read(key, chunk_size=1000):
        assert len(chunk) == 1000
        assert chunk[0] == {"i": consumed}
        # Everything fetched so far is this chunk and what the consumer already had: nothing read ahead.
        assert sum(n for _, _, n in fetched) == consumed + len(chunk)
        consumed += len(chunk)

    assert consumed == 100_000
    assert all(end - start + 1 == 1000 for start, end, _ in fetched)  # no LRANGE asked for more than a chunk
    assert len(fetched) == 101  # 100 full chunks, then one empty LRANGE that ends the read


@pytest.mark.parametrize("write", ["append", "clear"])
async def test_writes_set_the_ttl_on_the_key_and_the_batch_hash(
    stage: RedisStage, client: aioredis.Redis, batch: str, write: str
) -> None:
    key = StageKey("acme", batch, "extract")
    await stage.append(key, records(2))
    await client.expire(str(key), 5)
    await client.expire(f"restful-etl:acme:{batch}::jobs", 5)

    if write == "append":
        await stage.append(key, records(1))
        assert 5 < await client.ttl(str(key)) <= TTL  # refreshed by the write
    else:
        await stage.clear(key)
    assert 5 < await client.ttl(f"restful-etl:acme:{batch}::jobs") <= TTL


async def test_records_that_expired_are_an_error_not_an_empty_read(client: aioredis.Redis, batch: str) -> None:
    """The batch's hash outlives a job's list when later jobs refresh it: a read must not pass for empty."""
    stage = RedisStage(client, ttl=TTL)
    key = StageKey("acme", batch, "extract")
    await stage.append(key, records(3))
    await stage.append(key, records(2))
    await client.expire(str(key), 1)
    deadline = time.monotonic() + 10
    while await client.exists(str(key)):  # Redis expires it within its own second or so
        assert time.monotonic() < deadline, "the list did not expire"
        await asyncio.sleep(0.1)

    with pytest.raises(StageError, match="holds 0 of the 5 records staged: the rest expired"):
        [chunk async for chunk in stage.read(key)]
    await stage.clear(key)  # a job that clears its output has staged nothing, and reads as such
    assert [chunk async for chunk in stage.read(key)] == []


async def test_no_ttl_means_no_expiry(client: aioredis.Redis, batch: str) -> None:
    key = StageKey("acme", batch, "extract")
    await RedisStage(client, ttl=None).append(key, records(1))

    assert await client.ttl(str(key)) == -1
    assert await client.ttl(f"restful-etl:acme:{batch}::jobs") == -1


async def test_an_index_is_one_hash_beside_the_jobs_records(
    stage: RedisStage, client: aioredis.Redis, batch: str
) -> None:
    key = StageKey("acme", batch, "load-customers").part("index")
    await stage.index_put(key, {"7": '[1,[["AC-7","3f1c",0,null,false]]]'})

    assert await keys(client) == {f"restful-etl:acme:{batch}:load-customers.index"}  # no job is marked staged
    assert await client.type(str(key)) == b"hash"
    assert await client.hgetall(str(key)) == {b"7": b'[1,[["AC-7","3f1c",0,null,false]]]'}


async def test_index_writes_set_and_refresh_the_ttl(stage: RedisStage, client: aioredis.Redis, batch: str) -> None:
    key = StageKey("acme", batch, "load").part("index")
    await stage.index_put(key, {"1": "a"})
    assert 5 < await client.ttl(str(key)) <= TTL
    await client.expire(str(key), 5)

    await stage.index_put(key, {"2": "b"})

    assert 5 < await client.ttl(str(key)) <= TTL


async def test_index_reads_and_writes_go_in_slices_of_write_chunk(client: aioredis.Redis, batch: str) -> None:
    stage = RedisStage(client, write_chunk=1000)
    key = StageKey("acme", batch, "load").part("index")
    before = {command: await calls(client, command) for command in ("hset", "hmget", "hscan")}

    await stage.index_put(key, {str(i): "x" for i in range(2500)})
    values = await stage.index_get(key, [str(i) for i in range(2600)])
    scanned = [chunk async for chunk in stage.index_scan(key, chunk_size=1000)]

    assert values == ["x"] * 2500 + [None] * 100
    assert await calls(client, "hset") - before["hset"] == 3
    assert await calls(client, "hmget") - before["hmget"] == 3
    assert await calls(client, "hscan") - before["hscan"] == len(scanned) >= 2  # one HSCAN per chunk


def test_default_ttl_is_a_week(client: aioredis.Redis) -> None:
    assert DEFAULT_TTL == 7 * 24 * 3600
    with pytest.raises(ConfigError, match="ttl"):
        RedisStage(client, ttl=0)


async def test_drop_batch_never_touches_another_tenants_or_batchs_keys(
    stage: RedisStage, client: aioredis.Redis
) -> None:
    # Each neighbour's name starts with the dropped batch's tenant or batch id, so only exact parts protect it.
    dropped = [StageKey("acme", "b1", "extract"), StageKey("acme", "b1", "load")]
    kept = [
        StageKey("acme", "b10", "extract"),
        StageKey("acme-eu", "b1", "extract"),
        StageKey("acm", "b1", "extract"),
    ]
    for key in (*dropped, *kept):
        await stage.append(key, records(2))

    assert await stage.drop_batch("acme", "b1") == 2

    assert {str(key) for key in kept} <= await keys(client)
    assert not {str(key) for key in dropped} & await keys(client)
    for key in kept:
        assert await stage.count(key) == 2


@pytest.mark.parametrize("tenant", ["*", "acme*", "acm?", "[a]cme", "acme:b1", "acme\\"])
async def test_a_glob_or_separator_in_a_tenant_id_is_rejected_before_any_command(
    stage: RedisStage, client: aioredis.Redis, tenant: str
) -> None:
    await stage.append(StageKey("acme", "b1", "extract"), records(1))

    with pytest.raises(ConfigError, match="tenant_id"):
        await stage.drop_batch(tenant, "b1")
    with pytest.raises(ConfigError, match="tenant_id"):
        StageKey(tenant, "b1", "extract")
    assert await stage.count(StageKey("acme", "b1", "extract")) == 1


async def test_decimals_stage_as_exact_strings_and_other_types_raise(stage: RedisStage, batch: str) -> None:
    key = StageKey("acme", batch, "transform")
    await stage.append(key, [{"amount": Decimal("10.10")}])
    assert [r async for chunk in stage.read(key) for r in chunk] == [{"amount": "10.10"}]

    with pytest.raises(StageError, match=f"restful-etl:acme:{batch}:transform"):
        await stage.append(key, [{"tags": {"a", "b"}}])
    assert await stage.count(key) == 1  # the failed append wrote nothing


async def test_a_client_that_decodes_responses_works_too(redis_url: str, batch: str) -> None:
    async with RedisStage.from_url(redis_url, decode_responses=True) as stage:
        key = StageKey("acme", batch, "extract")
        await stage.append(key, records(3))
        assert [r async for chunk in stage.read(key, 2) for r in chunk] == records(3)
        await stage.index_put(key.part("index"), {"1": "a"})
        assert await stage.index_get(key.part("index"), ["1", "2"]) == ["a", None]
        assert [chunk async for chunk in stage.index_scan(key.part("index"))] == [{"1": "a"}]
        assert await stage.drop_batch("acme", batch) == 2


async def test_aclose_leaves_a_client_passed_in_open(client: aioredis.Redis) -> None:
    await RedisStage(client).aclose()
    assert await client.ping()


def stage_calls() -> list[tuple[str, Callable[[RedisStage, StageKey], Awaitable[object]]]]:
    async def read(stage: RedisStage, key: StageKey) -> object:
        return [chunk async for chunk in stage.read(key)]

    return [
        ("append", lambda stage, key: stage.append(key, records(1))),
        ("read", read),
        ("count", lambda stage, key: stage.count(key)),
        ("clear", lambda stage, key: stage.clear(key)),
        ("drop_batch", lambda stage, key: stage.drop_batch(key.tenant_id, key.batch_id)),
        ("index_put", lambda stage, key: stage.index_put(key, {"1": "a"})),
        ("index_get", lambda stage, key: stage.index_get(key, ["1"])),
        ("index_scan", lambda stage, key: anext(aiter(stage.index_scan(key)), None)),
        ("index_drop", lambda stage, key: stage.index_drop(key)),
    ]


def assert_names_no_password(error: BaseException, password: str) -> None:
    assert password not in str(error)
    assert password not in "".join(traceback.format_exception(error))  # nor anything it was raised from


@pytest.mark.parametrize("operation,call", stage_calls(), ids=[name for name, _ in stage_calls()])
async def test_a_closed_port_raises_stage_unavailable_without_the_password(
    operation: str, call: Callable[[RedisStage, StageKey], Awaitable[object]]
) -> None:
    password = "hunter2-correct-horse"
    key = StageKey("acme", "b1", "extract")
    async with RedisStage.from_url(f"redis://:{password}@127.0.0.1:{free_port()}/0") as stage:
        with pytest.raises(StageUnavailable) as caught:
            await call(stage, key)

    assert caught.value.operation == operation
    assert f"stage {operation} of restful-etl:acme:b1:" in str(caught.value)
    assert_names_no_password(caught.value, password)


async def test_a_server_stopping_mid_read_raises_stage_unavailable(private_redis_server: RedisServer) -> None:
    password = private_redis_server.password
    assert password and password in private_redis_server.url
    key = StageKey("acme", "b1", "extract")
    async with RedisStage.from_url(private_redis_server.url) as stage:
        await stage.append(key, records(3000))
        reader = stage.read(key, chunk_size=1000)
        assert len(await anext(reader)) == 1000

        private_redis_server.stop()  # the outage: the server is gone between two chunks

        with pytest.raises(StageUnavailable, match="stage read of restful-etl:acme:b1:extract") as caught:
            await anext(reader)
        await reader.aclose()
        with pytest.raises(StageUnavailable, match="stage append"):
            await stage.append(key, records(1))

    assert f"127.0.0.1:{private_redis_server.port}" in str(caught.value)
    assert_names_no_password(caught.value, password)


async def test_a_wrong_password_raises_stage_error_without_it(private_redis_server: RedisServer) -> None:
    url = f"redis://:wrong-password-1234@127.0.0.1:{private_redis_server.port}/0"
    async with RedisStage.from_url(url) as stage:
        with pytest.raises(StageError) as caught:
            await stage.count(StageKey("acme", "b1", "extract"))

    assert not isinstance(caught.value, StageUnavailable)  # retrying will not mend a wrong password
    assert "stage count of restful-etl:acme:b1:extract" in str(caught.value)
    assert_names_no_password(caught.value, "wrong-password-1234")
