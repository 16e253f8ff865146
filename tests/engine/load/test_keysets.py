"""Key sets in memory and on each stage, and Claims: a unique screen's keys asked and written a chunk at a time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Collection, Sequence

import pytest

from prefect_restful_etl.tasks.engine.load.keysets import Claims, KeySet, MemoryKeySet, StagedKeySet
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage
from prefect_restful_etl.tasks.engine.stage.mongo import MongoStage
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage


@pytest.fixture(
    params=["memory-set", "memory-stage", "redis-stage", pytest.param("mongo-stage", marks=pytest.mark.integration)]
)
async def key_set(request: pytest.FixtureRequest) -> AsyncIterator[KeySet]:
    key = StageKey("acme", str(uuid.uuid4()), "shape").part("unique-1")
    if request.param == "memory-set":
        yield MemoryKeySet()
    elif request.param == "memory-stage":
        yield StagedKeySet(MemoryStage(), key)
        await MemoryStage().drop_batch(key.tenant_id, key.batch_id)
    elif request.param == "redis-stage":
        async with RedisStage.from_url(request.getfixturevalue("redis_url")) as stage:
            yield StagedKeySet(stage, key)
    else:
        async with MongoStage.from_url(request.getfixturevalue("mongo_url")) as mongo_stage:
            yield StagedKeySet(mongo_stage, key)


async def test_add_contains_and_drop(key_set: KeySet) -> None:
    assert isinstance(key_set, KeySet)
    assert await key_set.contains(["7", '["a","b"]']) == [False, False]

    await key_set.add({"7", '["a","b"]'})
    await key_set.add([])

    assert await key_set.contains(["8", "7", '["a","b"]', "7"]) == [False, True, True, True]
    assert await key_set.contains([]) == []
    await key_set.drop()
    assert await key_set.contains(["7"]) == [False]


class CountingKeySet(MemoryKeySet):
    """A key set that counts its round trips."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []
        self.added: list[set[str]] = []

    async def contains(self, members: Sequence[str]) -> list[bool]:
        self.asked.append(list(members))
        return await super().contains(members)

    async def add(self, members: Collection[str]) -> None:
        self.added.append(set(members))
        await super().add(members)


async def test_claims_ask_once_a_chunk_and_write_once_a_chunk() -> None:
    keys = CountingKeySet()
    claims = Claims(keys)

    await claims.prefetch(["1", "2", "1"])
    assert [await claims.taken(m) for m in ("1", "2")] == [False, False]
    claims.claim("1")  # its record was kept; 2's was rejected
    assert [await claims.taken(m) for m in ("1", "2")] == [True, False]
    await claims.flush()

    await claims.prefetch(["1", "2", "3"])
    assert [await claims.taken(m) for m in ("1", "2", "3")] == [True, False, False]
    await claims.flush()

    assert keys.asked == [["1", "2"], ["1", "2", "3"]]
    assert keys.added == [{"1"}]  # the second chunk claimed nothing: no write


async def test_a_member_not_prefetched_is_asked_alone() -> None:
    keys = CountingKeySet()
    await keys.add({"9"})
    claims = Claims(keys)

    assert await claims.taken("9") is True
    assert await claims.taken("9") is True  # remembered until the flush
    assert keys.asked == [["9"]]


async def test_drop_forgets_pending_and_written_claims() -> None:
    keys = CountingKeySet()
    claims = Claims(keys)
    claims.claim("1")
    await claims.flush()
    claims.claim("2")

    await claims.drop()

    assert [await claims.taken(m) for m in ("1", "2")] == [False, False]
    assert keys.added == [{"1"}]
