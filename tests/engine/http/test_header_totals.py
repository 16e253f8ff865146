"""Totals and page counts from response headers (X-Total-Count, X-Total-Pages, Link rel="last"), and page
parameters for Link-header paging: pages planned after page one and fetched concurrently, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import respx
from pydantic import TypeAdapter, ValidationError

from prefect_restful_etl.tasks.engine.exceptions import PaginationError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.http.paginators import Paginator

BASE = "http://127.0.0.1:8998/api"


class HeaderApi:
    """`total` records as a bare list per page, by `page`/`size` (or `offset`/`limit`), with the totals in headers;
    later pages answer sooner, so that completion order differs from page order."""

    def __init__(self, total: int, size: int, headers: str) -> None:
        self.total, self.size, self.headers = total, size, headers
        self.requested: list[str] = []
        self.in_flight = self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        self.requested.append(str(request.url.query.decode()))
        start = int(params["offset"]) if "offset" in params else (int(params.get("page", 1)) - 1) * self.size
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        for _ in range(max(0, 40 - start)):
            await asyncio.sleep(0)
        self.in_flight -= 1
        page = start // self.size + 1
        last = -(-self.total // self.size)
        headers = {
            "count": {"X-Total-Count": str(self.total)},
            "pages": {"X-Total-Pages": str(last)},
            "link": {"Link": self._links(page, last)},
        }[self.headers]
        body = [{"id": i} for i in range(start, min(start + self.size, self.total))]
        return httpx.Response(200, json=body, headers=headers)

    def _links(self, page: int, last: int) -> str:
        links = [f'<{BASE}/items?page={last}&size={self.size}>; rel="last"']
        if page < last:
            links.insert(0, f'<{BASE}/items?page={page + 1}&size={self.size}>; rel="next"')
        return ", ".join(links)


async def read(paginator: Any, api: HeaderApi, concurrency: int = 3) -> list[int]:
    with respx.mock:
        respx.get(url__startswith=BASE).mock(side_effect=api)
        config = ApiConfig(name="items", base_url=BASE, paginator=paginator, concurrency=concurrency)
        async with RestClient(config) as client:
            return [r["id"] async for page in client.paginate("/items") for r in page]


PLANNED = [
    pytest.param(
        {"type": "page_number", "page_param": "page", "size_param": "size", "page_size": 3,
         "total_header": "X-Total-Count", "concurrent": True}, "count", id="page-number-x-total-count",
    ),
    pytest.param(
        {"type": "page_number", "size_param": "size", "page_size": 3, "total_pages_header": "X-Total-Pages",
         "concurrent": True}, "pages", id="page-number-x-total-pages",
    ),
    pytest.param(
        {"type": "page_number", "size_param": "size", "page_size": 3, "last_link_rel": "last", "concurrent": True},
        "link", id="page-number-link-last",
    ),
    pytest.param(
        {"type": "offset", "limit": 3, "total_header": "X-Total-Count", "concurrent": True}, "count",
        id="offset-x-total-count",
    ),
    pytest.param(
        {"type": "header_link", "page_param": "page", "size_param": "size", "page_size": 3, "concurrent": True},
        "link", id="link-header-planned-by-rel-last",
    ),
]  # fmt: skip


@pytest.mark.parametrize("paginator,headers", PLANNED)
async def test_a_total_in_a_header_plans_every_page_and_fetches_them_concurrently(paginator: Any, headers: str) -> None:
    api = HeaderApi(total=31, size=3, headers=headers)
    assert await read(paginator, api) == list(range(31))
    assert len(api.requested) == 11  # no page past the last, none twice
    assert api.max_in_flight == 3


async def test_a_link_header_api_takes_page_and_size_parameters_and_plans_by_x_total_count() -> None:
    api = HeaderApi(total=10, size=4, headers="count")  # no Link header at all: the count decides
    paginator = {
        "type": "header_link", "page_param": "page", "size_param": "size", "page_size": 4,
        "total_header": "X-Total-Count", "concurrent": True,
    }  # fmt: skip
    assert await read(paginator, api) == list(range(10))
    assert sorted(api.requested) == ["page=1&size=4", "page=2&size=4", "page=3&size=4"]


async def test_sequential_link_paging_sends_the_size_on_page_one_and_follows_the_links() -> None:
    api = HeaderApi(total=7, size=3, headers="link")
    paginator = {"type": "header_link", "page_param": "page", "size_param": "size", "page_size": 3}
    assert await read(paginator, api, concurrency=1) == list(range(7))
    assert api.requested == ["page=1&size=3", "page=2&size=3", "page=3&size=3"]


async def test_a_total_header_that_is_not_a_number_fails_naming_the_header() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{"id": 1}], headers={"X-Total-Count": "lots"})

    with respx.mock:
        respx.get(url__startswith=BASE).mock(side_effect=respond)
        config = ApiConfig(name="items", base_url=BASE, paginator={"type": "offset", "total_header": "X-Total-Count"})
        async with RestClient(config) as client:
            with pytest.raises(PaginationError, match="header X-Total-Count should be a number"):
                [page async for page in client.paginate("/items")]


@pytest.mark.parametrize(
    "config,message",
    [
        pytest.param(
            {"type": "offset", "total_path": "n", "total_header": "X-Total-Count"}, "not both", id="two-totals"
        ),
        pytest.param({"type": "header_link", "page_size": 10}, "go together", id="size-without-param"),
        pytest.param({"type": "header_link", "concurrent": True}, "set page_param", id="concurrent-link-unnumbered"),
        pytest.param(
            {"type": "page_number", "size_param": None, "total_header": "X-Total-Count", "concurrent": True},
            "needs the total",
            id="a-count-without-a-page-size-plans-nothing",
        ),
    ],
)
def test_bad_header_total_configs_fail_at_validation(config: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TypeAdapter(Paginator).validate_python(config)
