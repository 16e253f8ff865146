"""The Redis stage: each stage key is one Redis LIST of orjson records, written and read in chunks; a job's
index is one HASH beside them.

It outlives the process, so a retried batch (on any worker sharing the Redis) resumes at the failed job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, StageError, StageUnavailable
from prefect_restful_etl.tasks.engine.redaction import redact
from prefect_restful_etl.tasks.engine.stage.base import DEFAULT_TTL, StageKey
from prefect_restful_etl.tasks.engine.stage.encoding import dump

__all__ = ["DEFAULT_TTL", "RedisStage"]

# After batch_prefix's trailing ':' this spells `<prefix>:<tenant>:<batch>::jobs`: no job name can, since
# StageKey rejects ':', yet drop_batch's `<prefix>:<tenant>:<batch>:*` still matches it.
_JOBS_SUFFIX = ":jobs"
_GLOB_SPECIALS = "\\*?[]"


class RedisStage:
    """Records in Redis: one LIST per stage key, `<prefix>:<tenant>:<batch>:<job>`, one record per item.

    ```
    restful-etl:acme:0f9c...:extract-customers   LIST  b'{"id":1,"name":"Ada"}', b'{"id":2,...}', ...
    restful-etl:acme:0f9c...::jobs               HASH  extract-customers -> 1, transform-customers -> 1
    restful-etl:acme:0f9c...:load-customers.index  HASH  7 -> '[2,[["AC-9","3f1c...",2,"2026-...",false]]]', ...
    ```
    The batch's small `::jobs` hash names every job that appended or cleared, so `read` can tell "staged
    nothing" (no chunks) from "never staged" (`StageError`) the way `MemoryStage` does, although Redis
    drops an empty LIST. Every write refreshes the written keys' expiry to `ttl` seconds (None: no expiry).
    An index (`index_put`, `index_get`, `index_scan`) is a HASH written and read in pipelined slices of
    `write_chunk` fields, so a job keeps its per-key bookkeeping here rather than in its process.

    Records go through orjson: JSON types come back as they went in; datetimes, dates and UUIDs come back
    as ISO strings and Decimals as strings. The stage's `prefix` wins over a `StageKey`'s, so that
    `drop_batch`, which has no key to read it from, always names the same keys as the writes.

    Example:
        ```python
        stage = RedisStage.from_url("redis://127.0.0.1:6379/0", ttl=24 * 3600)
        await stage.append(StageKey("acme", batch_id, "extract-customers"), page)
        async for chunk in stage.read(StageKey("acme", batch_id, "extract-customers")):
            ...
        await stage.aclose()
        ```
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "restful-etl",
        ttl: int | None = DEFAULT_TTL,
        write_chunk: int = 1000,
    ) -> None:
        _batch_key("tenant", "batch", prefix)  # StageKey's own check: ConfigError for a bad prefix
        if ttl is not None and ttl < 1:
            raise ConfigError("ttl", "must be at least one second, or None for no expiry")
        if write_chunk < 1:
            raise ConfigError("write_chunk", "must be at least 1")
        self._client = client
        self._owns_client = False
        self._prefix = prefix
        self._ttl = ttl
        self._write_chunk = write_chunk
        kwargs = client.connection_pool.connection_kwargs
        self._where = _address(kwargs)
        self._password = str(kwargs.get("password") or "")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "restful-etl",
        ttl: int | None = DEFAULT_TTL,
        write_chunk: int = 1000,
        **client_options: Any,
    ) -> RedisStage:
        """A stage on its own client for `url` (`redis://[:password@]host:port/db`); `aclose()` closes it."""
        stage = cls(aioredis.Redis.from_url(url, **client_options), prefix=prefix, ttl=ttl, write_chunk=write_chunk)
        stage._owns_client = True
        return stage

    @property
    def prefix(self) -> str:
        """The first part of every key this stage writes, whatever prefix a `StageKey` was given."""
        return self._prefix

    @property
    def client(self) -> aioredis.Redis:
        """The stage's Redis client: what else lives on the stage's server (the API rate limits) uses it too."""
        return self._client

    @property
    def where(self) -> str:
        """The server's address, for messages (never its password)."""
        return self._where

    @property
    def password(self) -> str:
        """The server's password, for masking in messages (empty without one)."""
        return self._password

    async def aclose(self) -> None:
        """Close the client if this stage opened it (`from_url`); a client passed in stays its owner's."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> RedisStage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def append(self, key: StageKey, records: Sequence[dict[str, Any]]) -> None:
        """Add one chunk of records after those already staged under `key`, all or nothing (MULTI/EXEC)."""
        name = self._name(key)
        payload = [dump(record, name) for record in records]
        with self._errors("append", name):
            async with self._client.pipeline(transaction=True) as pipe:
                for start in range(0, len(payload), self._write_chunk):
                    pipe.rpush(name, *payload[start : start + self._write_chunk])
                if payload:
                    self._expire(pipe, name)
                self._mark_job(pipe, key, added=len(payload))
                await pipe.execute()

    async def read(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the staged records in chunks of `chunk_size`, one LRANGE each: never the whole list at once."""
        if chunk_size < 1:
            raise ConfigError("chunk_size", "must be at least 1")
        name = self._name(key)
        with self._errors("read", name):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hget(self._jobs_key(key), key.job)
                pipe.llen(name)
                staged, length = await pipe.execute()
        if staged is None and not length:
            raise StageError(f"nothing is staged under {name} (never written, expired or dropped)")
        if staged is not None and int(staged) > length:  # the list's TTL ran out before the batch's hash's
            raise StageError(f"{name} holds {length} of the {int(staged)} records staged: the rest expired")
        start = 0
        while True:
            with self._errors("read", name):
                raw = await self._client.lrange(name, start, start + chunk_size - 1)
            if raw:
                yield [orjson.loads(item) for item in raw]
            if len(raw) < chunk_size:
                return
            start += len(raw)

    async def count(self, key: StageKey) -> int:
        """How many records rest under `key` (LLEN; 0 for a key never written)."""
        name = self._name(key)
        with self._errors("count", name):
            return int(await self._client.llen(name))

    async def clear(self, key: StageKey) -> None:
        """Forget `key`'s records but remember the job staged (nothing), so a read yields no chunks."""
        name = self._name(key)
        with self._errors("clear", name):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(name)
                self._mark_job(pipe, key, cleared=True)
                await pipe.execute()

    async def drop_batch(self, tenant_id: str, batch_id: str) -> int:
        """Forget every key of one batch (SCAN MATCH, then UNLINK); returns how many jobs' keys and indexes
        were removed."""
        batch = _batch_key(tenant_id, batch_id, self._prefix)
        jobs_key = self._jobs_key(batch)
        pattern = _glob_escape(batch.batch_prefix) + "*"
        with self._errors("drop_batch", pattern):
            jobs = {_text(job) for job in await self._client.hkeys(jobs_key)}
            doomed: list[bytes | str] = []
            async for name in self._client.scan_iter(match=pattern, count=1000):
                doomed.append(name)
                if _text(name) != jobs_key:
                    jobs.add(_text(name)[len(batch.batch_prefix) :])
            # UNLINK frees the memory in the background; in slices so no one command carries every key.
            for start in range(0, len(doomed), 1000):
                await self._client.unlink(*doomed[start : start + 1000])
        return len(jobs)

    async def index_put(self, key: StageKey, mapping: Mapping[str, str]) -> None:
        """Set fields of the HASH under `key`: HSETs of `write_chunk` fields in one MULTI/EXEC, then its TTL."""
        if not mapping:
            return
        name = self._name(key)
        items = list(mapping.items())
        with self._errors("index_put", name):
            async with self._client.pipeline(transaction=True) as pipe:
                for start in range(0, len(items), self._write_chunk):
                    pipe.hset(name, mapping=dict(items[start : start + self._write_chunk]))
                self._expire(pipe, name)
                await pipe.execute()

    async def index_get(self, key: StageKey, fields: Sequence[str]) -> list[str | None]:
        """The values of `fields`, None where absent: HMGETs of `write_chunk` fields in one pipeline."""
        if not fields:
            return []
        name = self._name(key)
        with self._errors("index_get", name):
            async with self._client.pipeline(transaction=False) as pipe:
                for start in range(0, len(fields), self._write_chunk):
                    pipe.hmget(name, list(fields[start : start + self._write_chunk]))
                slices = await pipe.execute()
        return [None if value is None else _text(value) for values in slices for value in values]

    async def index_scan(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[dict[str, str]]:
        """The HASH's fields and values, one HSCAN (COUNT `chunk_size`) per chunk: never the whole hash."""
        if chunk_size < 1:
            raise ConfigError("chunk_size", "must be at least 1")
        name = self._name(key)
        cursor: int = 0
        while True:
            with self._errors("index_scan", name):
                cursor, found = await self._client.hscan(name, cursor, count=chunk_size)
            if isinstance(found, dict) and found:  # redis-py types it a list too, for its RESP3 answer
                yield {_text(field): _text(value) for field, value in found.items()}
            if not cursor:
                return

    async def index_drop(self, key: StageKey) -> None:
        """Forget the HASH under `key` (UNLINK: Redis frees a large one in the background)."""
        name = self._name(key)
        with self._errors("index_drop", name):
            await self._client.unlink(name)

    def _name(self, key: StageKey) -> str:
        if key.prefix != self._prefix:
            key = dataclasses.replace(key, prefix=self._prefix)
        return str(key)

    def _jobs_key(self, key: StageKey) -> str:
        return f"{self._prefix}:{key.tenant_id}:{key.batch_id}:{_JOBS_SUFFIX}"

    def _mark_job(
        self, pipe: aioredis.client.Pipeline, key: StageKey, *, added: int = 0, cleared: bool = False
    ) -> None:
        """The batch's hash counts what each job staged, so a read can tell records that expired from none."""
        jobs_key = self._jobs_key(key)
        if cleared:
            pipe.hset(jobs_key, key.job, 0)
        else:
            pipe.hincrby(jobs_key, key.job, added)
        self._expire(pipe, jobs_key)

    def _expire(self, pipe: aioredis.client.Pipeline, name: str) -> None:
        if self._ttl is not None:
            pipe.expire(name, self._ttl)

    @contextmanager
    def _errors(self, operation: str, name: str) -> Iterator[None]:
        """Redis' errors as StageError, naming the operation, the key and the server, never the password."""
        try:
            yield
        except AuthenticationError as ex:  # a ConnectionError to redis-py, but no retry will mend it
            raise StageError(f"stage {operation} of {name} failed: {self._where}: {self._redacted(ex)}") from ex
        except (RedisConnectionError, RedisTimeoutError, OSError) as ex:
            raise StageUnavailable(operation, name, f"{self._where}: {self._redacted(ex)}") from ex
        except RedisError as ex:
            raise StageError(f"stage {operation} of {name} failed: {self._where}: {self._redacted(ex)}") from ex

    def _redacted(self, ex: BaseException) -> str:
        return redact(f"{type(ex).__name__}: {ex}", [self._password])


def _batch_key(tenant_id: str, batch_id: str, prefix: str) -> StageKey:
    return StageKey(tenant_id, batch_id, "", prefix)


def _glob_escape(text: str) -> str:
    """Escape SCAN MATCH's specials; StageKey rejects them already, this keeps the pattern literal regardless."""
    return "".join(f"\\{char}" if char in _GLOB_SPECIALS else char for char in text)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _address(kwargs: dict[str, Any]) -> str:
    """`redis://host:port/db` (or the socket path): where the stage is, without username or password."""
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
