"""Lookups (Kimball's surrogate key pipeline): natural key in, surrogate key (or any value) out.

A `LookupSource` answers `await source.get(key)` with a value, or `None` for a miss. Three sources:
a static mapping, a dataset staged earlier in the batch, and a destination API. Create one source per
batch: each caches what it has seen, misses included, for that batch only. The engine knows nothing of
HTTP or the stage; the job runner hands it closures.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable, Hashable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RecordError
from prefect_restful_etl.tasks.engine.http.paths import get_path, own_copy, set_path

Record = dict[str, Any]


@runtime_checkable
class LookupSource(Protocol):
    """Where a lookup finds values: `await get(key)` returns the value, or `None` when the key is unknown."""

    async def get(self, key: Hashable) -> Any: ...


@runtime_checkable
class InferringLookupSource(LookupSource, Protocol):
    """A source that can also add an inferred member (a late-arriving dimension row) for an unknown key."""

    can_create: bool

    async def create_member(self, key: Hashable, fields: Mapping[str, Any]) -> Any: ...


def _norm(key: Any) -> Hashable:
    # JSON object keys are text while record values may be numbers: 42 and "42" are the same natural key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    return key


class StaticLookup:
    """A mapping given in the configuration: `{"DE": "Germany", "FR": "France"}`."""

    def __init__(self, mapping: Mapping[Any, Any]) -> None:
        self._values = {_norm(k): v for k, v in mapping.items()}

    async def get(self, key: Hashable) -> Any:
        return self._values.get(_norm(key))


class StagedLookup:
    """A dataset staged earlier in the same batch, read once on first use and kept as a dict.

    `StagedLookup(lambda: stage.iter_records(key), key_field="code", value_field="id")`: the factory
    returns an async iterable of records (or of lists of records, as the stage reads in chunks).
    A later record with the same key wins; records without a key are skipped. `value_field=None`
    keeps the whole record as the value.
    """

    def __init__(
        self,
        records: Callable[[], AsyncIterable[Record | list[Record]]],
        key_field: str,
        value_field: str | None,
    ) -> None:
        self._records, self.key_field, self.value_field = records, key_field, value_field
        self._values: dict[Hashable, Any] | None = None
        self._lock = asyncio.Lock()

    async def get(self, key: Hashable) -> Any:
        if self._values is None:
            async with self._lock:  # concurrent first lookups read the stage once
                if self._values is None:
                    self._values = await self._load()
        return self._values.get(_norm(key))

    async def _load(self) -> dict[Hashable, Any]:
        values: dict[Hashable, Any] = {}
        async for item in self._records():
            for record in item if isinstance(item, list) else [item]:
                key = get_path(record, self.key_field)
                if key is not None:
                    values[_norm(key)] = get_path(record, self.value_field) if self.value_field else record
        return values


class ApiLookup:
    """A dimension in the destination API, asked one key at a time, every answer (misses too) cached.

    `ApiLookup(fetch_one=find_customer, create=post_customer, key_field="email", value_field="id")`:
    `fetch_one(key)` returns the destination record or `None`; `create(record)` posts an inferred
    member built from the natural key and placeholder fields and returns the created record.
    A key's member is created at most once per batch: when the creation answers without the new
    value (no body), the member is fetched once more; if it still cannot be found, later records
    with that key are rejected rather than posting the member again.
    """

    def __init__(
        self,
        fetch_one: Callable[[Any], Awaitable[Record | None]],
        create: Callable[[Record], Awaitable[Record | None]] | None = None,
        *,
        key_field: str,
        value_field: str,
    ) -> None:
        self._fetch_one, self._create = fetch_one, create
        self.key_field, self.value_field = key_field, value_field
        self._cache: dict[Hashable, Any] = {}
        self._created: set[Hashable] = set()  # keys this batch created a member for, value known or not
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self.fetched = self.created = 0

    @property
    def can_create(self) -> bool:
        return self._create is not None

    async def get(self, key: Hashable) -> Any:
        norm = _norm(key)
        if norm in self._cache:
            return self._cache[norm]
        async with self._locks.setdefault(norm, asyncio.Lock()):  # one request per key, however many wait
            if norm not in self._cache:
                self.fetched += 1
                found = await self._fetch_one(key)
                self._cache[norm] = None if found is None else get_path(found, self.value_field)
        return self._cache[norm]

    async def create_member(self, key: Hashable, fields: Mapping[str, Any]) -> Any:
        if self._create is None:
            raise RecordError(f"lookup on {self.key_field} cannot create members", column=self.key_field, value=key)
        norm = _norm(key)
        async with self._locks.setdefault(norm, asyncio.Lock()):
            if self._cache.get(norm) is None and norm not in self._created:  # another record may have made it
                member = dict(fields)
                set_path(member, self.key_field, key)
                created = await self._create(member)
                self._created.add(norm)
                self.created += 1
                value = None if created is None else get_path(created, self.value_field)
                if value is None:  # created, but the answer does not say its value: ask for the member
                    self.fetched += 1
                    found = await self._fetch_one(key)
                    value = None if found is None else get_path(found, self.value_field)
                self._cache[norm] = value
        return self._cache.get(norm)


class Lookup(BaseModel):
    """Replace or enrich a field through a lookup source.

    ```json
    {"op": "lookup", "field": "country", "target": "country_id", "source": "countries",
     "on_miss": "infer", "placeholder": {"name": "Unknown country"}}
    ```
    `source` names a `LookupSource` the job runner provides for the batch, or is an inline mapping.
    `on_miss`: `reject` (RecordError), `default` (write `default`), or `infer` (create an inferred member
    in the destination from the natural key and `placeholder`, and use its new value). A null natural
    key is not looked up: the target gets `default` (Kimball's "not applicable" member). With an inline mapping:
    ```
    {"id": 7, "country": "DE"}
    -> {"id": 7, "country": "DE", "country_name": "Germany"}
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {"op": "lookup", "field": "country", "target": "country_name", "source": {"DE": "Germany"}},
                {
                    "op": "lookup",
                    "field": "customer_number",
                    "target": "customer_id",
                    "source": "customers",
                    "on_miss": "infer",
                    "placeholder": {"name": "Unknown customer"},
                },
            ]
        },
    )

    op: Literal["lookup"] = "lookup"
    field: str = Field(min_length=1, description="The field holding the key looked up (a dotted path).")
    target: str | None = Field(default=None, description="Where the value goes; default: replaces `field`.")
    source: str | dict[str, Any] = Field(description="The name of one of the job's `lookups`, or an inline mapping.")
    on_miss: Literal["reject", "default", "infer"] = Field(
        default="reject",
        description="A key the source lacks: reject the record, write `default`, or create an inferred member.",
    )
    default: Any = Field(default=None, description="Written on a miss (`default`) and for a null key.")
    placeholder: dict[str, Any] = Field(
        default_factory=dict, description="infer: the fields an inferred member gets besides its natural key."
    )

    @property
    def source_name(self) -> str:
        return self.source if isinstance(self.source, str) else "inline mapping"

    async def apply(self, record: Record, source: LookupSource) -> Record:
        key = get_path(record, self.field)
        if key is None:
            value = self.default
        elif isinstance(key, (dict, list)):
            raise RecordError(f"lookup {self.source_name}: a key must be a scalar", column=self.field, value=key)
        else:
            value = await source.get(key)
            if value is None:
                value = await self._miss(key, source)
        set_path(record, self.target or self.field, own_copy(value))  # the cached value stays the cache's
        return record

    async def _miss(self, key: Any, source: LookupSource) -> Any:
        if self.on_miss == "default":
            return self.default
        if self.on_miss == "infer" and isinstance(source, InferringLookupSource):
            value = await source.create_member(key, self.placeholder)
            if value is not None:
                return value
            raise RecordError(
                f"lookup {self.source_name}: creating an inferred member for {key!r} returned no value",
                column=self.field, value=key,
            )  # fmt: skip
        raise RecordError(f"lookup {self.source_name}: no member for {key!r}", column=self.field, value=key)


def resolve_source(
    source: str | Mapping[str, Any], sources: Mapping[str, LookupSource], *, infer: bool = False
) -> LookupSource:
    """The source a lookup step or screen reads, checked before the first record (a ConfigError names it).

    `source` names one of the batch's `sources`, or is an inline mapping; `infer` asks for a source
    that can create inferred members.
    """
    if not isinstance(source, str):
        return StaticLookup(source)
    if source not in sources:
        raise ConfigError(f"lookup {source!r}", f"no such lookup source in this batch (have: {sorted(sources)})")
    found = sources[source]
    if infer and not (isinstance(found, InferringLookupSource) and found.can_create):
        raise ConfigError(f"lookup {source!r}", "on_miss 'infer' needs a source that can create members")
    return found
