"""Records no stage can hold, served by the demo CRM (`/_control/raw-field`), on the memory and the Redis stage:
each is one error event of screen `extract` with its key and field, and every other customer is staged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from engine_support import batch_context
from test_extract import STYLES, control, crm, extract, job, token

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.extract.records import why
from prefect_restful_etl.tasks.engine.http.body import Unrepresentable
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage

from fixtures.demo_apis import DEMO_CUSTOMERS

pytestmark = pytest.mark.integration

DEEP = "[" * 100_000 + "]" * 100_000
BAD = [
    pytest.param("NaN", "NaN is not a number JSON can carry", id="nan"),
    pytest.param("-Infinity", "-Infinity is not a number JSON can carry", id="infinity"),
    pytest.param("1e400", "1e400 is beyond the range of a float", id="beyond-float-range"),
    pytest.param("123456789012345678901234567890", "an integer beyond 64 bits", id="integer-beyond-64-bits"),
    pytest.param('"a\\ud800b"', "text holds a lone surrogate", id="lone-surrogate"),
    pytest.param("[" * 300 + "]" * 300, "nested deeper than 254 levels", id="deeper-than-the-stage-encoder"),
    pytest.param(DEEP, "nested deeper than 254 levels", id="100000-deep"),
]


@pytest.fixture
def crm_apis(demo_state: DemoApis) -> DemoApis:
    return demo_state


@asynccontextmanager
async def on_stage(
    tmp_path: Path, apis: DemoApis, stage: str, request: pytest.FixtureRequest
) -> AsyncIterator[BatchContext]:
    async with batch_context(tmp_path, {"crm": (crm(apis), token(apis))}) as ctx:
        if stage == "memory":
            yield ctx
            return
        async with RedisStage.from_url(request.getfixturevalue("redis_url")) as redis_stage:
            ctx.stage = redis_stage
            try:
                yield ctx
            finally:
                await redis_stage.drop_batch(ctx.tenant_id, ctx.batch_id)


@pytest.mark.parametrize("stage", ["memory", "redis"])
@pytest.mark.parametrize("json_text,message", BAD)
@pytest.mark.parametrize("style", ["page-number-concurrent", "cursor"])
async def test_a_record_the_stage_cannot_hold_is_one_error_event_and_the_batch_goes_on(
    tmp_path: Path,
    crm_apis: DemoApis,
    request: pytest.FixtureRequest,
    stage: str,
    json_text: str,
    message: str,
    style: str,
) -> None:
    control(crm_apis, "POST", "raw-field", json={"id": 17, "field": "score", "json_text": json_text})
    async with on_stage(tmp_path, crm_apis, stage, request) as ctx:
        report, staged = await extract(ctx, job(*STYLES[style]))
        events = await ctx.audit.error_events(ctx.batch_id)
    assert sorted(r["id"] for r in staged) == [i for i in range(1, DEMO_CUSTOMERS + 1) if i != 17]
    assert [(e.screen, e.natural_key, e.column) for e in events] == [("extract", "17", "score")]
    assert message in events[0].message
    assert report.counts["rejected"] == 1 and report.counts["extracted"] == len(staged)


async def test_an_unstageable_record_at_the_watermark_neither_moves_it_nor_stops_it(
    tmp_path: Path, crm_apis: DemoApis
) -> None:
    control(crm_apis, "POST", "raw-field", json={"id": 17, "field": "meta", "json_text": '{"updated_at": NaN}'})
    incremental = {"incremental": {"cursor_field": "meta.updated_at", "param": "updated_since"}}
    async with batch_context(tmp_path, {"crm": (crm(crm_apis), token(crm_apis))}) as ctx:
        report, staged = await extract(ctx, job(*STYLES["page-number"], **incremental))
    assert len(staged) == DEMO_CUSTOMERS - 1 and report.watermark_after is not None


def test_why_names_the_first_field_the_stage_cannot_hold() -> None:
    record = {"id": 1, "a": {"b": [1, Unrepresentable("NaN is not a number JSON can carry")]}, "c": "\ud800"}
    problem = why(record)
    assert (problem.column, problem.message) == ("a.b.1", "NaN is not a number JSON can carry")
    problem = why({"id": 1, "c": "x\ud800"})
    assert (problem.column, problem.value) == ("c", "x\\ud800")  # escaped, so the audit database can hold it
