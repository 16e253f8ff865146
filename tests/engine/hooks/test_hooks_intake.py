"""The durable intake on each stage: events stored in segments, repeats dropped, segments sealed and forgotten."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from prefect_restful_etl.tasks.engine.exceptions import StageError
from prefect_restful_etl.tasks.engine.hooks.counts import IntakeCounts, totals_of
from prefect_restful_etl.tasks.engine.hooks.intake import DONE, OPEN, SEALED, Intake
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey
from prefect_restful_etl.tasks.engine.stage.mongo import RECORDS, MongoStage
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage

BT = "crm-to-accounting"


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"  # the memory stage is one per process: each test its own tenant


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


async def events(intake: Intake, tenant: str, segment: str) -> list[dict[str, Any]]:
    return [event async for chunk in intake.read(tenant, BT, segment) for event in chunk]


async def test_an_event_is_stored_once_and_a_repeat_of_its_id_is_dropped(stage: Stage, tenant: str) -> None:
    intake = Intake(stage)
    first = await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]})
    assert first is not None
    assert await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1, "changed": True}]}) is None
    assert await intake.accept(tenant, BT, "evt_2", {"ids": [2]}) == first
    assert [(e["event_id"], e.get("records"), e.get("ids")) for e in await events(intake, tenant, first)] == [
        ("evt_1", [{"id": 1}], None),
        ("evt_2", None, [2]),
    ]
    assert await intake.waiting(tenant, BT) == 2


@pytest.mark.parametrize("into_window", [0.0, 0.5, 0.999], ids=["window-start", "mid-window", "window-end"])
async def test_event_ids_are_remembered_for_the_dedupe_days_and_then_forgotten(
    stage: Stage, tenant: str, into_window: float
) -> None:
    days = 2
    now = [(20_000 + into_window) * days * 86400]  # wherever in a window of `days` the first arrives
    intake = Intake(stage, dedupe_days=days, clock=lambda: now[0])
    assert await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]})
    now[0] += days * 86400 - 1  # just under the dedupe days later: still a repeat
    assert await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]}) is None
    now[0] += days * 86400 + 1  # more than twice the dedupe days: forgotten
    assert await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]}) is not None


async def test_tenants_and_batch_types_keep_their_own_events(stage: Stage, tenant: str) -> None:
    intake, other = Intake(stage), f"{tenant}-other"
    segment = await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]})
    assert await intake.accept(other, BT, "evt_1", {"records": [{"id": 9}]}) is not None  # not a repeat there
    assert await intake.accept(tenant, "other-type", "evt_1", {"records": [{"id": 9}]}) is not None
    assert segment is not None
    assert [e["records"] for e in await events(intake, tenant, segment)] == [[{"id": 1}]]
    assert await events(intake, other, segment) == []
    with pytest.raises(Exception, match="must not contain"):
        intake.key("a:b", BT, "counts")


async def test_seal_closes_the_open_segment_and_later_events_wait_in_a_new_one(stage: Stage, tenant: str) -> None:
    intake = Intake(stage)
    assert await intake.seal(tenant, BT) == []  # nothing stored: nothing to seal
    first = await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]})
    assert await intake.seal(tenant, BT) == [first]
    second = await intake.accept(tenant, BT, "evt_2", {"records": [{"id": 2}]})
    assert second is not None and second > first  # type: ignore[operator]
    assert await intake.registry(tenant, BT) == {first: SEALED, second: OPEN}
    assert await intake.seal(tenant, BT) == [first, second]  # the first one's micro-batch never completed
    await intake.done(tenant, BT, [first])
    assert await intake.registry(tenant, BT) == {first: DONE, second: SEALED}
    assert await events(intake, tenant, first) == []  # dropped with its micro-batch
    assert await intake.waiting(tenant, BT) == 1


async def test_a_restarted_receiver_finds_its_open_and_sealed_segments(stage: Stage, tenant: str) -> None:
    before = Intake(stage, "main")
    sealed = await before.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]})
    await before.seal(tenant, BT)
    still_open = await before.accept(tenant, BT, "evt_2", {"records": [{"id": 2}]})
    after = Intake(stage, "main")  # a new process
    assert await after.waiting(tenant, BT) == 2
    assert await after.accept(tenant, BT, "evt_3", {"records": [{"id": 3}]}) == still_open
    assert await after.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]}) is None
    assert await after.seal(tenant, BT) == [sealed, still_open]
    assert await Intake(stage, "other").seal(tenant, BT) == []  # another receiver's segments are its own


async def test_the_registry_is_rewritten_without_done_segments(stage: Stage, tenant: str) -> None:
    intake = Intake(stage)
    done = []
    for n in range(25):
        await intake.accept(tenant, BT, f"evt_{n}", {"records": [{"id": n}]})
        segments = await intake.seal(tenant, BT)
        await intake.done(tenant, BT, segments)
        done += segments
    last = await intake.accept(tenant, BT, "evt_last", {"records": [{"id": 99}]})
    registry = await intake.registry(tenant, BT)
    assert len(done) == 25 and len(registry) < 20 and registry[last] == OPEN
    assert await Intake(stage).seal(tenant, BT) == [last]


class SlowAppends:
    """A stage whose appends wait for `release`: an append in flight while the segment is sealed."""

    def __init__(self, stage: Stage) -> None:
        self.stage, self.release, self.entered = stage, asyncio.Event(), asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stage, name)

    async def append(self, key: StageKey, records: list[dict[str, Any]]) -> None:
        self.entered.set()
        await self.release.wait()
        await self.stage.append(key, records)


async def test_seal_returns_only_once_the_appends_in_flight_to_the_old_segment_ended(stage: Stage, tenant: str) -> None:
    slow = SlowAppends(stage)
    intake = Intake(slow)  # type: ignore[arg-type]
    slow.release.set()
    first = await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]})
    slow.release.clear()
    slow.entered.clear()
    in_flight = asyncio.create_task(intake.accept(tenant, BT, "evt_2", {"records": [{"id": 2}]}))
    await slow.entered.wait()
    sealing = asyncio.create_task(intake.seal(tenant, BT))
    await until(lambda: first in intake._settled)  # seal waits there for the append in flight
    assert not sealing.done()  # the second event is not yet in the segment it belongs to
    slow.release.set()
    assert await sealing == [first] and await in_flight == first
    assert [e["event_id"] for e in await events(intake, tenant, first)] == ["evt_1", "evt_2"]


async def test_counts_add_up_across_receivers_and_restarts(stage: Stage, tenant: str) -> None:
    main, other = IntakeCounts(Intake(stage, "main")), IntakeCounts(Intake(stage, "other"))
    main.add(tenant, BT, "accepted", 3)
    main.add(tenant, BT, "refused.signature")
    other.add(tenant, BT, "accepted")
    await main.flush()
    await other.flush()
    restarted = IntakeCounts(Intake(stage, "main"))
    restarted.add(tenant, BT, "accepted")
    await restarted.flush()
    assert await totals_of(Intake(stage), tenant, BT) == {"accepted": 5, "refused.signature": 1}
    assert await totals_of(Intake(stage), tenant, BT, receiver="other") == {"accepted": 1}


@pytest.mark.integration
async def test_an_event_whose_first_store_failed_is_read_after_its_retry(mongo_url: str, tenant: str) -> None:
    """The MongoDB server refuses one event's records after its append counted them: the receiver answers 503,
    the source retries, and the micro-batch reads every event answered 202."""
    async with MongoStage.from_url(mongo_url) as stage, AsyncMongoClient(mongo_url) as client:
        db, intake = client.get_default_database(), Intake(stage)
        segment = await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]})
        await db.command("collMod", RECORDS, validator={"never": {"$exists": True}})  # every insert refused
        with pytest.raises(StageError, match="Document failed validation"):
            await intake.accept(tenant, BT, "evt_2", {"records": [{"id": 2}]})
        await db.command("collMod", RECORDS, validator={})
        assert await intake.accept(tenant, BT, "evt_2", {"records": [{"id": 2}]}) == segment  # the retry

        assert await intake.seal(tenant, BT) == [segment]
        assert [e["event_id"] for e in await events(intake, tenant, segment)] == ["evt_1", "evt_2"]


async def _lose_mongo(url: str, key: StageKey) -> None:
    async with AsyncMongoClient(url) as client:
        await client.get_default_database()[RECORDS].delete_many({"key": str(key)})


async def _lose_redis(url: str, key: StageKey) -> None:
    async with aioredis.Redis.from_url(url) as client:
        await client.delete(str(key))


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["mongo", "redis"])
async def test_a_sealed_segment_whose_events_are_missing_raises_and_is_not_read_as_dropped(
    request: pytest.FixtureRequest, tenant: str, backend: str
) -> None:
    """Its count says events were stored and the stage holds fewer (lost, expired): not an empty segment."""
    url = str(request.getfixturevalue(f"{backend}_url"))
    stage = MongoStage.from_url(url) if backend == "mongo" else RedisStage.from_url(url)
    async with stage:
        intake = Intake(stage)
        segment = await intake.accept(tenant, BT, "evt_1", {"records": [{"id": 1}]})
        await intake.accept(tenant, BT, "evt_2", {"records": [{"id": 2}]})
        assert segment is not None and await intake.seal(tenant, BT) == [segment]
        await (_lose_mongo if backend == "mongo" else _lose_redis)(url, intake.events_key(tenant, BT, segment))

        with pytest.raises(StageError, match="records staged"):
            await events(intake, tenant, segment)
        await intake.done(tenant, BT, [segment])  # once its micro-batch completed, it reads as dropped
        assert await events(intake, tenant, segment) == []
