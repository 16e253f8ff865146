"""The lookup sources a transform job declares, by name, and how each is opened for one batch.

```json
"lookups": {
  "countries": {"type": "static", "values": {"DE": "Germany", "FR": "France"}},
  "regions": {"type": "staged", "job": "Extract CRM regions", "key_field": "code", "value_field": "name"},
  "customers": {"type": "api", "api": "accounting", "endpoint": {"path": "/customers", "records_path": "data"},
                "key_field": "external_id", "value_field": "id", "create": true}
}
```
Lookup steps and `exists` screens name a source; each is opened once per job run, so its cache lives
for that batch only. `lookups.py` holds the sources themselves; this module gives them the batch's
stage and API clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.exceptions import RecordError, RetriableError, SourceError
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.jobbase import Endpoint, job_slug
from prefect_restful_etl.tasks.engine.transform.lookups import ApiLookup, LookupSource, StagedLookup, StaticLookup

Record = dict[str, Any]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class StaticLookupConfig(_Config):
    """A mapping written in the configuration: `{"type": "static", "values": {"DE": "Germany"}}`.

    A lookup step `{"op": "lookup", "field": "country", "target": "country_name", "source": "countries"}`:
    ```
    {"id": 7, "country": "DE"}
    -> {"id": 7, "country": "DE", "country_name": "Germany"}
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"type": "static", "values": {"DE": "Germany", "FR": "France"}}]}
    )

    type: Literal["static"] = "static"
    values: dict[str, Any] = Field(description='Key -> value (keys are text: a record\'s `42` finds `"42"`).')

    def open(self, ctx: BatchContext) -> LookupSource:
        return StaticLookup(self.values)


class StagedLookupConfig(_Config):
    """A dataset an earlier job of the same batch staged, read once on first use.

    `{"type": "staged", "job": "Extract countries", "key_field": "code", "value_field": "name"}`;
    without `value_field` the whole staged record is the value. The dataset is held as a dict for the
    job's run, so stage a dimension here (countries, currencies), not the records that stream through.
    An extract job `Extract countries` staged, from `GET /countries`:
    ```
    [{"code": "DE", "name": "Germany"}, {"code": "FR", "name": "France"}]
    ```
    so `{"op": "lookup", "field": "country", "target": "country_name", "source": "countries"}` makes
    `{"country": "DE"}` into `{"country": "DE", "country_name": "Germany"}`. The batch's `extracted` count leaves
    out an extract that only lookups read; its own count stays in its `etl_job` row.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"type": "staged", "job": "Extract countries", "key_field": "code", "value_field": "name"}]
        }
    )

    type: Literal["staged"] = "staged"
    job: str = Field(min_length=1, description="The name of an earlier job of the batch type.")
    key_field: str = Field(min_length=1, description="The key's field in the staged records (a dotted path).")
    value_field: str | None = Field(
        default=None, description="The field a lookup returns (a dotted path); null: the whole staged record."
    )

    def open(self, ctx: BatchContext) -> LookupSource:
        key = ctx.stage_key(job_slug(self.job))

        def records() -> AsyncIterator[list[Record]]:
            return ctx.stage.read(key)

        return StagedLookup(records, self.key_field, self.value_field)


class ApiLookupConfig(_Config):
    """A dimension in an API of the batch (usually the destination): natural key in, its id out.

    ```json
    {"type": "api", "api": "accounting", "endpoint": {"path": "/customers", "records_path": "data"},
     "key_field": "external_id", "value_field": "id", "create": true}
    ```
    A key is fetched as `GET <path>?<filter_param>=<key>` (`filter_param` defaults to `key_field`); the
    first returned record whose `key_field` equals the key (compared as text) is the match, and pages
    (the endpoint's or the API's paginator) are read until one turns up. So an API that ignores the
    filter yields neither a wrong member nor a false miss (which would infer a duplicate member), at
    the price of reading its pages for each new key. With `create`, a lookup step whose `on_miss` is
    `infer` POSTs an inferred member (key plus its `placeholder` fields) to the same path.
    ```
    GET /customers?external_id=7
    200 {"data": [{"id": "AC-000007", "external_id": "7", "name": "Acme"}]}      -> "AC-000007"
    POST /customers  {"external_id": "9", "name": "Unknown customer"}            (a miss, with create and infer)
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "api",
                    "api": "accounting",
                    "endpoint": {"path": "/customers", "records_path": "data"},
                    "key_field": "external_id",
                    "value_field": "id",
                    "create": True,
                }
            ]
        }
    )

    type: Literal["api"] = "api"
    api: str = Field(min_length=1, description="The name of one of the batch type's APIs.")
    endpoint: Endpoint = Field(description="The collection looked up (and, with `create`, posted to).")
    key_field: str = Field(min_length=1, description="The natural key's field in the API's records.")
    value_field: str = Field(default="id", description="The field a lookup returns: the API's own id.")
    filter_param: str | None = Field(default=None, description="The query parameter that filters by key.")
    create: bool = Field(default=False, description="Allow inferred members (late-arriving dimension rows).")

    def open(self, ctx: BatchContext) -> LookupSource:
        client = ctx.client(self.api)
        fetch_one = self._fetcher(client)
        create = self._creator(client, fetch_one) if self.create else None
        return ApiLookup(fetch_one, create, key_field=self.key_field, value_field=self.value_field)

    def _fetcher(self, client: RestClient) -> Any:
        path, param, endpoint = self.endpoint.path, self.filter_param or self.key_field, self.endpoint

        async def fetch_one(key: Any) -> Record | None:
            pages = client.paginate(path, params={**endpoint.params, param: key}, records_path=endpoint.records_path,
                                    paginator=endpoint.paginator)  # fmt: skip
            try:
                async with aclosing(pages):  # stop reading pages at the match
                    async for records in pages:
                        found = next((r for r in records if _same_key(get_path(r, self.key_field), key)), None)
                        if found is not None:
                            return found
            except RetriableError:
                raise  # the API is down, not the key: fail the job so that a retry converges
            except SourceError as ex:
                if ex.status == 404:
                    return None
                raise
            return None

        return fetch_one

    def _creator(self, client: RestClient, fetch_one: Callable[[Any], Awaitable[Record | None]]) -> Any:
        """POSTs an inferred member, once: an answer lost to a 429, a 5xx or a cut connection (the member may have
        landed) is followed by a look-up of its key, and only a key still absent is sent again."""
        path = self.endpoint.path

        async def create(member: Record) -> Record | None:
            key = get_path(member, self.key_field)
            attempt = 1
            while True:
                try:
                    response = await client.request("POST", path, json=member, attempts=1)
                    break
                except RetriableError as lost:
                    found = await fetch_one(key)
                    if found is not None:
                        return found  # it landed: its answer was lost, not the member
                    if attempt >= client.api.max_attempts:
                        raise  # the API is down, not the record: fail the job so that a retry converges
                    await client.pause(attempt, lost)
                    attempt += 1
                except SourceError as ex:  # the API refused this member: this record's problem, not the batch's
                    message = f"{self.api} refused an inferred member: {ex}"
                    raise RecordError(message, column=self.key_field, value=key) from ex
            body = response.json() if response.content else None
            return body if isinstance(body, dict) else None

        return create


LookupConfig = Annotated[StaticLookupConfig | StagedLookupConfig | ApiLookupConfig, Field(discriminator="type")]


def _same_key(found: Any, key: Any) -> bool:
    return found is not None and str(found) == str(key)


def open_lookup_sources(configs: Mapping[str, LookupConfig], ctx: BatchContext) -> dict[str, LookupSource]:
    """One fresh source per name for this job run: caches never outlive the batch."""
    return {name: config.open(ctx) for name, config in configs.items()}
