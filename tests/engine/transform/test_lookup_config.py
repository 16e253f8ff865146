"""Lookup source configuration: each type opens the right source on the batch's stage and API clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from engine_support import batch_context
from pydantic import TypeAdapter

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, SourceError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.jobbase import job_slug
from prefect_restful_etl.tasks.engine.transform.lookup_config import LookupConfig, open_lookup_sources

BASE = "http://127.0.0.1:9"
DEST = ApiConfig.model_validate({"name": "dest", "base_url": BASE, "max_attempts": 1})
_CONFIG: TypeAdapter[LookupConfig] = TypeAdapter(LookupConfig)


def api_lookup(**changes: Any) -> dict[str, Any]:
    return {"type": "api", "api": "dest", "endpoint": {"path": "/customers", "records_path": "data"},
            "key_field": "external_id"} | changes  # fmt: skip


async def test_static_and_staged_sources(tmp_path: Path) -> None:
    configs = {
        "static": _CONFIG.validate_python({"type": "static", "values": {"DE": "Germany", "7": "seven"}}),
        "staged": _CONFIG.validate_python({"type": "staged", "job": "Extract countries", "key_field": "code"}),
    }
    async with batch_context(tmp_path, {}) as ctx:
        await ctx.stage.append(ctx.stage_key(job_slug("Extract countries")), [{"code": "FR", "name": "France"}])
        sources = open_lookup_sources(configs, ctx)
        assert (await sources["static"].get("DE"), await sources["static"].get(7)) == ("Germany", "seven")
        assert await sources["staged"].get("FR") == {"code": "FR", "name": "France"}  # no value_field: the record
        assert await sources["staged"].get("DE") is None


@pytest.mark.parametrize(
    "body,status,expected",
    [
        ({"data": [{"id": "AC-1", "external_id": "42"}]}, 200, "AC-1"),
        ({"data": [{"id": "AC-9", "external_id": "41"}, {"id": "AC-1", "external_id": 42}]}, 200, "AC-1"),
        ({"data": [{"id": "AC-9", "external_id": "41"}]}, 200, None),  # the API ignored the filter: a miss
        ({"data": []}, 200, None),
        ({"detail": "no such customer"}, 404, None),
    ],
    ids=["match", "match-among-others-as-text", "ignored-filter", "empty", "not-found"],
)
async def test_an_api_source_fetches_one_key_by_filter(
    tmp_path: Path, body: dict[str, Any], status: int, expected: str | None
) -> None:
    config = _CONFIG.validate_python(
        api_lookup(
            endpoint={"path": "/customers", "records_path": "data", "params": {"active": "1"}}, filter_param="ext"
        )
    )
    async with batch_context(tmp_path, {"dest": (DEST, None)}) as ctx:
        with respx.mock(base_url=BASE) as router:
            route = router.get("/customers").mock(return_value=httpx.Response(status, json=body))
            source = open_lookup_sources({"customers": config}, ctx)["customers"]
            assert await source.get(42) == expected
            assert await source.get("42") == expected  # cached: 42 and "42" are one key
    assert route.call_count == 1
    assert dict(route.calls[0].request.url.params) == {"active": "1", "ext": "42"}


def ignoring_the_filter(request: httpx.Request) -> httpx.Response:
    """Every customer, two a page, whatever `external_id` asks for."""
    everyone = [{"id": f"AC-{n}", "external_id": str(n)} for n in (40, 41, 42, 43, 44)]
    page = int(request.url.params.get("page", "1"))
    return httpx.Response(200, json={"data": everyone[(page - 1) * 2 : page * 2]})


@pytest.mark.parametrize(
    "key,expected,pages",
    [("42", "AC-42", 2), ("40", "AC-40", 1), ("99", None, 3)],  # page 3 is short: the last
    ids=["match-on-page-two", "match-on-page-one", "miss-after-every-page"],
)
async def test_an_api_source_that_ignores_the_filter_is_read_page_by_page(
    tmp_path: Path, key: str, expected: str | None, pages: int
) -> None:
    paged = {"path": "/customers", "records_path": "data", "paginator": {"type": "page_number", "page_size": 2}}
    config = _CONFIG.validate_python(api_lookup(endpoint=paged))
    async with batch_context(tmp_path, {"dest": (DEST, None)}) as ctx:
        with respx.mock(base_url=BASE) as router:
            route = router.get("/customers").mock(side_effect=ignoring_the_filter)
            assert await open_lookup_sources({"c": config}, ctx)["c"].get(key) == expected
    assert [call.request.url.params.get("page", "1") for call in route.calls] == [str(n) for n in range(1, pages + 1)]
    assert {call.request.url.params["external_id"] for call in route.calls} == {key}


@pytest.mark.parametrize("status", [201, 204])
async def test_an_api_source_creates_a_member_once_when_the_creation_has_no_body(tmp_path: Path, status: int) -> None:
    made: list[bytes] = []

    def listing(request: httpx.Request) -> httpx.Response:
        found = [{"id": "AC-5", "external_id": "5"}] if made else []
        return httpx.Response(200, json={"data": found})

    def create(request: httpx.Request) -> httpx.Response:
        made.append(request.content)
        return httpx.Response(status)  # created, and nothing said about it

    async with batch_context(tmp_path, {"dest": (DEST, None)}) as ctx:
        source: Any = open_lookup_sources({"c": _CONFIG.validate_python(api_lookup(create=True))}, ctx)["c"]
        with respx.mock(base_url=BASE) as router:
            router.get("/customers").mock(side_effect=listing)
            post = router.post("/customers").mock(side_effect=create)
            assert await source.get("5") is None
            assert [await source.create_member("5", {"name": "?"}) for _ in range(3)] == ["AC-5"] * 3
            assert await source.get("5") == "AC-5"
    assert post.call_count == 1


async def test_an_api_source_raises_on_a_refusal_other_than_not_found(tmp_path: Path) -> None:
    config = _CONFIG.validate_python(api_lookup())
    async with batch_context(tmp_path, {"dest": (DEST, None)}) as ctx:
        with respx.mock(base_url=BASE) as router:
            router.get("/customers").mock(return_value=httpx.Response(403, json={"detail": "forbidden"}))
            with pytest.raises(SourceError, match="403"):
                await open_lookup_sources({"c": config}, ctx)["c"].get("1")


async def test_an_api_source_creates_members_only_when_allowed(tmp_path: Path) -> None:
    async with batch_context(tmp_path, {"dest": (DEST, None)}) as ctx:
        sources = open_lookup_sources(
            {"fixed": _CONFIG.validate_python(api_lookup()), "open": _CONFIG.validate_python(api_lookup(create=True))},
            ctx,
        )
        with respx.mock(base_url=BASE) as router:
            post = router.post("/customers").mock(return_value=httpx.Response(201, json={"id": "AC-5"}))
            assert await sources["open"].create_member("5", {"name": "?"}) == "AC-5"  # type: ignore[attr-defined]
    assert not sources["fixed"].can_create  # type: ignore[attr-defined]
    assert post.calls[0].request.content == b'{"name":"?","external_id":"5"}'


async def test_an_api_source_needs_an_api_of_the_batch(tmp_path: Path) -> None:
    async with batch_context(tmp_path, {}) as ctx:
        with pytest.raises(ConfigError, match="'dest' has no client"):
            open_lookup_sources({"c": _CONFIG.validate_python(api_lookup())}, ctx)
