"""A micro-batch's pushed records: newest per key, repeats dropped, never older than what was loaded, ids fetched."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import respx

from prefect_restful_etl.tasks.engine.audit.tables import EtlWatermark
from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.extract.job import ExtractJob
from prefect_restful_etl.tasks.engine.hooks.config import Fetch, HookFeed
from prefect_restful_etl.tasks.engine.hooks.intake import Intake
from prefect_restful_etl.tasks.engine.hooks.pushed import run_pushed
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.report import JobReport

from tests.engine_support import batch_context

CRM = ApiConfig(name="crm", base_url="https://crm.example.com", auth={"type": "bearer"})
JOB = ExtractJob(
    name="Extract CRM customers",
    api="crm",
    endpoint={"path": "/customers", "records_path": "data"},
    natural_key=["id"],
    incremental={"cursor_field": "updated_at"},
)
FEED = HookFeed(job=JOB.name, version_field="updated_at")
FETCHING = FEED.model_copy(update={"fetch": Fetch(path="/customers/{id}")})


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"  # the memory stage is one per process: each test its own tenant


def customer(ident: int, stamp: str, **fields: Any) -> dict[str, Any]:
    return {"id": ident, "updated_at": stamp, **fields}


async def push(ctx: BatchContext, intake: Intake, *events: tuple[str, dict[str, Any]]) -> list[str]:
    for event_id, entry in events:
        await intake.accept(ctx.tenant_id, ctx.batch_type, event_id, entry)
    return await intake.seal(ctx.tenant_id, ctx.batch_type)


async def run(ctx: BatchContext, intake: Intake, segments: list[str], feed: HookFeed = FEED) -> JobReport:
    report = JobReport(job=JOB.name, kind="extract", job_id="j1")
    await run_pushed(JOB, feed, ctx, report, ErrorSink(ctx, JOB.name, "j1"), intake=intake, segments=segments)
    return report


async def staged(ctx: BatchContext) -> list[dict[str, Any]]:
    return [r async for chunk in ctx.stage.read(ctx.stage_key(JOB.slug)) for r in chunk]


async def test_the_newest_record_per_key_is_staged_once_and_repeats_are_dropped(tmp_path: Path) -> None:
    async with batch_context(tmp_path, {"crm": (CRM, Credentials(token="crm-token-0001"))}, tenant_id=tenant()) as ctx:
        intake = Intake(ctx.stage)
        first = await push(ctx, intake, ("e1", {"records": [customer(1, "2026-03-01T10:00:00Z", v=1)]}))
        segments = await push(
            ctx,
            intake,
            ("e2", {"records": [customer(1, "2026-03-01T12:00:00Z", v=3), customer(2, "2026-03-01T09:00:00Z")]}),
            ("e3", {"records": [customer(1, "2026-03-01T11:00:00Z", v=2)]}),  # older, arrived later
            ("e4", {"records": [{"name": "no key"}]}),
        )
        assert segments[0] == first[0]
        report = await run(ctx, intake, segments)
        assert sorted((r["id"], r.get("v")) for r in await staged(ctx)) == [(1, 3), (2, None)]
        assert report.counts == {"extracted": 2, "duplicates": 2, "skipped": 1, "events": 4, "fetched": 0}
        events = await ctx.audit.error_events(ctx.batch_id)
        assert [(e.screen, "natural key" in e.message) for e in events] == [("hook", True)]


async def test_a_record_older_than_the_watermark_or_an_earlier_push_is_not_staged(tmp_path: Path) -> None:
    async with batch_context(tmp_path, {"crm": (CRM, Credentials(token="crm-token-0001"))}, tenant_id=tenant()) as ctx:
        intake = Intake(ctx.stage)
        await ctx.audit.set_watermark(
            EtlWatermark(
                tenant_id=ctx.tenant_id,
                batch_type=ctx.batch_type,
                job=JOB.slug,
                cursor_field="updated_at",
                value="2026-03-01T10:00:00Z",
            )
        )
        old, fresh = customer(1, "2026-03-01T09:59:59Z"), customer(2, "2026-03-01T10:00:00Z")
        report = await run(ctx, intake, await push(ctx, intake, ("e1", {"records": [old, fresh]})))
        assert [r["id"] for r in await staged(ctx)] == [2] and report.counts["skipped"] == 1
        # the versions pushed are remembered: a later push older than them is held back too
        again = await push(ctx, intake, ("e2", {"records": [customer(2, "2026-03-01T10:00:00Z", v="same")]}))
        late = await push(ctx, intake, ("e3", {"records": [customer(2, "2026-02-01T00:00:00Z", v="late")]}))
        report = await run(ctx, intake, [again[-1]])
        assert [r.get("v") for r in await staged(ctx)] == ["same"]  # the same version is harmless: written
        report = await run(ctx, intake, [late[-1]])
        assert await staged(ctx) == [] and report.counts["skipped"] == 1


@respx.mock
async def test_ids_and_stale_pushes_are_read_from_the_source_by_key(tmp_path: Path) -> None:
    source = {
        7: customer(7, "2026-03-02T00:00:00Z", name="current"),
        1: customer(1, "2026-03-02T00:00:00Z", name="now"),
    }
    route = respx.get(url__regex=r"https://crm.example.com/customers/(?P<ident>\d+)$").mock(
        side_effect=lambda request, ident: (
            httpx.Response(200, json=source[int(ident)])
            if int(ident) in source
            else httpx.Response(404, json={"detail": "not found"})
        )
    )
    async with batch_context(tmp_path, {"crm": (CRM, Credentials(token="secret-token"))}, tenant_id=tenant()) as ctx:
        intake = Intake(ctx.stage)
        await push(ctx, intake, ("e0", {"records": [customer(1, "2026-03-01T12:00:00Z", name="pushed first")]}))
        await run(ctx, intake, await intake.seal(ctx.tenant_id, ctx.batch_type))
        segments = await push(
            ctx,
            intake,
            ("e1", {"ids": [7, 404]}),
            ("e2", {"records": [customer(1, "2026-03-01T11:00:00Z", name="stale")]}),
        )
        report = await run(ctx, intake, segments[-1:], FETCHING)
        assert sorted((r["id"], r["name"]) for r in await staged(ctx)) == [(1, "now"), (7, "current")]
        assert report.counts["fetched"] == 2 and report.counts["skipped"] == 1
        assert route.call_count == 3
        assert all(call.request.headers["Authorization"] == "Bearer secret-token" for call in route.calls)
        events = await ctx.audit.error_events(ctx.batch_id)
        assert [(e.screen, e.natural_key, e.action) for e in events] == [("hook fetch", "404", "pass")]
