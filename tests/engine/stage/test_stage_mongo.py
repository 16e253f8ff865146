"""MongoStage against a real MongoDB-wire server (SecantusDB; and `MONGO_URL`'s where set): layout, chunking,
TTL expiry, tenant isolation, lost records, outages and passwords."""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, StageError, StageUnavailable
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.mongo import INDEXES, JOBS, RECORDS, MongoStage

from fixtures.mongo_server import MONGO_URL
from fixtures.servers import free_port
from fixtures.servers.secantus import SecantusServer

pytestmark = pytest.mark.integration

TTL = 3600
Doc = dict[str, Any]


class Finds(monitoring.CommandListener):
    """Every `find` of staged records the client sends, with the documents its first batch returned."""

    def __init__(self) -> None:
        self.returned: list[int] = []
        self.sent: dict[int, str] = {}  # request id -> collection

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.sent[event.request_id] = event.command["find"]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == "find" and self.sent.pop(event.request_id, None) == RECORDS:
            self.returned.append(len(event.reply["cursor"]["firstBatch"]))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture(params=["secantus", *(["mongo-url"] if MONGO_URL else [])])
def url(request: pytest.FixtureRequest) -> str:
    """A database of the test's own on SecantusDB, and on the `MONGO_URL` server where it is set."""
    return str(request.getfixturevalue("mongo_url" if request.param == "secantus" else "external_mongo_url"))


@pytest.fixture
async def finds() -> Finds:
    return Finds()


@pytest.fixture
async def db(url: str, finds: Finds) -> AsyncIterator[AsyncDatabase[Doc]]:
    """The test's database, through a client that counts its finds, for looking at what the stage wrote."""
    client: AsyncMongoClient[Doc] = AsyncMongoClient(url, event_listeners=[finds])
    yield client.get_default_database()
    await client.close()


@pytest.fixture
def stage(db: AsyncDatabase[Doc]) -> MongoStage:
    return MongoStage(db, ttl=TTL)


@pytest.fixture
def batch() -> str:
    return str(uuid.uuid4())


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"customer {i}"} for i in range(start, start + n)]


async def docs(db: AsyncDatabase[Doc], collection: str, **where: Any) -> list[Doc]:
    return await db[collection].find(where, {"_id": False}).sort([("key", 1), ("n", 1), ("field", 1)]).to_list()


async def read_all(stage: MongoStage, key: StageKey, chunk_size: int = 1000) -> list[dict[str, Any]]:
    return [record async for chunk in stage.read(key, chunk_size) for record in chunk]


async def test_records_rest_in_chunk_documents_under_the_redis_key_names(db: AsyncDatabase[Doc], batch: str) -> None:
    stage = MongoStage(db, ttl=TTL, write_chunk=1000)
    key = StageKey("acme", batch, "extract-customers")
    await stage.append(key, records(2500))

    stored = await docs(db, RECORDS)
    assert [(d["batch"], d["key"], d["n"], d["count"]) for d in stored] == [
        (f"restful-etl:acme:{batch}:", f"restful-etl:acme:{batch}:extract-customers", n, count)
        for n, count in ((0, 1000), (1000, 1000), (2000, 500))
    ]
    assert orjson.loads(stored[1]["records"]) == records(1000, start=1000)
    assert [(d["key"], d["staged"]) for d in await docs(db, JOBS)] == [(str(key), 2500)]


async def test_an_index_is_one_document_per_field_and_marks_no_job(
    stage: MongoStage, db: AsyncDatabase[Doc], batch: str
) -> None:
    key = StageKey("acme", batch, "load-customers").part("index")
    await stage.index_put(key, {"7": '[1,[["AC-7","3f1c",0,null,false]]]', "8": "x"})

    assert [(d["key"], d["field"], d["value"]) for d in await docs(db, INDEXES)] == [
        (f"restful-etl:acme:{batch}:load-customers.index", "7", '[1,[["AC-7","3f1c",0,null,false]]]'),
        (f"restful-etl:acme:{batch}:load-customers.index", "8", "x"),
    ]
    assert await docs(db, JOBS) == []


async def test_the_stages_prefix_names_the_documents(db: AsyncDatabase[Doc], batch: str) -> None:
    stage = MongoStage(db, prefix="etl-test")
    await stage.append(StageKey("acme", batch, "extract"), records(1))

    assert [d["key"] for d in await docs(db, RECORDS)] == [f"etl-test:acme:{batch}:extract"]
    assert await stage.drop_batch("acme", batch) == 1
    assert [await docs(db, name) for name in (RECORDS, JOBS, INDEXES)] == [[], [], []]


async def test_a_reader_holds_one_chunk_at_a_time_and_asks_once_a_chunk(
    stage: MongoStage, batch: str, finds: Finds
) -> None:
    key = StageKey("acme", batch, "extract")
    for start in range(0, 12_000, 200):  # an extract's pages of 200: documents of 200 records
        await stage.append(key, [{"i": i} for i in range(start, start + 200)])
    finds.returned.clear()

    consumed = 0
    async for chunk in stage.read(key, chunk_size=1000):
        assert len(chunk) == 1000 and chunk[0] == {"i": consumed}
        # Everything fetched so far is this chunk and what the consumer had: nothing read ahead.
        assert sum(finds.returned) * 200 == consumed + len(chunk)
        consumed += len(chunk)

    assert consumed == 12_000
    assert finds.returned == [5] * 12  # one find a chunk, each of the five documents that start inside it


async def test_a_chunk_too_large_for_one_document_is_split_and_a_record_too_large_refused(
    stage: MongoStage, db: AsyncDatabase[Doc], batch: str
) -> None:
    key = StageKey("acme", batch, "extract")
    big = [{"id": i, "blob": "x" * 12_000} for i in range(1000)]  # 12 MB of JSON: more than a document takes
    await stage.append(key, big)

    assert [d["count"] for d in await docs(db, RECORDS)] == [500, 500]  # halved until each fits
    assert await read_all(stage, key) == big
    with pytest.raises(StageError, match="too large to stage"):
        await stage.append(key, [{"blob": "x" * 9 * 1024 * 1024}])
    assert await stage.count(key) == 1000  # the refused append wrote nothing


@pytest.mark.parametrize("write", ["append", "clear", "index_put"])
async def test_every_write_stamps_its_documents_with_their_expiry(
    stage: MongoStage, db: AsyncDatabase[Doc], batch: str, write: str
) -> None:
    key = StageKey("acme", batch, "extract")
    before = datetime.now(UTC)
    if write == "append":
        await stage.append(key, records(2))
    elif write == "clear":
        await stage.clear(key)
    else:
        await stage.index_put(key.part("index"), {"1": "a"})

    stamped = [d for name in (RECORDS, JOBS, INDEXES) for d in await docs(db, name)]
    assert stamped
    for doc in stamped:
        expires = doc["expires"].replace(tzinfo=UTC)  # pymongo reads naive UTC datetimes
        assert before + timedelta(seconds=TTL - 5) < expires <= datetime.now(UTC) + timedelta(seconds=TTL)
    indexes = {name: await db[name].index_information() for name in (RECORDS, JOBS, INDEXES)}
    for info in indexes.values():
        assert any(spec["key"] == [("expires", 1)] and spec.get("expireAfterSeconds") == 0 for spec in info.values())


async def test_no_ttl_means_no_expiry(db: AsyncDatabase[Doc], batch: str) -> None:
    key = StageKey("acme", batch, "extract")
    await MongoStage(db, ttl=TTL).index_put(key.part("index"), {"1": "a"})
    stage = MongoStage(db, ttl=None)
    await stage.append(key, records(1))
    await stage.index_put(key.part("index"), {"1": "b"})  # rewritten: its earlier expiry goes

    stored = [d for name in (RECORDS, JOBS, INDEXES) for d in await docs(db, name)]
    assert stored and all("expires" not in d for d in stored)
    with pytest.raises(ConfigError, match="ttl"):
        MongoStage(db, ttl=0)


async def wait_until_gone(db: AsyncDatabase[Doc], collection: str, where: Doc, timeout: float = 90.0) -> None:
    """Poll until the TTL monitor removed every matching document; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while await db[collection].count_documents(where):
        assert time.monotonic() < deadline, f"the TTL monitor left documents of {collection} in place"
        await asyncio.sleep(0.2)


@pytest.fixture(params=["secantus", *(["mongo-url"] if MONGO_URL else [])])
def ttl_url(request: pytest.FixtureRequest) -> str:
    """A database on a SecantusDB whose TTL monitor runs every second; and on `MONGO_URL`'s server where it is set
    (mongod's monitor runs every 60 s, within `wait_until_gone`'s deadline)."""
    if request.param == "mongo-url":
        return str(request.getfixturevalue("external_mongo_url"))
    server: SecantusServer = request.getfixturevalue("ttl_mongo_server")
    return server.url_for("ttl")


async def test_the_ttl_monitor_expires_what_a_batch_staged(ttl_url: str, batch: str) -> None:
    key = StageKey("acme", batch, "extract")
    async with MongoStage.from_url(ttl_url, ttl=1) as stage:
        await stage.append(key, records(3))
        await stage.index_put(key.part("index"), {"7": "x"})
        async with AsyncMongoClient(ttl_url) as client:
            db = client.get_default_database()
            for name in (RECORDS, JOBS, INDEXES):
                await wait_until_gone(db, name, {"batch": key.batch_prefix})

        with pytest.raises(StageError, match="nothing is staged"):
            await read_all(stage, key)
        assert await stage.index_get(key.part("index"), ["7"]) == [None]


async def test_records_that_expired_before_their_count_are_an_error_not_an_empty_read(ttl_url: str, batch: str) -> None:
    """A job's count is rewritten by every append, so it outlives the job's first records."""
    key = StageKey("acme", batch, "extract")
    async with MongoStage.from_url(ttl_url, ttl=TTL) as stage, AsyncMongoClient(ttl_url) as client:
        await stage.append(key, records(3))
        await stage.append(key, records(2))
        db = client.get_default_database()
        await db[RECORDS].update_many({"key": str(key)}, {"$set": {"expires": datetime.now(UTC) - timedelta(1)}})
        await wait_until_gone(db, RECORDS, {"key": str(key)})

        with pytest.raises(StageError, match="holds 0 of the 5 records staged"):
            await read_all(stage, key)
        await stage.clear(key)  # a job that clears its output has staged nothing, and reads as such
        assert await read_all(stage, key) == []


async def test_an_append_cut_off_halfway_reads_as_lost_not_as_a_whole_stage(
    stage: MongoStage, db: AsyncDatabase[Doc], batch: str
) -> None:
    key = StageKey("acme", batch, "extract")
    await stage.append(key, records(2500))
    await db[RECORDS].delete_one({"key": str(key), "n": 2000})  # its last insert never landed

    with pytest.raises(StageError, match="holds 2000 of the 2500 records staged"):
        await read_all(stage, key)


async def test_records_lost_while_being_read_raise(stage: MongoStage, db: AsyncDatabase[Doc], batch: str) -> None:
    key = StageKey("acme", batch, "extract")
    await stage.append(key, records(3000))
    reader = stage.read(key, chunk_size=1000)
    assert await anext(reader) == records(1000)

    await db[RECORDS].delete_one({"key": str(key), "n": 1000})

    with pytest.raises(StageError, match="lost records from position 1000"):
        await anext(reader)
    await reader.aclose()


async def refuse_new_records(db: AsyncDatabase[Doc], validator: Doc | None = None) -> None:
    """The server refuses every record document inserted from now on (`validator` None: none refused again): a
    real write error (DocumentValidationFailure), after the append's count was written."""
    await db.command("collMod", RECORDS, validator=validator or {})


async def test_an_insert_the_server_refuses_leaves_the_count_and_the_records_consistent(
    stage: MongoStage, db: AsyncDatabase[Doc], batch: str
) -> None:
    key = StageKey("acme", batch, "extract")
    await stage.append(key, records(3))
    await refuse_new_records(db, {"never": {"$exists": True}})
    with pytest.raises(StageError, match=f"stage append of {key}.*Document failed validation"):
        await stage.append(key, records(2, start=3))
    await refuse_new_records(db)

    assert await stage.count(key) == 3
    assert await read_all(stage, key) == records(3)  # what the failed append did not store is not missing
    await stage.append(key, records(2, start=3))  # the caller's retry
    assert await read_all(stage, key, chunk_size=2) == records(5)


async def test_an_append_the_server_refuses_halfway_leaves_nothing_of_it(db: AsyncDatabase[Doc], batch: str) -> None:
    stage = MongoStage(db, ttl=TTL, write_chunk=1000)
    key = StageKey("acme", batch, "extract")
    await stage.append(key, records(1000))
    # A document already at the position of the next append's second one: its first goes in, its second is
    # refused (duplicate key), as an ordered insert does
    where = {"batch": key.batch_prefix, "key": str(key)}
    await db[RECORDS].insert_one({**where, "n": 2000, "count": 0, "records": b"[]"})
    with pytest.raises(StageError, match="duplicate key"):
        await stage.append(key, records(2500, start=1000))

    assert [d["n"] for d in await docs(db, RECORDS)] == [0]  # what it stored went again (the blocker with it)
    assert await stage.count(key) == 1000
    await stage.append(key, records(2500, start=1000))
    assert await read_all(stage, key) == records(3500)


async def test_records_lost_after_a_refused_insert_still_raise(
    stage: MongoStage, db: AsyncDatabase[Doc], batch: str
) -> None:
    key = StageKey("acme", batch, "extract")
    await stage.append(key, records(3))
    await refuse_new_records(db, {"never": {"$exists": True}})
    with pytest.raises(StageError):
        await stage.append(key, records(2, start=3))
    await refuse_new_records(db)
    await stage.append(key, records(2, start=3))
    await stage.append(key, records(4, start=5))

    reader = stage.read(key, chunk_size=3)
    assert await anext(reader) == records(3)
    await db[RECORDS].delete_one({"key": str(key), "count": 2})  # stored after the refused positions, then lost
    with pytest.raises(StageError, match="lost records from position"):
        await anext(reader)
    await reader.aclose()
    with pytest.raises(StageError, match="holds 7 of the 9 records staged"):
        await read_all(stage, key)


# Tenant ids a careless query could let match another tenant's: a prefix, a regex, an operator's spelling.
NEIGHBOURS = ["acm", "acme-eu", "acme.", "^acme", "acme|globex", "(ACME)", "$ne", "{}", "acme\n"]


async def test_no_tenant_reads_or_drops_another_tenants_documents(
    stage: MongoStage, db: AsyncDatabase[Doc], batch: str
) -> None:
    acme = StageKey("acme", batch, "extract")
    await stage.append(acme, records(3))
    await stage.index_put(acme.part("index"), {"7": "acme's"})

    for tenant in NEIGHBOURS:
        other = StageKey(tenant, batch, "extract")
        with pytest.raises(StageError, match="nothing is staged"):
            await read_all(stage, other)
        assert await stage.count(other) == 0
        assert await stage.index_get(other.part("index"), ["7"]) == [None]
        assert [chunk async for chunk in stage.index_scan(other.part("index"))] == []
        await stage.index_drop(other.part("index"))
        await stage.clear(other)
        assert await stage.drop_batch(tenant, batch) == 1  # its own (cleared) key, nothing of acme's

    assert await read_all(stage, acme) == records(3)
    assert await stage.index_get(acme.part("index"), ["7"]) == ["acme's"]
    for name in (RECORDS, JOBS, INDEXES):  # every document names its tenant's batch, and only acme's remain
        assert {d["batch"] for d in await docs(db, name)} == {f"restful-etl:acme:{batch}:"}


async def test_drop_batch_never_touches_another_batchs_documents(stage: MongoStage) -> None:
    dropped = [StageKey("acme", "b1", "extract"), StageKey("acme", "b1", "load")]
    kept = [StageKey("acme", "b10", "extract"), StageKey("acme", "b", "extract"), StageKey("acme", "b1x", "load")]
    for key in (*dropped, *kept):
        await stage.append(key, records(2))
        await stage.index_put(key.part("index"), {"1": "x"})

    assert await stage.drop_batch("acme", "b1") == 4  # two jobs' records and two indexes

    for key in kept:
        assert await stage.count(key) == 2 and await stage.index_get(key.part("index"), ["1"]) == ["x"]
    for key in dropped:
        assert await stage.count(key) == 0


async def test_decimals_stage_as_exact_strings_and_other_types_raise(stage: MongoStage, batch: str) -> None:
    key = StageKey("acme", batch, "transform")
    await stage.append(key, [{"amount": Decimal("10.10"), "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}])
    assert await read_all(stage, key) == [{"amount": "10.10", "at": "2026-01-02T03:04:05+00:00"}]

    with pytest.raises(StageError, match=f"restful-etl:acme:{batch}:transform"):
        await stage.append(key, [{"tags": {"a", "b"}}])
    assert await stage.count(key) == 1  # the failed append wrote nothing


async def test_aclose_leaves_a_database_passed_in_open(db: AsyncDatabase[Doc]) -> None:
    await MongoStage(db).aclose()
    assert (await db.command("ping"))["ok"] == 1


@pytest.mark.parametrize("url", ["mongodb://u:s3cr3t-pw@127.0.0.1:notaport/db", "mongodb://u:s3cr3t-pw@/"])
def test_a_url_pymongo_refuses_is_named_not_quoted(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^url: is not a MongoDB URL") as caught:
        MongoStage.from_url(url)
    assert "s3cr3t" not in "".join(traceback.format_exception(caught.value))


def stage_calls() -> list[tuple[str, Callable[[MongoStage, StageKey], Awaitable[object]]]]:
    async def read(stage: MongoStage, key: StageKey) -> object:
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


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    yield free_port()


@pytest.mark.parametrize("operation,call", stage_calls(), ids=[name for name, _ in stage_calls()])
async def test_a_closed_port_raises_stage_unavailable_without_the_password(
    operation: str, call: Callable[[MongoStage, StageKey], Awaitable[object]], closed_port: int
) -> None:
    password = "hunter2-correct-horse"
    key = StageKey("acme", "b1", "extract")
    url = f"mongodb://etl:{password}@127.0.0.1:{closed_port}/etl?serverSelectionTimeoutMS=300"
    async with MongoStage.from_url(url) as stage:
        with pytest.raises(StageUnavailable) as caught:
            await call(stage, key)

    assert caught.value.operation == operation
    assert f"stage {operation} of restful-etl:acme:b1:" in str(caught.value)
    assert f"mongodb://127.0.0.1:{closed_port}/etl" in str(caught.value)
    assert_names_no_password(caught.value, password)


async def test_a_server_stopping_mid_read_raises_stage_unavailable(private_mongo_server: SecantusServer) -> None:
    password = private_mongo_server.password
    assert password and password in private_mongo_server.url
    key = StageKey("acme", "b1", "extract")
    # serverSelectionTimeoutMS: a keyword beats the URL's option; each call after the stop waits this long
    async with MongoStage.from_url(private_mongo_server.url_for("outage"), serverSelectionTimeoutMS=1000) as stage:
        await stage.append(key, records(3000))
        reader = stage.read(key, chunk_size=1000)
        assert len(await anext(reader)) == 1000

        private_mongo_server.stop()  # the outage: the server is gone between two chunks

        with pytest.raises(StageUnavailable, match="stage read of restful-etl:acme:b1:extract") as caught:
            await anext(reader)
        await reader.aclose()
        with pytest.raises(StageUnavailable, match="stage append"):
            await stage.append(key, records(1))

    assert f"mongodb://127.0.0.1:{private_mongo_server.port}/outage" in str(caught.value)
    assert_names_no_password(caught.value, password)


async def test_a_wrong_password_raises_stage_error_without_it(private_mongo_server: SecantusServer) -> None:
    url = f"mongodb://stage:wrong-password-1234@127.0.0.1:{private_mongo_server.port}/etl?authSource=admin"
    async with MongoStage.from_url(url) as stage:
        with pytest.raises(StageError) as caught:
            await stage.count(StageKey("acme", "b1", "extract"))

    assert not isinstance(caught.value, StageUnavailable)  # retrying will not mend a wrong password
    assert "stage count of restful-etl:acme:b1:extract" in str(caught.value)
    assert "user and password" in str(caught.value)
    assert_names_no_password(caught.value, "wrong-password-1234")
