"""The transform job's runner: steps, lookups and screens over a memory stage and a temporary audit database."""

from __future__ import annotations

import json
import pickle
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import respx
from engine_support import batch_context
from pydantic import SecretStr, ValidationError

from prefect_restful_etl.tasks.engine.audit.tables import EtlErrorEvent
from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import RetriableError, ScreenStop
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.jobbase import job_slug
from prefect_restful_etl.tasks.engine.jobtypes import BatchType
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage
from prefect_restful_etl.tasks.engine.transform.job import TransformJob, run_transform

SOURCE = "Extract customers"
CUSTOMERS = [
    {"id": 1, "email": "ada@example.com", "country": "DE", "ltv": "10.5", "phone": "+49 1"},
    {"id": 2, "email": None, "country": "FR", "ltv": "3", "phone": "+33 2"},  # no email: rejected
    {"id": 3, "email": "ben@example.com", "country": "ZZ", "ltv": "7", "phone": "+1 3"},  # unknown country: rejected
    {"id": 4, "email": "chloe@example.com", "country": "FR", "ltv": "oops", "phone": "+33 4"},  # cast fails
    {"id": 5, "email": "david@example.com", "country": "FR", "ltv": "1", "phone": None},  # no phone: flagged
    {"id": 1, "email": "ada@example.com", "country": "DE", "ltv": "10.5", "phone": "+49 1"},  # a repeat: it wins
]
SCREENS: list[dict[str, Any]] = [
    {"name": "email present", "check": "not_null", "column": "email", "severity": 8},
    {"name": "known country", "check": "exists", "column": "country", "lookup": "countries", "severity": 6},
    {"name": "one row per customer", "check": "unique", "columns": ["id"], "severity": 9},
    {"name": "phone present", "check": "not_null", "column": "phone", "severity": 2, "action": "pass"},
]


def transform(**changes: Any) -> TransformJob:
    config: dict[str, Any] = {
        "name": "Shape customers",
        "source": SOURCE,
        "steps": [
            {"op": "cast", "fields": {"ltv": "decimal"}},
            {"op": "lookup", "field": "country", "target": "country_name", "source": "countries", "on_miss": "default"},
        ],
        "lookups": {"countries": {"type": "static", "values": {"DE": "Germany", "FR": "France"}}},
        "screens": SCREENS,
        "quality_flag": "quality",
    }
    return TransformJob.model_validate(config | changes)


async def stage(ctx: BatchContext, job_name: str, records: list[dict[str, Any]]) -> StageKey:
    key = ctx.stage_key(job_slug(job_name))
    await ctx.stage.clear(key)
    await ctx.stage.append(key, [dict(r) for r in records])
    return key


async def run(ctx: BatchContext, job: TransformJob, records: list[dict[str, Any]]) -> JobReport:
    source = await stage(ctx, SOURCE, records)
    report = JobReport(job=job.name, kind="transform", job_id="job-1")
    return await run_transform(job, ctx, report, ErrorSink(ctx, job.name, "job-1"), source=source, key_fields=["id"])


async def staged(ctx: BatchContext, job: TransformJob) -> list[dict[str, Any]]:
    return [r for chunk in [c async for c in ctx.stage.read(ctx.stage_key(job.slug))] for r in chunk]


def shown(events: list[EtlErrorEvent] | Any) -> list[tuple[Any, ...]]:
    return [(e.screen, e.natural_key, e.column, e.value, e.severity, e.action) for e in events]


async def test_screens_reject_flag_and_report_every_failure(tmp_path: Path) -> None:
    async with batch_context(tmp_path, {}) as ctx:
        job = transform()
        report = await run(ctx, job, CUSTOMERS)
        out = await staged(ctx, job)
        events = await ctx.audit.error_events(ctx.batch_id)

    assert [(r["id"], r["country_name"], r["quality"]) for r in out] == [
        (5, "France", "flagged"),
        (1, "Germany", "passed"),  # the last read of customer 1: the first is a duplicate
    ]
    assert out[1]["ltv"] == "10.5"
    assert shown(events) == [
        ("email present", "2", "email", None, 8, "reject"),
        ("known country", "3", "country", "ZZ", 6, "reject"),
        ("transform", "4", "ltv", "oops", 5, "reject"),
        ("phone present", "5", "phone", None, 2, "pass"),
        ("one row per customer", "1", "id", "1", 9, "reject"),
    ]
    assert all((e.job, e.job_id, e.tenant_id) == ("Shape customers", "job-1", "t1") for e in events)
    assert "cannot cast ltv to decimal" in events[2].message
    assert report.counts == {"read": 6, "transformed": 2, "rejected": 3, "filtered": 0, "duplicates": 1}
    assert {k: report.quality[k] for k in ("screened", "passed", "flagged", "rejected", "max_severity")} == {
        "screened": 6,
        "passed": 2,
        "flagged": 1,
        "rejected": 3,
        "max_severity": 8,  # an older version of a record is a duplicate, not a quality failure
    }
    assert report.quality["quality_score"] == round(100 * (1 - (8 + 6 + 5 + 2) / 60), 2)
    assert report.quality["failures_by_screen"]["transform"] == 1


async def test_records_a_filter_step_drops_are_counted_as_filtered(tmp_path: Path) -> None:
    orders = [
        {"id": 1, "lines": [{"qty": 2}, {"qty": 0}, {"qty": 0}], "test": False},
        {"id": 2, "lines": [{"qty": 1}], "test": True},
        {"id": 3, "lines": [], "test": False},
    ]
    job = transform(
        steps=[
            {"op": "filter", "expression": "not test"},  # order 2 goes
            {"op": "split", "field": "lines", "parent_keys": {"id": "order_id"}},  # order 3: no lines
            {"op": "filter", "expression": "qty > 0"},
        ],  # two of order 1's lines go
        screens=[],
        quality_flag=None,
    )
    async with batch_context(tmp_path, {}) as ctx:
        report = await run(ctx, job, orders)
        out = await staged(ctx, job)
    assert out == [{"qty": 2, "order_id": 1}]
    assert report.counts == {"read": 3, "transformed": 1, "rejected": 0, "filtered": 3}


async def test_no_quality_flag_field_unless_configured(tmp_path: Path) -> None:
    async with batch_context(tmp_path, {}) as ctx:
        job = transform(quality_flag=None)
        await run(ctx, job, CUSTOMERS[:1])
        [record] = await staged(ctx, job)
    assert "quality" not in record


async def test_a_value_in_the_way_of_a_dotted_path_is_an_error_event_not_a_failed_job(tmp_path: Path) -> None:
    job = transform(steps=[{"op": "default", "values": {"address.city": "unknown"}}], screens=[], quality_flag=None)
    records = [{"id": 1, "address": "Main St"}, {"id": 2, "address": {"city": "Oslo"}}, {"id": 3}]
    async with batch_context(tmp_path, {}) as ctx:
        report = await run(ctx, job, records)
        out = await staged(ctx, job)
        events = await ctx.audit.error_events(ctx.batch_id)
    assert out == [{"id": 2, "address": {"city": "Oslo"}}, {"id": 3, "address": {"city": "unknown"}}]
    assert shown(events) == [("transform", "1", "address.city", "Main St", 5, "reject")]
    assert report.counts == {"read": 3, "transformed": 2, "rejected": 1, "filtered": 0}


class ChunkingStage(MemoryStage):
    """A memory stage that reads in chunks of two and logs reads and writes, to see that records stream."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def read(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[list[dict[str, Any]]]:
        async for chunk in super().read(key, chunk_size=2):
            self.log.append(f"read {len(chunk)}")
            yield chunk

    async def append(self, key: StageKey, records: list[dict[str, Any]]) -> None:
        self.log.append(f"append {len(records)}")
        await super().append(key, records)


async def test_a_stop_screen_writes_its_events_stages_nothing_and_raises(tmp_path: Path) -> None:
    stop = {
        "name": "no unknown country",
        "check": "exists",
        "column": "country",
        "lookup": "countries",
        "severity": 10,
        "action": "stop",
    }
    async with batch_context(tmp_path, {}) as ctx:
        ctx.stage = spy = ChunkingStage()  # chunks of two: customer 1 is staged before customer 3 stops the batch
        job = transform(screens=[SCREENS[0], stop])
        report = JobReport(job=job.name, kind="transform", job_id="job-1")
        source = await stage(ctx, SOURCE, CUSTOMERS)
        spy.log.clear()
        with pytest.raises(ScreenStop, match="'no unknown country' stopped the batch: country 'ZZ'") as caught:
            await run_transform(job, ctx, report, ErrorSink(ctx, job.name, "job-1"), source=source, key_fields=["id"])
        events = await ctx.audit.error_events(ctx.batch_id)
        left = await ctx.stage.count(ctx.stage_key(job.slug))

    assert spy.log == ["read 2", "append 1", "read 2"]  # the first chunk was staged: the stop took it back
    assert caught.value.screen == "no unknown country"
    assert shown(events) == [
        ("email present", "2", "email", None, 8, "reject"),
        ("no unknown country", "3", "country", "ZZ", 10, "stop"),
    ]
    assert left == 0
    assert (report.quality["stopped"], report.quality["max_severity"]) == (1, 10)
    # the stop carries the job's figures to the batch's audit row, even through a pickle (Prefect's results)
    assert caught.value.report is report
    assert report.counts == {"read": 4, "transformed": 0, "rejected": 1, "filtered": 0}  # what it had staged is gone
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (str(copy), copy.screen, copy.report) == (str(caught.value), caught.value.screen, report)


async def test_records_stream_chunk_by_chunk(tmp_path: Path) -> None:
    records = [{"id": i, "email": f"c{i}@example.com", "country": "DE", "ltv": "1", "phone": "1"} for i in range(6)]
    async with batch_context(tmp_path, {}) as ctx:
        ctx.stage = spy = ChunkingStage()
        source = await stage(ctx, SOURCE, records)
        spy.log.clear()
        job = transform()
        report = JobReport(job=job.name, kind="transform", job_id="job-1")
        await run_transform(job, ctx, report, ErrorSink(ctx, job.name, "job-1"), source=source, key_fields=["id"])
    assert spy.log == ["read 2", "append 2"] * 3  # each chunk is staged before the next one is read


async def test_a_staged_lookup_reads_an_earlier_jobs_output(tmp_path: Path) -> None:
    job = transform(
        lookups={
            "countries": {"type": "staged", "job": "Extract countries", "key_field": "code", "value_field": "name"}
        }
    )
    async with batch_context(tmp_path, {}) as ctx:
        await stage(ctx, "Extract countries", [{"code": "DE", "name": "Deutschland"}, {"code": "FR", "name": "France"}])
        report = await run(ctx, job, CUSTOMERS[:3])
        out = await staged(ctx, job)
    assert [(r["id"], r["country_name"]) for r in out] == [(1, "Deutschland")]
    assert report.quality["failures_by_screen"] == {"email present": 1, "known country": 1}


DEST = ApiConfig.model_validate(
    {"name": "dest", "base_url": "http://127.0.0.1:9", "auth": {"type": "bearer"}, "max_attempts": 1}
)
TOKEN = "s3cret-token-value"
BILLS = [
    {"id": 10, "customer": "C1"},
    {"id": 11, "customer": "C2"},
    {"id": 12, "customer": "C1"},
    {"id": 13, "customer": "C9"},
]


def bills_job(on_miss: str = "infer") -> TransformJob:
    return TransformJob.model_validate({
        "name": "Shape bills", "source": SOURCE,
        "steps": [{"op": "lookup", "field": "customer", "target": "customer_id", "source": "customers",
                   "on_miss": on_miss, "placeholder": {"name": "Inferred customer"}}],
        "lookups": {"customers": {"type": "api", "api": "dest", "key_field": "external_id", "create": True,
                                  "endpoint": {"path": "/customers", "records_path": "data"}}},
        "lookup_concurrency": 3,
    })  # fmt: skip


def destination(router: respx.MockRouter, known: dict[str, str], refuse: set[str]) -> list[dict[str, Any]]:
    """The destination's customers: GET filters by `external_id`, POST creates (or refuses) an inferred one."""
    created: list[dict[str, Any]] = []

    def listing(request: httpx.Request) -> httpx.Response:
        key = request.url.params["external_id"]
        return httpx.Response(200, json={"data": [{"id": known[key], "external_id": key}] if key in known else []})

    def create(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["external_id"] in refuse:
            return httpx.Response(422, json={"detail": "external_id: refused"})
        created.append(body)
        known[body["external_id"]] = f"AC-{len(known) + 1}"
        return httpx.Response(201, json={"id": known[body["external_id"]], **body})

    router.get("/customers").mock(side_effect=listing)
    router.post("/customers").mock(side_effect=create)
    return created


async def test_an_api_lookup_fetches_each_key_once_and_infers_members(tmp_path: Path) -> None:
    job = bills_job()
    async with batch_context(tmp_path, {"dest": (DEST, Credentials(token=SecretStr("t")))}) as ctx:
        with respx.mock(base_url="http://127.0.0.1:9", assert_all_called=False) as router:
            created = destination(router, {"C1": "AC-1"}, refuse={"C9"})
            report = await run(ctx, job, BILLS)
            gets = [c for c in router.calls if c.request.method == "GET"]
        out = await staged(ctx, job)
        events = await ctx.audit.error_events(ctx.batch_id)

    assert [(r["id"], r["customer_id"]) for r in out] == [(10, "AC-1"), (11, "AC-2"), (12, "AC-1")]
    assert created == [{"name": "Inferred customer", "external_id": "C2"}]
    assert sorted(c.request.url.params["external_id"] for c in gets) == ["C1", "C2", "C9"]  # once per key
    [event] = events  # the destination refused C9's inferred member: that bill is rejected, the others go on
    assert (event.screen, event.natural_key, event.column, event.value) == ("transform", "13", "external_id", "C9")
    assert "refused an inferred member" in event.message and "422" in event.message
    assert report.counts == {"read": 4, "transformed": 3, "rejected": 1, "filtered": 0}


async def test_a_credential_never_reaches_an_error_event(tmp_path: Path) -> None:
    credentials = Credentials(token=SecretStr(TOKEN))
    records = [{"id": 1, "email": "a@example.com", "country": TOKEN, "ltv": "1", "phone": "1"}]
    async with batch_context(tmp_path, {"dest": (DEST, credentials)}) as ctx:
        await run(ctx, transform(), records)
        events = await ctx.audit.error_events(ctx.batch_id)
    [event] = events
    assert (event.screen, event.value) == ("known country", "**********")
    assert TOKEN not in event.message


async def test_a_credential_in_a_stopping_record_reaches_neither_the_stop_nor_the_natural_key(tmp_path: Path) -> None:
    stop = {
        "name": "no unknown country",
        "check": "exists",
        "column": "country",
        "lookup": "countries",
        "severity": 10,
        "action": "stop",
    }
    records = [{"id": f"key-{TOKEN}", "email": "a@example.com", "country": f"X{TOKEN}", "ltv": "1", "phone": "1"}]
    async with batch_context(tmp_path, {"dest": (DEST, Credentials(token=SecretStr(TOKEN)))}) as ctx:
        with pytest.raises(ScreenStop) as caught:
            await run(ctx, transform(screens=[stop]), records)
        [event] = await ctx.audit.error_events(ctx.batch_id)
    assert "'no unknown country' stopped the batch: country 'X**********' has no match" in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value.args)
    assert (event.natural_key, event.value) == ("key-**********", "X**********")
    assert TOKEN not in event.message


async def test_an_api_that_is_down_fails_the_job(tmp_path: Path) -> None:
    async with batch_context(tmp_path, {"dest": (DEST, Credentials(token=SecretStr("t")))}) as ctx:
        with respx.mock(base_url="http://127.0.0.1:9") as router:
            router.get("/customers").mock(return_value=httpx.Response(503))
            with pytest.raises(RetriableError, match="503"):
                await run(ctx, bills_job(), BILLS)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"lookups": {}}, "steps.1.source: 'countries' is not one of the job's lookups"),
        ({"screens": [SCREENS[0], SCREENS[0]]}, "names must be unique"),
        (
            {"steps": [{"op": "lookup", "field": "country", "source": "countries", "on_miss": "infer"}]},
            "needs an api lookup with create: true",
        ),
        (
            {"screens": [{"name": "x", "check": "exists", "column": "c", "lookup": "regions"}]},
            "screens.0.lookup: 'regions'",
        ),
        ({"lookups": {"countries": {"type": "csv"}}}, "does not match any of the expected tags"),
        ({"quality_flag": "meta.quality"}, "quality_flag"),
    ],
    ids=[
        "unknown-lookup",
        "duplicate-screen",
        "infer-needs-api",
        "unknown-screen-lookup",
        "unknown-lookup-type",
        "dotted-quality-flag",
    ],
)
def test_a_bad_transform_configuration_names_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        transform(**changes)


@pytest.mark.parametrize(
    "lookup,message",
    [
        ({"type": "staged", "job": "Load customers", "key_field": "code"}, "l.job: not the name of an earlier job"),
        ({"type": "api", "api": "erp", "endpoint": {"path": "/x"}, "key_field": "k"}, "l.api: not one of the batch"),
    ],
    ids=["staged-job-not-earlier", "unknown-api"],
)
def test_a_batch_type_checks_what_lookups_refer_to(lookup: dict[str, Any], message: str) -> None:
    raw = {
        "name": "t", "apis": {"dest": DEST.model_dump(mode="json")},
        "jobs": [
            {"kind": "extract", "name": SOURCE, "api": "dest", "endpoint": {"path": "/c"}, "natural_key": ["id"]},
            {"kind": "transform", "name": "Shape", "source": SOURCE, "lookups": {"l": lookup}},
            {"kind": "load", "name": "Load customers", "source": "Shape", "api": "dest", "endpoint": {"path": "/c"},
             "natural_key": ["id"]},
        ],
    }  # fmt: skip
    with pytest.raises(ValidationError, match=f"job 'Shape': lookups.{message}"):
        BatchType.model_validate(raw)


def customer(i: int, **changes: Any) -> dict[str, Any]:
    return {"id": i, "email": f"c{i}@example.com", "country": "DE", "ltv": "1", "phone": "1", **changes}


class CountingRedisStage(RedisStage):
    """A Redis stage that logs its index calls (each one round trip) by the key's last part."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self.log: list[str] = []

    async def index_get(self, key: StageKey, fields: Sequence[str]) -> list[str | None]:
        self.log.append(f"get {key.job.rsplit('.', 1)[-1]}")
        return await super().index_get(key, fields)

    async def index_put(self, key: StageKey, mapping: Mapping[str, str]) -> None:
        self.log.append(f"put {key.job.rsplit('.', 1)[-1]}")
        await super().index_put(key, mapping)


async def test_unique_screen_keys_rest_on_a_redis_stage_a_chunk_at_a_time(tmp_path: Path, redis_url: str) -> None:
    records = ([customer(i, email=None if i == 5 else f"c{i}@example.com") for i in range(1000)]
               + [customer(i) for i in range(1000, 1998)] + [customer(5), customer(0)]  # 5 was rejected: free
               + [customer(i) for i in range(500)])  # fmt: skip
    async with aioredis.Redis.from_url(redis_url) as client:
        redis_stage = CountingRedisStage(client)
        async with batch_context(tmp_path, {}) as ctx:
            ctx.stage = redis_stage
            job = transform()
            winners = StageKey(ctx.tenant_id, ctx.batch_id, job.slug).part("newest-3")
            await redis_stage.index_put(winners, {'["7"]': '["x", 99999]'})  # left by an earlier attempt: forgotten
            redis_stage.log = []
            report = await run(ctx, job, records)
            out = await staged(ctx, job)
            left = [name async for name in client.scan_iter(match=f"*{job.slug}.*")]

    # customer 5 once rejected; the later copies of 0..499 win, each earlier one is a duplicate
    assert report.counts == {"read": 2500, "transformed": 1998, "rejected": 1, "filtered": 0, "duplicates": 501}
    assert sorted(r["id"] for r in out) == list(range(1998))
    # per chunk one question and one write; then the output is read once more, a question per chunk
    assert redis_stage.log == ["get newest-3", "put newest-3"] * 3 + ["get newest-3"] * 3
    assert [n for n in left if not n.decode().endswith(".newest")] == [], "the winners go when the transform ends"
