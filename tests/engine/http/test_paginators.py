"""Every paging style against a scripted API, loop detection, max_pages and concurrent fetching."""

from __future__ import annotations

import asyncio
import gc
from contextlib import aclosing
from typing import Any

import httpx
import pytest
import respx
from pydantic import TypeAdapter, ValidationError

from prefect_restful_etl.tasks.engine.exceptions import PaginationError, SourceChanged, SourceError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.http.paginators import (
    CursorPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    Paginator,
)

BASE = "http://127.0.0.1:8999/api"


def rows(*ids: int) -> list[dict[str, Any]]:
    return [{"id": i} for i in ids]


def page(body: Any = None, headers: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
    return body, headers or {}


def client_for(paginator: Any, **api: Any) -> RestClient:
    return RestClient(ApiConfig(name="crm", base_url=BASE, paginator=paginator, **api))


async def run(
    paginator: Any, script: list[tuple[Any, dict[str, str]]], records_path: str | None = None
) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """Serve `script` in order on any GET under BASE; return the pages read and each request's path+query."""
    seen: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        body, headers = script[len(seen)]
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json=body, headers=headers)

    with respx.mock(assert_all_called=False) as mock:
        mock.get(url__startswith=BASE).mock(side_effect=respond)
        async with client_for(paginator) as client:
            pages = [p async for p in client.paginate("/customers", records_path=records_path)]
    return pages, seen


STYLES = [
    pytest.param(
        {"type": "page_number", "page_size": 2},
        [page({"data": rows(1, 2)}), page({"data": rows(3, 4)}), page({"data": rows(5)})],
        ["/api/customers?page=1&per_page=2", "/api/customers?page=2&per_page=2", "/api/customers?page=3&per_page=2"],
        id="page_number-stops-on-short-page",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 2},
        [page({"data": rows(1, 2)}), page({"data": []})],
        ["/api/customers?page=1&per_page=2", "/api/customers?page=2&per_page=2"],
        id="page_number-stops-on-empty-page",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 2, "total_path": "meta.total"},
        [page({"data": rows(1, 2), "meta": {"total": 4}}), page({"data": rows(3, 4), "meta": {"total": 4}})],
        ["/api/customers?page=1&per_page=2", "/api/customers?page=2&per_page=2"],
        id="page_number-stops-at-total",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 2, "total_pages_path": "pages", "first_page": 0},
        [page({"data": rows(1, 2), "pages": 2}), page({"data": rows(3, 4), "pages": 2})],
        ["/api/customers?page=0&per_page=2", "/api/customers?page=1&per_page=2"],
        id="page_number-stops-at-total-pages",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 2, "has_more_path": "has_more", "size_param": "limit"},
        [page({"data": rows(1, 2), "has_more": True}), page({"data": rows(3, 4), "has_more": False})],
        ["/api/customers?page=1&limit=2", "/api/customers?page=2&limit=2"],
        id="page_number-has-more-false-stops-a-full-page",
    ),
    pytest.param(
        {"type": "page_number", "size_param": None},
        [page({"data": rows(1)}), page({"data": rows(2)}), page({"data": []})],
        ["/api/customers?page=1", "/api/customers?page=2", "/api/customers?page=3"],
        id="page_number-server-sized-pages-stop-on-empty",
    ),
    pytest.param(
        {"type": "offset", "limit": 2},
        [page({"data": rows(1, 2)}), page({"data": rows(3)})],
        ["/api/customers?offset=0&limit=2", "/api/customers?offset=2&limit=2"],
        id="offset-stops-on-short-page",
    ),
    pytest.param(
        {"type": "offset", "limit": 2, "total_path": "count"},
        [page({"data": rows(1, 2), "count": 4}), page({"data": rows(3, 4), "count": 4})],
        ["/api/customers?offset=0&limit=2", "/api/customers?offset=2&limit=2"],
        id="offset-stops-at-total",
    ),
    pytest.param(
        {"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"},
        [page({"data": rows(1), "meta": {"next": "c1"}}), page({"data": rows(2), "meta": {"next": None}})],
        ["/api/customers", "/api/customers?after=c1"],
        id="cursor-from-body-path",
    ),
    pytest.param(
        {"type": "cursor", "cursor_path": "next"},
        [page({"data": rows(1), "next": "c1"}), page({"data": rows(2), "next": False})],
        ["/api/customers", "/api/customers?cursor=c1"],
        id="cursor-false-stops",
    ),
    pytest.param(
        {"type": "cursor", "cursor_path": "next"},
        [page({"data": rows(1), "next": 0}), page({"data": rows(2), "next": None})],
        ["/api/customers", "/api/customers?cursor=0"],
        id="cursor-zero-is-a-token",
    ),
    pytest.param(
        {"type": "next_url", "next_url_path": "next"},
        [page({"data": rows(1), "next": "?after=1"}), page({"data": rows(2), "next": False})],
        ["/api/customers", "/api/customers?after=1"],
        id="next-url-false-stops",
    ),
    pytest.param(
        {"type": "next_url", "next_url_path": "links.next"},
        [
            page({"data": rows(1), "links": {"next": f"{BASE}/customers?after=1"}}),
            page({"data": rows(2), "links": {"next": "/api/customers?after=2"}}),
            page({"data": rows(3), "links": {"next": "?after=3"}}),
            page({"data": rows(4), "links": {"next": ""}}),
        ],
        ["/api/customers", "/api/customers?after=1", "/api/customers?after=2", "/api/customers?after=3"],
        id="next-url-absolute-and-relative",
    ),
    pytest.param(
        "header_link",
        [page({"data": rows(1)}, {"Link": f'<{BASE}/customers?page=2>; rel="next"'}), page({"data": rows(2)})],
        ["/api/customers", "/api/customers?page=2"],
        id="header-link",
    ),
    pytest.param(
        {"type": "header_cursor", "cursor_header": "X-Next-Cursor"},
        [page({"data": rows(1)}, {"X-Next-Cursor": "abc"}), page({"data": rows(2)})],
        ["/api/customers", "/api/customers?cursor=abc"],
        id="header-cursor",
    ),
    pytest.param(
        {"type": "cursor", "cursor_path": "next"},
        [page({"data": [], "next": "c1"})],
        ["/api/customers"],
        id="cursor-stops-after-empty-page",
    ),
    pytest.param(
        {"type": "cursor", "cursor_path": "next", "size_param": "limit", "page_size": 2},
        [page({"data": rows(1, 2), "next": "c1"}), page({"data": rows(3), "next": None})],
        ["/api/customers?limit=2", "/api/customers?limit=2&cursor=c1"],
        id="cursor-with-page-size",
    ),
    pytest.param(
        {"type": "header_cursor", "size_param": "limit", "page_size": 1},
        [page({"data": rows(1)}, {"X-Next-Cursor": "abc"}), page({"data": rows(2)})],
        ["/api/customers?limit=1", "/api/customers?limit=1&cursor=abc"],
        id="header-cursor-with-page-size",
    ),
    pytest.param(
        {"type": "next_url", "next_url_path": "next", "size_param": "limit", "page_size": 1},
        [page({"data": rows(1), "next": f"{BASE}/customers?after=1&limit=1"}), page({"data": rows(2)})],
        ["/api/customers?limit=1", "/api/customers?after=1&limit=1"],
        id="next-url-with-page-size",
    ),
    pytest.param(
        "single_page",
        [page({"data": rows(1, 2, 3)}, {"Link": f'<{BASE}/customers?page=2>; rel="next"'})],
        ["/api/customers"],
        id="single-page",
    ),
]


@pytest.mark.parametrize("paginator,script,expected_requests", STYLES)
async def test_each_style_reads_every_page_and_stops(
    paginator: Any, script: list[Any], expected_requests: list[str]
) -> None:
    pages, seen = await run(paginator, script, records_path="data")
    assert seen == expected_requests
    assert [r for p in pages for r in p] == [r for body, _ in script for r in body["data"]]


@pytest.mark.parametrize(
    "given",
    [
        pytest.param("page_number", id="string"),
        pytest.param({"type": "page_number"}, id="dict"),
        pytest.param(PageNumberPaginator(), id="instance"),
    ],
)
def test_a_paginator_is_chosen_by_name_dict_or_instance(given: Any) -> None:
    api = ApiConfig(name="crm", base_url=BASE, paginator=given)
    assert isinstance(api.paginator, PageNumberPaginator)


@pytest.mark.parametrize(
    "config,message",
    [
        pytest.param("pages", "does not match any of the expected tags", id="unknown-name"),
        pytest.param({"type": "page_number", "concurrent": True}, "needs the total", id="concurrent-without-total"),
        pytest.param(
            {"type": "page_number", "concurrent": True, "total_path": "n", "size_param": None},
            "needs the total",
            id="concurrent-without-page-size",
        ),
        pytest.param({"type": "offset", "concurrent": True}, "needs the total", id="offset-concurrent-without-total"),
        pytest.param({"type": "cursor", "size_param": "limit"}, "go together", id="cursor-size-without-page-size"),
        pytest.param({"type": "next_url", "page_size": 50}, "go together", id="next-url-page-size-without-param"),
    ],
)
def test_bad_paginator_configs_fail_at_validation(config: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TypeAdapter(Paginator).validate_python(config)


LOOPS = [
    pytest.param(
        {"type": "cursor", "cursor_path": "next"},
        [page({"data": rows(1), "next": "same"}), page({"data": rows(2), "next": "same"})],
        "loop detected",
        id="repeated-cursor",
    ),
    pytest.param(
        {"type": "next_url"},
        [page({"data": rows(1), "next": "?p=2"}), page({"data": rows(2), "next": "?p=2"})],
        "loop detected",
        id="repeated-next-url",
    ),
    pytest.param(
        "header_link",
        [page({"data": rows(i)}, {"Link": '<?p=9>; rel="next"'}) for i in (1, 2)],
        "loop detected",
        id="repeated-link-header",
    ),
    pytest.param(
        {"type": "header_cursor"},
        [page({"data": rows(i)}, {"X-Next-Cursor": "x"}) for i in (1, 2)],
        "loop detected",
        id="repeated-header-cursor",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 1},
        [page({"data": rows(1)}), page({"data": rows(1)})],
        "same page twice",
        id="api-ignores-page-param",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 1, "max_pages": 2},
        [page({"data": rows(i)}) for i in (1, 2, 3)],
        "max_pages=2",
        id="max-pages",
    ),
    pytest.param(
        {"type": "cursor", "max_pages": 1},
        [page({"data": rows(1), "next_cursor": "a"})],
        "max_pages=1",
        id="max-pages-on-cursor",
    ),
]


@pytest.mark.parametrize("paginator,script,message", LOOPS)
async def test_no_style_can_page_forever(paginator: Any, script: list[Any], message: str) -> None:
    with pytest.raises(PaginationError, match=message):
        await run(paginator, script, records_path="data")


CONTRADICTIONS = [
    pytest.param(
        {"type": "page_number", "page_size": 2, "total_path": "total"},
        [page({"data": rows(1, 2), "total": 6}), page({"data": [], "total": 6})],
        r"GET crm:/customers \(page 2 of the stream\): page 2 has 0 records of the 2 asked for, yet the stream says",
        id="empty-page-mid-stream",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 2, "total_path": "total"},
        [page({"data": rows(1, 2), "total": 6}), page({"data": None, "total": 6})],
        "page 2 has 0 records",
        id="null-page-mid-stream",
    ),
    pytest.param(
        {"type": "offset", "limit": 2, "total_path": "total"},
        [page({"data": rows(1, 2), "total": 6}), page({"data": rows(3), "total": 6})],
        "offset 2 has 1 records of the 2 asked for",
        id="short-page-before-the-last",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 2, "has_more_path": "more"},
        [page({"data": rows(1), "more": True})],
        "page 1 has 1 records of the 2 asked for, yet the stream says more follow",
        id="short-page-with-has-more",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 2, "total_pages_path": "pages", "total_path": "total"},
        [page({"data": rows(1, 2), "pages": 2, "total": 5}), page({"data": rows(3, 4), "pages": 2, "total": 5})],
        "the stream ended after 4 records, yet its total was 5",
        id="count-below-the-total",
    ),
]


@pytest.mark.parametrize("paginator,script,message", CONTRADICTIONS)
async def test_a_page_that_contradicts_the_stream_fails_it(paginator: Any, script: list[Any], message: str) -> None:
    with pytest.raises(PaginationError, match=message) as caught:
        await run(paginator, script, records_path="data")
    assert not isinstance(caught.value, SourceChanged)


async def test_an_object_where_the_records_list_belongs_fails_the_stream() -> None:
    script = [page({"data": rows(1, 2), "total": 6}), page({"data": {"error": "busy"}, "total": 6})]
    with pytest.raises(SourceError, match=r"data is an object, not a page's list of records \(page 2 of the stream\)"):
        await run({"type": "page_number", "page_size": 2, "total_path": "total"}, script, records_path="data")


async def test_a_single_page_endpoint_may_answer_one_object() -> None:
    pages, _ = await run("single_page", [page({"id": 7})])
    assert pages == [[{"id": 7}]]


async def test_a_total_that_changes_between_pages_says_the_source_changed() -> None:
    script = [page({"data": rows(1, 2), "total": 6}), page({"data": rows(3, 4), "total": 5})]
    with pytest.raises(SourceChanged, match=r"page 2 of the stream\): the total went from 6 to 5"):
        await run({"type": "page_number", "page_size": 2, "total_path": "total"}, script, records_path="data")


@pytest.mark.parametrize(
    "paginator",
    [
        pytest.param({"type": "page_number", "page_size": 3, "total_path": "total", "concurrent": True}, id="page"),
        pytest.param({"type": "offset", "limit": 3, "total_path": "total", "concurrent": True}, id="offset"),
    ],
)
@pytest.mark.parametrize(
    "break_page,expected",
    [
        pytest.param(
            lambda body: {**body, "data": []}, (PaginationError, "has 0 records where the total of 31"), id="empty"
        ),
        pytest.param(lambda body: {**body, "data": body["data"][:1]}, (PaginationError, "has 1 records"), id="short"),
        pytest.param(lambda body: {**body, "total": 30}, (SourceChanged, "the total went from 31 to 30"), id="total"),
        pytest.param(lambda body: {**body, "data": None}, (PaginationError, "has 0 records"), id="null"),
        pytest.param(lambda body: {**body, "data": {"id": 1}}, (SourceError, "is an object"), id="object"),
    ],
)
async def test_a_planned_page_that_contradicts_page_one_fails_the_stream(
    paginator: Any, break_page: Any, expected: tuple[type[Exception], str]
) -> None:
    api = PagedApi(total=31, size=3)

    async def answer(request: httpx.Request) -> httpx.Response:
        response = await api(request)
        start = api.requested[-1]
        return httpx.Response(200, json=break_page(response.json())) if start == 15 else response

    with respx.mock:
        respx.get(url__startswith=BASE).mock(side_effect=answer)
        async with client_for(paginator, concurrency=3) as client:
            with pytest.raises(expected[0], match=expected[1]):
                [p async for p in client.paginate("/customers", records_path="data")]


def test_fresh_copies_share_no_state() -> None:
    template = CursorPaginator()
    one, two = template.fresh(), template.fresh()
    one._guard("a")
    two._guard("a")  # would raise if the seen-set were shared
    assert template.has_next


class PagedApi:
    """An async handler serving `total` records by page number or offset; later pages answer sooner."""

    def __init__(self, total: int, size: int) -> None:
        self.total, self.size = total, size
        self.in_flight = self.max_in_flight = 0
        self.requested: list[int] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        start = int(params["offset"]) if "offset" in params else (int(params["page"]) - 1) * self.size
        self.requested.append(start)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        for _ in range(max(0, 40 - start)):  # scrambles completion order without any wall-clock sleep
            await asyncio.sleep(0)
        self.in_flight -= 1
        ids = range(start, min(start + self.size, self.total))
        return httpx.Response(200, json={"data": rows(*ids), "total": self.total})


@pytest.mark.parametrize(
    "paginator",
    [
        pytest.param({"type": "page_number", "page_size": 3, "total_path": "total", "concurrent": True}, id="page"),
        pytest.param({"type": "offset", "limit": 3, "total_path": "total", "concurrent": True}, id="offset"),
    ],
)
async def test_concurrent_pages_arrive_in_order_complete_and_bounded(paginator: Any) -> None:
    api = PagedApi(total=31, size=3)
    with respx.mock:
        respx.get(url__startswith=BASE).mock(side_effect=api)
        async with client_for(paginator, concurrency=3) as client:
            pages = [p async for p in client.paginate("/customers", records_path="data")]
    assert [r["id"] for p in pages for r in p] == list(range(31))
    assert len(pages) == 11 and sorted(api.requested) == list(range(0, 31, 3))
    assert 1 < api.max_in_flight <= 3


async def test_a_huge_total_plans_lazily_and_early_exit_cancels_the_rest() -> None:
    api = PagedApi(total=10**9, size=2)
    paginator = {"type": "page_number", "page_size": 2, "total_path": "total", "concurrent": True}
    with respx.mock:
        respx.get(url__startswith=BASE).mock(side_effect=api)
        async with client_for(paginator, concurrency=4) as client:
            pages = client.paginate("/customers", records_path="data")
            first = [await anext(pages) for _ in range(3)]
            await pages.aclose()
    assert [r["id"] for p in first for r in p] == list(range(6))
    assert len(api.requested) <= 1 + 3 + 4 * 4  # page one, the pages read, and at most 4 x concurrency ahead


async def test_a_slow_page_leaves_no_slot_idle() -> None:
    slow = asyncio.Event()
    requested: list[int] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        requested.append(number)
        if number == 2:
            await slow.wait()
        return httpx.Response(200, json={"data": rows(number), "total": 50})

    paginator = {"type": "page_number", "page_size": 1, "total_path": "total", "concurrent": True}
    with respx.mock:
        respx.get(url__startswith=BASE).mock(side_effect=answer)
        async with client_for(paginator, concurrency=3) as client:
            reading = asyncio.ensure_future(anext_n(client.paginate("/customers", records_path="data"), 5))
            for _ in range(50):
                await asyncio.sleep(0)
            # page 2 is still out, yet the other two slots went on: pages 3 to 13 (4 x concurrency ahead)
            assert sorted(requested) == list(range(1, 14))
            slow.set()
            assert [r["id"] for p in await reading for r in p] == [1, 2, 3, 4, 5]


async def anext_n(pages: Any, n: int) -> list[Any]:
    async with aclosing(pages):
        return [await anext(pages) for _ in range(n)]


async def test_concurrent_plan_beyond_max_pages_fails_before_fetching_it() -> None:
    api = PagedApi(total=100, size=2)
    paginator = {"type": "page_number", "page_size": 2, "total_path": "total", "concurrent": True, "max_pages": 10}
    with respx.mock:
        respx.get(url__startswith=BASE).mock(side_effect=api)
        async with client_for(paginator) as client:
            with pytest.raises(PaginationError, match="max_pages=10"):
                [p async for p in client.paginate("/customers", records_path="data")]
    assert api.requested == [0]


async def test_concurrent_paging_with_one_page_needs_no_plan() -> None:
    paginator = OffsetPaginator(limit=5, total_path="total", concurrent=True)
    pages, seen = await run(paginator, [page({"data": rows(1, 2), "total": 2})], records_path="data")
    assert seen == ["/api/customers?offset=0&limit=5"] and pages == [rows(1, 2)]


@pytest.mark.parametrize(
    "paginator",
    [
        pytest.param({"type": "page_number", "page_size": 1, "total_path": "total"}, id="sequential"),
        pytest.param({"type": "page_number", "page_size": 1, "total_path": "total", "concurrent": True}, id="planned"),
    ],
)
async def test_a_page_lets_go_of_its_parsed_body_once_read(paginator: Any) -> None:
    # A response is cyclic garbage (httpx's stream points back at it) that waits for the cyclic collector, maybe
    # for many pages: it must not hold its page's records meanwhile. The collector is held off while the pages
    # are read, so the responses are all still there to look at.
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": rows(int(request.url.params.get("page", 1))), "total": 3})

    gc.collect()
    before = {id(o) for o in gc.get_objects() if isinstance(o, httpx.Response)}  # other tests' leftovers
    gc.disable()
    try:
        with respx.mock(assert_all_called=False) as mock:
            mock.get(url__startswith=BASE).mock(side_effect=respond)
            async with client_for(paginator) as client:
                pages = [page async for page in client.paginate("/customers", records_path="data")]
        read = [o for o in gc.get_objects() if isinstance(o, httpx.Response) and id(o) not in before]
    finally:
        gc.enable()
    assert pages == [rows(1), rows(2), rows(3)]
    assert len(read) >= 3
    assert [response.extensions.get("restful_etl.json_body") for response in read] == [None] * len(read)
