"""The MongoDB stage: records in chunk documents, a job's index one document per field, on pymongo's async client.

It outlives the process like the Redis stage, so a retried batch (on any worker sharing the database) resumes at
the failed job; MongoDB's TTL monitor expires what a batch leaves behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import orjson
from bson import Binary
from bson.errors import InvalidDocument
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConfigurationError, ConnectionFailure, OperationFailure, PyMongoError

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, StageError, StageUnavailable
from prefect_restful_etl.tasks.engine.redaction import redact
from prefect_restful_etl.tasks.engine.stage.base import DEFAULT_TTL, StageKey
from prefect_restful_etl.tasks.engine.stage.encoding import dump

DEFAULT_DATABASE = "restful_etl"
"""The database when the URL names none (`mongodb://host:27017`)."""
RECORDS, JOBS, INDEXES = "stage_records", "stage_jobs", "stage_indexes"
_MAX_DOC_BYTES = 8 * 1024 * 1024  # a chunk document's records, well inside MongoDB's 16 MiB per document
_NO_END = 2**62  # positions a read walks when no job counted them (records without a stage_jobs document)
_AUTH_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed: no retry will mend them
_Document = dict[str, Any]


class MongoStage:
    """Records in MongoDB, under the same keys as on Redis (`<prefix>:<tenant>:<batch>:<job>`), in three collections:

    ```
    stage_records  {batch: "restful-etl:acme:0f9c...:", key: "restful-etl:acme:0f9c...:extract-customers",
                    n: 1000, count: 1000, records: Binary(b'[{"id":1001,...},...]'), expires: ISODate(...)}
    stage_jobs     {batch: "restful-etl:acme:0f9c...:", key: "...:extract-customers", staged: 2500, stored: 2500,
                    expires: ...}
    stage_indexes  {batch: "restful-etl:acme:0f9c...:", key: "...:load-customers.index", field: "7",
                    value: '[2,[["AC-9","3f1c...",2,"2026-...",false]]]', expires: ...}
    ```
    An append writes a document per `write_chunk` records (fewer where their JSON would pass 8 MiB), `n` being the
    position of its first record; a read asks for the documents that start inside the next chunk, one query a
    chunk. A job's `stage_jobs` document hands out positions (`staged`) and counts the records whose insert
    succeeded (`stored`), so a read tells "staged nothing" from "never staged" and from "some of it expired or was
    lost", while an insert the server refused (the caller told, and retrying) leaves positions a read steps over,
    not records missing. Every filter matches the batch and the key exactly, never a pattern, so no tenant's
    query can reach another tenant's documents.

    Every write stamps the documents it writes with `expires` (now + `ttl`; none when `ttl` is None), which a TTL
    index turns into expiry: unlike a Redis key, each document lives `ttl` after its own last write. Records go
    through orjson as on Redis (tasks/engine/stage/encoding.py), so both stages give back the same values.

    Example:
        ```python
        stage = MongoStage.from_url("mongodb://127.0.0.1:27017/etl", ttl=24 * 3600)
        await stage.append(StageKey("acme", batch_id, "extract-customers"), page)
        async for chunk in stage.read(StageKey("acme", batch_id, "extract-customers")):
            ...
        await stage.aclose()
        ```
    """

    def __init__(
        self,
        database: AsyncDatabase[_Document],
        *,
        prefix: str = "restful-etl",
        ttl: int | None = DEFAULT_TTL,
        write_chunk: int = 1000,
        where: str | None = None,
        password: str | None = None,
    ) -> None:
        StageKey("tenant", "batch", "", prefix)  # StageKey's own check: ConfigError for a bad prefix
        if ttl is not None and ttl < 1:
            raise ConfigError("ttl", "must be at least one second, or None for no expiry")
        if write_chunk < 1:
            raise ConfigError("write_chunk", "must be at least 1")
        self._db = database
        self._records, self._jobs, self._indexes = database[RECORDS], database[JOBS], database[INDEXES]
        self._owns_client = False
        self._prefix, self._ttl, self._write_chunk = prefix, ttl, write_chunk
        self._where = where or _address_of(database)
        self._password = password or ""
        self._ready = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "restful-etl",
        ttl: int | None = DEFAULT_TTL,
        write_chunk: int = 1000,
        **client_options: Any,
    ) -> MongoStage:
        """A stage on its own client for `url` (`mongodb://[user:password@]host:port/database[?options]`, or
        `mongodb+srv://`); the URL's database, else `restful_etl`. `aclose()` closes the client."""
        try:
            client: AsyncMongoClient[_Document] = AsyncMongoClient(url, **client_options)
        except (ConfigurationError, ValueError, TypeError) as ex:
            # pymongo's message may quote the URL, password and all: name the problem only, and chain nothing
            raise ConfigError("url", f"is not a MongoDB URL pymongo accepts ({type(ex).__name__})") from None
        database = client.get_default_database(DEFAULT_DATABASE)
        where, password = _url_parts(url, database.name)
        stage = cls(database, prefix=prefix, ttl=ttl, write_chunk=write_chunk, where=where, password=password)
        stage._owns_client = True
        return stage

    @property
    def prefix(self) -> str:
        """The first part of every key this stage writes, whatever prefix a `StageKey` was given."""
        return self._prefix

    @property
    def password(self) -> str:
        """The server's password, for masking in messages (empty without one)."""
        return self._password

    @property
    def where(self) -> str:
        """`mongodb://host:port/database`: where this stage is, without user or password."""
        return self._where

    async def aclose(self) -> None:
        """Close the client if this stage opened it (`from_url`); a database passed in stays its owner's."""
        if self._owns_client:
            await self._db.client.close()

    async def __aenter__(self) -> MongoStage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def append(self, key: StageKey, records: Sequence[dict[str, Any]]) -> None:
        """Add records after those staged under `key`: their positions first (`staged`), then one insert of their
        documents, then the count of what was stored (`stored`). An insert the server refuses takes back what it
        wrote and leaves its positions unused, which a read steps over; one cut off halfway reads as lost."""
        name, where = self._where_key(key)
        docs = [{**where, "count": len(part), "records": Binary(blob)} for part, blob in self._slices(records, name)]
        with self._errors("append", name):
            await self._ensure_indexes()
            before = await self._jobs.find_one_and_update(
                where,
                self._update(inc={"staged": len(records), "stored": 0}),
                projection={"staged": True, "_id": False},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
            start = position = int((before or {}).get("staged", 0))
            for doc in docs:
                doc["n"], position = position, position + doc["count"]
                doc.update(self._expiry())
            if docs:
                await self._insert(where, docs, start, position)
                await self._jobs.update_one(where, self._update(inc={"stored": len(records)}))

    async def read(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the staged records in chunks of `chunk_size`, one query each: the documents that start inside the
        chunk. Never the whole stage at once; records stored and then lost (expired) raise `StageError`."""
        if chunk_size < 1:
            raise ConfigError("chunk_size", "must be at least 1")
        name, where = self._where_key(key)
        with self._errors("read", name):
            await self._ensure_indexes()
            job = await self._jobs.find_one(where, {"staged": True, "stored": True})
            present = await self._present(where)
        if job is None and not present:
            raise StageError(f"nothing is staged under {name} (never written, expired or dropped)")
        job = job or {}
        stored = int(job.get("stored" if "stored" in job else "staged", 0))  # "staged": a job from before `stored`
        if stored > present:
            raise StageError(f"{name} holds {present} of the {stored} records staged: the rest expired or were lost")
        end = int(job.get("staged", _NO_END))
        pending: list[dict[str, Any]]
        position, taken, pending = 0, 0, []  # pending: read, not yet yielded (less than a chunk, plus one document)
        while position < end:
            docs = await self._starting(where, name, position, min(end, position + chunk_size - len(pending)))
            docs = docs or await self._starting(where, name, position, end, limit=1)  # past unused positions
            if not docs and taken < stored:
                raise _lost(name, position)
            if not docs:
                break  # the positions left were reserved by appends whose insert failed (or has not landed yet)
            for doc in docs:
                if doc["n"] != position:
                    await self._step_over(where, name, position, taken, stored)
                pending.extend(orjson.loads(doc["records"]))
                position, taken = doc["n"] + int(doc["count"]), taken + int(doc["count"])
            while len(pending) >= chunk_size:
                yield pending[:chunk_size]
                del pending[:chunk_size]
        if pending:
            yield pending

    async def count(self, key: StageKey) -> int:
        """How many records rest under `key` (0 for a key never written)."""
        name, where = self._where_key(key)
        with self._errors("count", name):
            return await self._present(where)

    async def clear(self, key: StageKey) -> None:
        """Forget `key`'s records but remember the job staged (nothing), so a read yields no chunks."""
        name, where = self._where_key(key)
        with self._errors("clear", name):
            await self._ensure_indexes()
            await self._records.delete_many(where)  # before the count goes to 0: a half-done clear reads as lost
            await self._jobs.update_one(where, self._update({"staged": 0, "stored": 0}), upsert=True)

    async def drop_batch(self, tenant_id: str, batch_id: str) -> int:
        """Forget every document of one batch; returns how many jobs' keys and indexes were removed."""
        batch = StageKey(tenant_id, batch_id, "", self._prefix).batch_prefix
        names: set[str] = set()
        with self._errors("drop_batch", batch):
            for collection in (self._jobs, self._records, self._indexes):
                names.update(await collection.distinct("key", {"batch": batch}))
            for collection in (self._records, self._indexes, self._jobs):  # the counts last, as in clear
                await collection.delete_many({"batch": batch})
        return len(names)

    async def index_put(self, key: StageKey, mapping: Mapping[str, str]) -> None:
        """Set fields of the index under `key`: one unordered bulk write of upserts per `write_chunk` fields."""
        if not mapping:
            return
        name, where = self._where_key(key)
        items = list(mapping.items())
        with self._errors("index_put", name):
            await self._ensure_indexes()
            for start in range(0, len(items), self._write_chunk):
                writes = [
                    UpdateOne({**where, "field": field}, self._update({"value": value}), upsert=True)
                    for field, value in items[start : start + self._write_chunk]
                ]
                await self._indexes.bulk_write(writes, ordered=False)

    async def index_get(self, key: StageKey, fields: Sequence[str]) -> list[str | None]:
        """The values of `fields`, None where absent: one `$in` query per `write_chunk` fields."""
        name, where = self._where_key(key)
        values: list[str | None] = []
        with self._errors("index_get", name):
            for start in range(0, len(fields), self._write_chunk):
                wanted = list(fields[start : start + self._write_chunk])
                query = {**where, "field": {"$in": wanted}}
                found = {d["field"]: d["value"] async for d in self._indexes.find(query, {"field": 1, "value": 1})}
                values.extend(found.get(field) for field in wanted)
        return values

    async def index_scan(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[dict[str, str]]:
        """The index's fields and values in field order, one query of `chunk_size` per chunk, each after the last
        field of the one before: never the whole index, and every field once."""
        if chunk_size < 1:
            raise ConfigError("chunk_size", "must be at least 1")
        name, where = self._where_key(key)
        query: _Document = dict(where)
        while True:
            with self._errors("index_scan", name):
                cursor = self._indexes.find(query, {"field": True, "value": True}).sort("field").limit(chunk_size)
                docs = await cursor.to_list()
            if docs:
                yield {doc["field"]: doc["value"] for doc in docs}
            if len(docs) < chunk_size:
                return
            query = {**where, "field": {"$gt": docs[-1]["field"]}}

    async def index_drop(self, key: StageKey) -> None:
        """Forget the index under `key`."""
        name, where = self._where_key(key)
        with self._errors("index_drop", name):
            await self._indexes.delete_many(where)

    def _where_key(self, key: StageKey) -> tuple[str, _Document]:
        """The key's name and the exact filter for its documents: the batch's own prefix and the whole key."""
        if key.prefix != self._prefix:
            key = dataclasses.replace(key, prefix=self._prefix)
        return str(key), {"batch": key.batch_prefix, "key": str(key)}

    def _slices(self, records: Sequence[dict[str, Any]], name: str) -> Iterator[tuple[Sequence[Any], bytes]]:
        """`write_chunk` records at a time as one orjson array, halved until its bytes fit a document."""
        pending = [records[start : start + self._write_chunk] for start in range(0, len(records), self._write_chunk)]
        pending.reverse()
        while pending:
            part = pending.pop()
            blob = dump(part, name)
            if len(blob) <= _MAX_DOC_BYTES:
                yield part, blob
            elif len(part) == 1:
                raise StageError(f"a record for {name} is too large to stage ({len(blob)} bytes of JSON)")
            else:
                half = len(part) // 2
                pending += [part[half:], part[:half]]

    def _expiry(self) -> _Document:
        return {} if self._ttl is None else {"expires": datetime.now(UTC) + timedelta(seconds=self._ttl)}

    def _update(self, values: _Document | None = None, *, inc: _Document | None = None) -> _Document:
        """An update setting `values` (adding `inc`) and the document's expiry, or taking it away (no TTL)."""
        update: _Document = {"$inc": inc} if inc else {}
        if values or self._ttl is not None:
            update["$set"] = {**(values or {}), **self._expiry()}
        if self._ttl is None:
            update["$unset"] = {"expires": ""}
        return update

    async def _insert(self, where: _Document, docs: list[_Document], start: int, end: int) -> None:
        """One ordered insert of an append's documents (positions `start` to `end`). Where the server refuses one,
        those it took go again, so a retried append stores its records once; a connection lost halfway may leave
        some, read as they are (more than `stored`: a caller's retry may store them twice)."""
        try:
            await self._records.insert_many(docs, ordered=True)
        except BulkWriteError:
            await self._records.delete_many({**where, "n": {"$gte": start, "$lt": end}})
            raise

    async def _starting(self, where: _Document, name: str, start: int, end: int, *, limit: int = 0) -> list[_Document]:
        """The record documents that start at positions `start` to `end` (`limit` of them, 0: all), in order."""
        window = {**where, "n": {"$gte": start, "$lt": end}}
        with self._errors("read", name):
            cursor = self._records.find(window, {"n": True, "count": True, "records": True}).sort("n").limit(limit)
            return await cursor.to_list()

    async def _step_over(self, where: _Document, name: str, position: int, taken: int, stored: int) -> None:
        """No document starts at `position`: an append reserved it and its insert failed, unless records were lost,
        when the `taken` records read and those resting from `position` on fall short of those `stored`."""
        with self._errors("read", name):
            rest = await self._present({**where, "n": {"$gte": position}})
        if taken + rest < stored:
            raise _lost(name, position)

    async def _present(self, where: _Document) -> int:
        cursor = await self._records.aggregate([{"$match": where}, {"$group": {"_id": None, "n": {"$sum": "$count"}}}])
        totals = await cursor.to_list()
        return int(totals[0]["n"]) if totals else 0

    async def _ensure_indexes(self) -> None:
        """The unique indexes every query runs on, and the TTL index; created once per stage (idempotent)."""
        if self._ready:
            return
        expiry = IndexModel([("expires", ASCENDING)], expireAfterSeconds=0)
        for collection, unique in ((self._records, "n"), (self._jobs, None), (self._indexes, "field")):
            fields = [("batch", ASCENDING), ("key", ASCENDING), *([(unique, ASCENDING)] if unique else [])]
            await collection.create_indexes([IndexModel(fields, unique=True), expiry])
        self._ready = True

    @contextmanager
    def _errors(self, operation: str, name: str) -> Iterator[None]:
        """pymongo's errors as StageError, naming the operation, the key and the server, never the password."""
        try:
            yield
        except OperationFailure as ex:
            raise StageError(f"stage {operation} of {name} failed: {self._where}: {self._described(ex)}") from ex
        except ConnectionFailure as ex:  # refused, dropped, timed out, no server selectable
            raise StageUnavailable(operation, name, f"{self._where}: {self._described(ex)}") from ex
        except (PyMongoError, InvalidDocument) as ex:
            raise StageError(f"stage {operation} of {name} failed: {self._where}: {self._described(ex)}") from ex

    def _described(self, ex: BaseException) -> str:
        """The error's own words, not its details: a bulk write's details hold the documents, records and all."""
        if isinstance(ex, BulkWriteError):
            first = (ex.details.get("writeErrors") or [{}])[0]
            text = f"{first.get('errmsg', 'write failed')} (code {first.get('code')})"
        elif isinstance(ex, OperationFailure):
            text = f"{(ex.details or {}).get('errmsg') or 'operation failed'} (code {ex.code})"
            if ex.code in _AUTH_CODES:
                text += ": check the stage URL's user and password"
        else:
            text = str(ex)
        return redact(f"{type(ex).__name__}: {text}"[:600], [self._password])


def _lost(name: str, position: int) -> StageError:
    return StageError(f"{name} lost records from position {position} while being read (expired?)")


def _url_parts(url: str, database: str) -> tuple[str, str]:
    """`scheme://hosts/database` and the password of a MongoDB URL, read without a DNS lookup (`+srv`)."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo, _, hosts = netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) if userinfo else ""
    return f"{scheme}://{hosts}/{database}", password


def _address_of(database: AsyncDatabase[_Document]) -> str:
    """Where a client passed in points: its seed addresses (`mongodb://h1:27017,h2:27017/db`)."""
    seeds = sorted(database.client.topology_description.server_descriptions())
    return f"mongodb://{','.join(f'{host}:{port}' for host, port in seeds)}/{database.name}"
