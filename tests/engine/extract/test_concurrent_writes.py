"""The extract against a demo CRM written while it is read, and one whose pages contradict their stream.

`/_control/write-during-page` lands writes while a page is served: a patched customer moves to the end of the
(updated_at, id) order, so a reader by page number or offset skips the customer that moved up into the page
it had read. The job must read every customer all the same, or fail; never complete with one missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_support import batch_context
from test_extract import STYLES, control, crm, crm_ids, extract, job, save_watermark, token

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.exceptions import PaginationError, SourceChanged, SourceError
from prefect_restful_etl.tasks.engine.extract.job import ExtractJob
from prefect_restful_etl.tasks.engine.jobtypes import BatchType
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage
from prefect_restful_etl.tasks.engine.transform.job import TransformJob, run_transform

pytestmark = pytest.mark.integration

INCREMENTAL = {"incremental": {"cursor_field": "meta.updated_at", "param": "updated_since"}}
PHONE = "+1 555 0199"


@pytest.fixture
def crm_apis(demo_state: DemoApis) -> DemoApis:
    return demo_state


def first_ids(apis: DemoApis, n: int = 3) -> list[int]:
    """The first customers in the CRM's (updated_at, id) order: on page one whatever the paging."""
    with httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}) as client:
        return [c["id"] for c in client.get("/customers", params={"per_page": n}).raise_for_status().json()["data"]]


def write_during(apis: DemoApis, path: str, params: dict[str, str], **writes: Any) -> None:
    control(apis, "POST", "write-during-page", json={"path": path, "params": params, **writes})


def listing_requests(apis: DemoApis, path: str) -> int:
    return int(control(apis, "GET", "stats")["requests"].get(f"GET {path}", 0))


@pytest.mark.parametrize(
    "style,params",
    [
        pytest.param("page-number", {"page": "3"}, id="page-number"),
        pytest.param("page-number-concurrent", {"page": "3"}, id="page-number-concurrent"),
        pytest.param("offset", {"offset": "60"}, id="offset"),
    ],
)
@pytest.mark.parametrize("incremental", [False, True], ids=["full", "incremental"])
async def test_a_record_patched_while_pages_are_read_makes_no_other_record_go_missing(
    tmp_path: Path, crm_apis: DemoApis, style: str, params: dict[str, str], incremental: bool
) -> None:
    path, records_path, paginator = STYLES[style]
    moved = first_ids(crm_apis)[0]
    write_during(crm_apis, path, params, patch={moved: {"phone": PHONE}})  # moves from page 1 to the end
    extract_job = job(path, records_path, paginator, **(INCREMENTAL if incremental else {}))
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        report, staged = await extract(ctx, extract_job)
    assert sorted(r["id"] for r in staged) == crm_ids(crm_apis)  # each customer once: none skipped, none twice
    assert [r["phone"] for r in staged if r["id"] == moved] == [PHONE]
    if incremental:
        newest = max(r["meta"]["updated_at"] for r in staged)
        assert report.watermark_after == newest and report.counts["extracted"] == len(staged)


def share_email(apis: DemoApis, source: int, target: int) -> str:
    """Give customer `target` customer `source`'s email: two records with one natural key (by email), as a CRM
    with dirty data holds them, neither moving in the sort."""
    with httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}) as client:
        email = str(client.get(f"/customers/{source}").raise_for_status().json()["email"])
    control(apis, "POST", "raw-field", json={"id": target, "field": "email", "json_text": json.dumps(email)})
    return email


POSITIONAL = [
    pytest.param("page-number", {"page": "3"}, id="page-number"),
    pytest.param("page-number-concurrent", {"page": "3"}, id="page-number-concurrent"),
    pytest.param("offset", {"offset": "60"}, id="offset"),
]


@pytest.mark.parametrize("style,params", POSITIONAL)
async def test_two_records_with_one_natural_key_in_the_source_are_staged_not_a_failed_batch(
    tmp_path: Path, crm_apis: DemoApis, style: str, params: dict[str, str]
) -> None:
    """The same key twice in two passes read alike is the source's own duplicate: both are staged (the unique
    screen or the load's duplicate handling makes it one error event), after one pass more, not `passes`."""
    path, records_path, paginator = STYLES[style]
    ids = first_ids(crm_apis, 60)
    email = share_email(crm_apis, ids[2], ids[45])  # on pages 1 and 2 of 30
    before = listing_requests(crm_apis, path)
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        report, staged = await extract(ctx, job(path, records_path, paginator, natural_key=["email"], **INCREMENTAL))
    assert sorted(r["id"] for r in staged) == crm_ids(crm_apis)
    assert [r["id"] for r in staged if r["email"] == email] == [ids[2], ids[45]]
    assert report.counts["extracted"] == len(staged)
    assert listing_requests(crm_apis, path) - before == 2 * 7  # two passes of 7 pages


async def test_a_page_shift_beside_a_duplicate_of_the_source_is_still_read_again(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    """Pass 1 sees the source's duplicate and a patched customer twice; pass 2 only the duplicate, so it cannot
    tell yet; pass 3 reads as pass 2 did, and counts."""
    ids = first_ids(crm_apis, 60)
    email = share_email(crm_apis, ids[2], ids[45])
    write_during(crm_apis, "/customers", {"page": "3"}, patch={ids[0]: {"phone": PHONE}})
    extract_job = job(*STYLES["page-number"], natural_key=["email"])
    before = listing_requests(crm_apis, "/customers")
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        _, staged = await extract(ctx, extract_job)
    assert sorted(r["id"] for r in staged) == crm_ids(crm_apis)
    assert [r["phone"] for r in staged if r["id"] == ids[0]] == [PHONE]
    assert len([r for r in staged if r["email"] == email]) == 2
    assert listing_requests(crm_apis, "/customers") - before == 3 * 7


async def test_a_duplicate_of_the_source_under_writes_in_every_pass_still_fails_the_job(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    ids = first_ids(crm_apis, 60)
    share_email(crm_apis, ids[2], ids[45])
    for n, customer in enumerate(ids[:3]):  # another customer of page 1 moves in each pass
        write_during(crm_apis, "/customers", {"page": "3"}, patch={customer: {"phone": PHONE}}, after=n)
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        with pytest.raises(SourceChanged, match=r"GET crm:/customers .*read 3 times, the source changed each time"):
            await extract(ctx, job(*STYLES["page-number"], natural_key=["email"]))


async def test_the_next_incremental_run_after_a_patched_extract_reads_only_later_changes(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    extract_job = job(*STYLES["page-number"], **INCREMENTAL)
    write_during(crm_apis, "/customers", {"page": "3"}, patch={first_ids(crm_apis)[0]: {"phone": PHONE}})
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        first, staged = await extract(ctx, extract_job)
        assert len({r["id"] for r in staged}) == len(crm_ids(crm_apis))
        await save_watermark(ctx, extract_job, first)
        _, again = await extract(ctx, extract_job)
    assert again == []  # customer 5's new version is at the watermark and was seen


async def test_a_record_deleted_while_offsets_are_read_is_seen_as_a_changed_total(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    write_during(crm_apis, "/offset/customers", {"offset": "60"}, delete=first_ids(crm_apis)[:1])
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        _, staged = await extract(ctx, job(*STYLES["offset"]))
    assert sorted(r["id"] for r in staged) == crm_ids(crm_apis)  # 199: the second pass read what is left


async def test_a_keyset_stream_is_read_once_under_the_same_writes(tmp_path: Path, crm_apis: DemoApis) -> None:
    path, records_path, paginator = STYLES["cursor"]
    moved = first_ids(crm_apis)[0]
    write_during(crm_apis, path, {"limit": "30"}, patch={moved: {"phone": PHONE}})  # during the first page
    keyset = ExtractJob.model_validate(
        {"name": "Extract CRM customers", "api": "crm", "natural_key": ["id"],
         "endpoint": {"path": path, "records_path": records_path, "paginator": paginator, "params": {"limit": 30}}}
    )  # fmt: skip
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        _, staged = await extract(ctx, keyset)
    assert {r["id"] for r in staged} == set(crm_ids(crm_apis))  # its cursor names the last record read
    assert [r["phone"] for r in staged if r["id"] == moved][-1] == PHONE  # read before and after: the last is new
    assert listing_requests(crm_apis, path) == 7  # one pass: 201 records in pages of 30


async def test_a_source_written_during_every_pass_fails_the_job_naming_the_endpoint(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    for n, customer in enumerate(first_ids(crm_apis)):  # another customer of page 1 each pass
        write_during(crm_apis, "/customers", {"page": "3"}, patch={customer: {"phone": PHONE}}, after=n)
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        with pytest.raises(SourceChanged, match=r"GET crm:/customers .*read 3 times, the source changed each time"):
            await extract(ctx, job(*STYLES["page-number"]))


CONTRADICTIONS = [
    pytest.param("empty", PaginationError, r"GET crm:/customers.*: page 3 has 0 records", id="empty-page"),
    pytest.param("null", PaginationError, r"GET crm:/customers.*: page 3 has 0 records", id="null-page"),
    pytest.param("short", PaginationError, r"GET crm:/customers.*: page 3 has 15 records", id="short-page"),
    pytest.param("object", SourceError, r"GET crm:/customers .*data is an object, not a page's list", id="object"),
]


@pytest.mark.parametrize("shape,error,message", CONTRADICTIONS)
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_a_page_that_contradicts_the_stream_fails_the_extract_and_keeps_the_watermark(
    tmp_path: Path, crm_apis: DemoApis, shape: str, error: type[Exception], message: str, concurrent: bool
) -> None:
    control(crm_apis, "POST", "odd-page", json={"path": "/customers", "params": {"page": "3"}, "shape": shape})
    paginator = {"type": "page_number", "page_size": 30, "total_path": "total", "concurrent": concurrent}
    extract_job = job("/customers", "data", paginator, **INCREMENTAL)
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        with pytest.raises(error, match=message):
            await extract(ctx, extract_job)
        assert await ctx.audit.get_watermark(ctx.tenant_id, ctx.batch_type, extract_job.slug) is None


def test_the_demo_crm_serves_a_contradicting_page_once(crm_apis: DemoApis) -> None:
    control(crm_apis, "POST", "odd-page", json={"path": "/customers", "params": {"page": "2"}, "shape": "null"})
    with httpx.Client(base_url=crm_apis.crm_url, headers={"Authorization": f"Bearer {crm_apis.crm_token}"}) as c:
        odd, again = (c.get("/customers", params={"page": 2}).json() for _ in range(2))
    assert odd["data"] is None and odd["total"] == again["total"] == 200 and len(again["data"]) == 100


async def test_the_unique_screen_keeps_the_version_updated_while_the_source_was_paged(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    """A keyset stream reads a customer patched meanwhile twice, the new version last: the transform's unique
    screen keeps that one (by the cursor), counts the old one as a duplicate and says so in one error event."""
    path, records_path, paginator = STYLES["cursor"]
    moved = first_ids(crm_apis)[0]
    write_during(crm_apis, path, {"limit": "30"}, patch={moved: {"phone": PHONE}})
    keyset = ExtractJob.model_validate(
        {"name": "Extract CRM customers", "api": "crm", "natural_key": ["id"],
         "endpoint": {"path": path, "records_path": records_path, "paginator": paginator, "params": {"limit": 30}}}
    )  # fmt: skip
    screen = {"name": "one per customer", "check": "unique", "columns": ["id"], "newest_by": "meta.updated_at"}
    shape = TransformJob.model_validate({"name": "Shape customers", "source": keyset.name, "screens": [screen]})
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        _, extracted = await extract(ctx, keyset)
        report = JobReport(job=shape.name, kind="transform", job_id="t")
        errors = ErrorSink(ctx, shape.name, "t")
        await run_transform(shape, ctx, report, errors, source=ctx.stage_key(keyset.slug), key_fields=["id"])
        shaped = [r async for chunk in ctx.stage.read(ctx.stage_key(shape.slug)) for r in chunk]
        events = await ctx.audit.error_events(ctx.batch_id)
    assert len(extracted) == len(crm_ids(crm_apis)) + 1  # the moved customer, before and after
    assert sorted(r["id"] for r in shaped) == crm_ids(crm_apis)
    assert [r["phone"] for r in shaped if r["id"] == moved] == [PHONE]
    assert report.counts["duplicates"] == 1 and report.counts["transformed"] == len(shaped)
    (event,) = events
    assert (event.screen, event.natural_key) == ("one per customer", str(moved))
    assert "came twice in this batch: kept the one whose meta.updated_at" in event.message


async def test_the_keys_a_read_saw_rest_on_a_redis_stage_and_go_after_it(
    tmp_path: Path, crm_apis: DemoApis, redis_url: str
) -> None:
    write_during(crm_apis, "/customers", {"page": "3"}, patch={first_ids(crm_apis)[0]: {"phone": PHONE}})
    extract_job = job(*STYLES["page-number"])
    apis = {"crm": (crm(crm_apis), token(crm_apis))}
    async with RedisStage.from_url(redis_url) as stage, batch_context(tmp_path, apis) as ctx:
        ctx.stage = stage
        _, staged = await extract(ctx, extract_job)
        left = [name async for name in stage._client.scan_iter(match=f"*{extract_job.slug}.read")]
    assert sorted(r["id"] for r in staged) == crm_ids(crm_apis)
    assert left == []


async def test_a_duplicate_of_the_source_is_told_from_a_move_on_a_redis_stage_too(
    tmp_path: Path, crm_apis: DemoApis, redis_url: str
) -> None:
    ids = first_ids(crm_apis, 60)
    email = share_email(crm_apis, ids[2], ids[45])
    write_during(crm_apis, "/customers", {"page": "3"}, patch={ids[0]: {"phone": PHONE}})
    extract_job = job(*STYLES["page-number"], natural_key=["email"])
    apis = {"crm": (crm(crm_apis), token(crm_apis))}
    async with RedisStage.from_url(redis_url) as stage, batch_context(tmp_path, apis) as ctx:
        ctx.stage = stage
        _, staged = await extract(ctx, extract_job)
    assert sorted(r["id"] for r in staged) == crm_ids(crm_apis)
    assert [r["id"] for r in staged if r["email"] == email] == [ids[2], ids[45]]


async def test_a_duplicate_of_the_source_ends_as_its_newest_version_by_the_cursor_and_one_error_event(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    """Two customers share an email, and the one read last is the older by value (its stamp sorts later as
    text): the extract stages both, and the unique screen, which names no newest_by, keeps the newer by the
    extract's cursor, as the batch type wires it."""
    ids = first_ids(crm_apis, 60)
    email = share_email(crm_apis, ids[2], ids[45])
    control(crm_apis, "POST", "stamp", json={"id": ids[2], "updated_at": "2030-01-01T10:00:00Z"})
    control(crm_apis, "POST", "stamp", json={"id": ids[45], "updated_at": "2030-01-01T11:00:00+02:00"})  # 09:00Z
    screen = {"name": "one per email", "check": "unique", "columns": ["email"]}
    batch = BatchType.model_validate(
        {"name": "crm-emails", "apis": {"crm": crm(crm_apis).model_dump()},
         "jobs": [job(*STYLES["page-number"], natural_key=["email"], incremental={"cursor_field": "updated_at",
                                                                                "param": "updated_since"}).model_dump(),
                  {"kind": "transform", "name": "Shape customers", "source": "Extract CRM customers",
                   "screens": [screen]}]}
    )  # fmt: skip
    extract_job, shape = batch.jobs
    assert isinstance(extract_job, ExtractJob) and isinstance(shape, TransformJob)
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        _, extracted = await extract(ctx, extract_job)
        report = JobReport(job=shape.name, kind="transform", job_id="t")
        key = ctx.stage_key(extract_job.slug)
        await run_transform(shape, ctx, report, ErrorSink(ctx, shape.name, "t"), source=key, key_fields=["email"])
        shaped = [r async for chunk in ctx.stage.read(ctx.stage_key(shape.slug)) for r in chunk]
        events = await ctx.audit.error_events(ctx.batch_id)
    assert [r["id"] for r in extracted if r["email"] == email] == [ids[2], ids[45]]  # the older read last
    assert [r["id"] for r in shaped if r["email"] == email] == [ids[2]]
    assert report.counts["duplicates"] == 1
    (event,) = events
    assert (event.screen, event.natural_key) == ("one per email", email)
    assert "kept the one whose updated_at '2030-01-01T10:00:00Z' is newer" in event.message
