"""The extract job on real sockets: the demo CRM in every pagination and auth style, incremental, schema, children."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from engine_support import batch_context
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.deployments.demo.crm import customer_schema
from prefect_restful_etl.tasks.engine.audit.tables import EtlWatermark
from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError, SourceError
from prefect_restful_etl.tasks.engine.extract.job import ExtractJob, run_extract
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.report import JobReport

pytestmark = pytest.mark.integration

STYLES = {
    "page-number": ("/customers", "data", {"type": "page_number", "page_size": 30}),
    "page-number-concurrent": (
        "/customers",
        "data",
        {"type": "page_number", "page_size": 30, "total_path": "total", "concurrent": True},
    ),
    "offset": ("/offset/customers", "items", {"type": "offset", "limit": 30, "total_path": "total"}),
    "cursor": ("/cursor/customers", "results.items", {"type": "cursor", "cursor_path": "next_cursor"}),
    "next-url": ("/next-url/customers", "data", {"type": "next_url", "next_url_path": "links.next"}),
    "header-link": ("/customers", "data", {"type": "header_link"}),
    "header-cursor": ("/header-cursor/customers", None, {"type": "header_cursor", "cursor_header": "X-Next-Cursor"}),
    "single-page": ("/all/customers", None, "single_page"),
}


def crm(apis: DemoApis, auth: Any = "bearer", **options: Any) -> ApiConfig:
    return ApiConfig.model_validate(
        {"name": "crm", "base_url": apis.crm_url, "auth": auth, "backoff_base": 0.01} | options
    )


def token(apis: DemoApis) -> Credentials:
    return Credentials(token=SecretStr(apis.crm_token))


def job(path: str, records_path: str | None, paginator: Any = None, **options: Any) -> ExtractJob:
    endpoint = {"path": path, "records_path": records_path, "paginator": paginator}
    return ExtractJob.model_validate(
        {"name": "Extract CRM customers", "api": "crm", "endpoint": endpoint, "natural_key": ["id"]} | options
    )


async def extract(ctx: BatchContext, extract_job: ExtractJob, **kwargs: Any) -> tuple[JobReport, list[dict]]:
    report = JobReport(job=extract_job.name, kind="extract", job_id="j")
    await run_extract(extract_job, ctx, report, ErrorSink(ctx, extract_job.name, "j"), **kwargs)
    staged = [r async for chunk in ctx.stage.read(ctx.stage_key(extract_job.slug)) for r in chunk]
    return report, staged


def crm_ids(apis: DemoApis) -> list[int]:
    with httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}) as client:
        return sorted(c["id"] for c in client.get("/all/customers").raise_for_status().json())


def control(apis: DemoApis, method: str, path: str, **kwargs: Any) -> Any:
    with httpx.Client(base_url=apis.crm_url) as client:
        return client.request(method, f"/_control/{path}", **kwargs).raise_for_status().json()


@pytest.fixture
def crm_apis(demo_apis: DemoApis) -> DemoApis:
    demo_apis.reset()
    return demo_apis


@pytest.mark.parametrize("style", list(STYLES))
async def test_every_pagination_style_reads_every_customer_once(tmp_path: Path, crm_apis: DemoApis, style: str) -> None:
    path, records_path, paginator = STYLES[style]
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        report, staged = await extract(ctx, job(path, records_path, paginator))
    assert sorted(r["id"] for r in staged) == crm_ids(crm_apis)
    assert report.counts["extracted"] == len(staged)


@pytest.mark.parametrize(
    "auth,credentials",
    [
        ("bearer", lambda a: Credentials(token=SecretStr(a.crm_token))),
        ("basic", lambda a: Credentials(username=a.crm_username, password=SecretStr(a.crm_password))),
        (
            {"type": "api_key", "name": "api_key", "location": "query"},
            lambda a: Credentials(api_key=SecretStr(a.crm_api_key)),
        ),
        (
            {"type": "oauth2_client_credentials", "token_url": "/oauth/token", "client_auth": "body"},
            lambda a: Credentials(client_id=a.crm_client_id, client_secret=SecretStr(a.crm_client_secret)),
        ),
    ],
    ids=["bearer", "basic", "api-key-query", "oauth2-client-credentials"],
)
async def test_every_auth_style(tmp_path: Path, crm_apis: DemoApis, auth: Any, credentials: Any) -> None:
    api = crm(crm_apis, auth=auth, paginator={"type": "page_number", "page_size": 100})
    async with batch_context(tmp_path, {"crm": (api, credentials(crm_apis))}) as ctx:
        _, staged = await extract(ctx, job("/customers", "data"))
    assert len(staged) == len(crm_ids(crm_apis))


async def test_rate_limits_and_server_errors_are_retried(tmp_path: Path, crm_apis: DemoApis) -> None:
    control(crm_apis, "POST", "faults", json={"path": "/customers", "status": 429, "times": 2, "retry_after": "0"})
    control(crm_apis, "POST", "faults", json={"path": "/customers", "status": 503, "times": 1})
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        _, staged = await extract(ctx, job(*STYLES["page-number"]))
    assert len(staged) == len(crm_ids(crm_apis))


async def test_incremental_reads_only_what_changed_and_drops_what_it_saw(tmp_path: Path, crm_apis: DemoApis) -> None:
    incremental = {"incremental": {"cursor_field": "meta.updated_at", "param": "updated_since"}}
    extract_job = job(*STYLES["page-number"], **incremental)
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        first, staged = await extract(ctx, extract_job)
        assert len(staged) == len(crm_ids(crm_apis)) and first.watermark_after is not None
        await ctx.audit.set_watermark(
            EtlWatermark(
                tenant_id=ctx.tenant_id,
                batch_type=ctx.batch_type,
                job=extract_job.slug,
                cursor_field="meta.updated_at",
                value=first.watermark_after,
                keys_at_value=first.keys_at_watermark,
            )
        )
        nothing, staged = await extract(ctx, extract_job)
        assert staged == [] and nothing.counts["skipped"] >= 1  # the API answers >=: the last one came back

        with httpx.Client(base_url=crm_apis.crm_url, headers={"Authorization": f"Bearer {crm_apis.crm_token}"}) as c:
            c.patch("/customers/17", json={"phone": "+1 555 0100"}).raise_for_status()
        changed, staged = await extract(ctx, extract_job)
    assert [r["id"] for r in staged] == [17]
    assert changed.watermark_after > first.watermark_after


async def save_watermark(ctx: BatchContext, extract_job: ExtractJob, report: JobReport) -> None:
    """What a completed batch does with its extract's watermark."""
    assert extract_job.incremental is not None
    await ctx.audit.set_watermark(
        EtlWatermark(
            tenant_id=ctx.tenant_id,
            batch_type=ctx.batch_type,
            job=extract_job.slug,
            cursor_field=extract_job.incremental.cursor_field,
            value=report.watermark_after,
            keys_at_value=report.keys_at_watermark,
        )
    )


@pytest.mark.parametrize(
    "newest,later",
    [
        pytest.param("2030-01-01 00:00:00", "2030-01-01 00:00:05", id="whole-seconds"),
        pytest.param("2030-01-01T00:00:00.000Z", "2030-01-01T00:00:00.500Z", id="milliseconds"),
    ],
)
async def test_a_text_compared_cursor_goes_back_to_the_api_as_the_api_wrote_it(
    tmp_path: Path, crm_apis: DemoApis, newest: str, later: str
) -> None:
    """`/text-cursor/customers` compares `updated_since` as text: a watermark re-written as
    `2030-01-01T00:00:00Z` would sort after both later stamps, and the change made after the first run be lost."""
    control(crm_apis, "POST", "stamp", json={"id": 17, "updated_at": newest})
    incremental = {"incremental": {"cursor_field": "updated_at", "param": "updated_since"}}
    extract_job = job("/text-cursor/customers", "data", {"type": "page_number", "page_size": 50}, **incremental)
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        first, _ = await extract(ctx, extract_job)
        assert first.watermark_after == newest  # the record's own text
        await save_watermark(ctx, extract_job, first)
        control(crm_apis, "POST", "stamp", json={"id": 18, "updated_at": later})
        second, staged = await extract(ctx, extract_job)
    assert [r["id"] for r in staged] == [18]  # 17 came back too (>=) and was dropped as seen
    assert second.watermark_before == newest and second.watermark_after == later


async def test_a_record_without_its_natural_key_is_never_dropped_at_the_watermark(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    keyless, *keyed = control(crm_apis, "POST", "dirty")["data"]  # four at one stamp; the first has no email
    incremental = {"incremental": {"cursor_field": "meta.updated_at", "param": "updated_since"}}
    extract_job = job(*STYLES["page-number"], natural_key=["email"], **incremental)
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        first, _ = await extract(ctx, extract_job)
        assert first.watermark_after == keyless["updated_at"]
        assert sorted(first.keys_at_watermark) == sorted(c["email"] for c in keyed)  # no "" for the keyless one
        await ctx.audit.set_watermark(
            EtlWatermark(
                tenant_id=ctx.tenant_id,
                batch_type=ctx.batch_type,
                job=extract_job.slug,
                cursor_field="meta.updated_at",
                value=first.watermark_after,
                keys_at_value=first.keys_at_watermark,
            )
        )
        second, staged = await extract(ctx, extract_job)
    assert [r["id"] for r in staged] == [keyless["id"]]  # not certainly seen, so kept
    assert second.counts["skipped"] == len(keyed)


async def test_records_that_fail_the_entity_schema_are_error_events(tmp_path: Path, crm_apis: DemoApis) -> None:
    control(crm_apis, "POST", "dirty")
    extract_job = job(*STYLES["page-number"], entity_schema={"api_path": "/schemas/customer.json"})
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        report, staged = await extract(ctx, extract_job)
        events = await ctx.audit.error_events(ctx.batch_id)
    total = len(crm_ids(crm_apis))
    assert report.counts["rejected"] == len(events) >= 2  # no email, malformed email
    assert len(staged) == total - len(events)
    assert {e.column for e in events} >= {"email"}
    assert all(e.screen == "entity schema" and e.natural_key for e in events)
    assert report.schema_drift == {}  # a record missing a field is a violation, not drift: others have it


async def test_fields_that_appear_or_disappear_against_the_schema_are_reported_as_drift(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    with httpx.Client(base_url=crm_apis.crm_url, headers={"Authorization": f"Bearer {crm_apis.crm_token}"}) as c:
        c.patch("/customers/17", json={"nickname": "Al"}).raise_for_status()  # a field the schema lacks
    schema = customer_schema()
    schema["properties"]["vat_number"] = {"type": "string"}  # a property no record has
    (tmp_path / "customer.json").write_text(json.dumps(schema))
    extract_job = job(*STYLES["page-number"], entity_schema={"source": str(tmp_path / "customer.json")})
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        report, staged = await extract(ctx, extract_job)
    assert report.schema_drift == {"unexpected_fields": ["nickname"], "unseen_properties": ["vat_number"]}
    assert len(staged) == len(crm_ids(crm_apis))  # drift is reported, never rejected


async def test_a_mistyped_records_path_fails_the_extract(tmp_path: Path, crm_apis: DemoApis) -> None:
    mistyped = job("/customers", "dta", {"type": "page_number", "page_size": 30})
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        with pytest.raises(
            SourceError,
            match=r"GET crm:.*/customers answered 200: records_path 'dta' is not in "
            r"the body \(its keys: data, has_more, page, per_page, total\)",
        ):
            await extract(ctx, mistyped)


@pytest.mark.parametrize("api_path", ["/all/customers", "/docs"], ids=["a-json-list", "html"])
async def test_a_schema_path_that_gives_no_json_object_is_a_config_error(
    tmp_path: Path, crm_apis: DemoApis, api_path: str
) -> None:
    extract_job = job(*STYLES["page-number"], entity_schema={"api_path": api_path})
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        with pytest.raises(ConfigError, match=f"entity_schema.api_path: crm:{api_path} did not answer"):
            await extract(ctx, extract_job)


async def test_a_child_endpoint_is_read_for_every_parent(tmp_path: Path, crm_apis: DemoApis) -> None:
    customers = job(*STYLES["page-number"])
    bills = job(
        "/customers/{id}/bills",
        "data",
        {"type": "page_number", "page_size": 2},
        name="Extract CRM bills",
        natural_key=["id"],
        parent={"job": "Extract CRM customers"},
        concurrency=8,
    )
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        _, parents = await extract(ctx, customers)
        report, children = await extract(ctx, bills, parents=ctx.stage_key(customers.slug))
    assert report.counts["extracted"] == len(children) > len(parents) / 2
    assert all(c["_parent_id"] == c["customer_id"] for c in children)
    assert len({c["id"] for c in children}) == len(children)
