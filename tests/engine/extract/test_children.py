"""Parent/child extracts: child paths from parents, the parent key on each child, bounded concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from prefect_restful_etl.tasks.engine.exceptions import RecordError, SourceError
from prefect_restful_etl.tasks.engine.extract.children import child_path, iter_child_pages
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient

BASE = "http://127.0.0.1:8999/api"


async def aiter_of(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


@pytest.mark.parametrize(
    "template,parent,expected",
    [
        pytest.param("/customers/{id}/bills", {"id": 7}, "/customers/7/bills", id="plain"),
        pytest.param(
            "/accounts/{owner.id}/notes/{kind}",
            {"owner": {"id": "o1"}, "kind": "x"},
            "/accounts/o1/notes/x",
            id="dotted-and-several",
        ),
        pytest.param("/customers/{id}/bills", {"id": "a/../b?c"}, "/customers/a%2F..%2Fb%3Fc/bills", id="encoded"),
    ],
)
def test_child_path(template: str, parent: dict[str, Any], expected: str) -> None:
    assert child_path(template, parent) == expected


@pytest.mark.parametrize(
    "parent",
    [pytest.param({}, id="missing"), pytest.param({"id": None}, id="null"), pytest.param({"id": {}}, id="object")],
)
def test_a_parent_without_the_placeholder_value_is_a_record_error(parent: dict[str, Any]) -> None:
    with pytest.raises(RecordError, match=r"\{id\}") as caught:
        child_path("/customers/{id}/bills", parent)
    assert caught.value.column == "id"


class ChildApi:
    """Bills per customer, two pages each (page_number, size 2), counting customers served at once."""

    def __init__(self, bills_per_customer: int = 3) -> None:
        self.n = bills_per_customer
        self.active: set[str] = set()
        self.max_active = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        customer = request.url.path.split("/")[3]
        page = int(request.url.params["page"])
        self.active.add(customer)
        self.max_active = max(self.max_active, len(self.active))
        for _ in range(5):  # let other parents' requests start, without any wall-clock sleep
            await asyncio.sleep(0)
        ids = list(range((page - 1) * 2, min(page * 2, self.n)))
        if page * 2 >= self.n:
            self.active.discard(customer)
        return httpx.Response(200, json={"data": [{"bill": f"{customer}-{i}"} for i in ids]})


def client(concurrency: int = 2) -> RestClient:
    paginator = {"type": "page_number", "page_size": 2}
    return RestClient(ApiConfig(name="crm", base_url=BASE, paginator=paginator, concurrency=concurrency))


@pytest.mark.parametrize(
    "parents",
    [
        pytest.param([{"id": f"c{i}"} for i in range(6)], id="records"),
        pytest.param([[{"id": f"c{i}"} for i in range(3)], [{"id": f"c{i}"} for i in range(3, 6)]], id="pages"),
    ],
)
async def test_every_parent_children_arrive_tagged_and_bounded(parents: list[Any]) -> None:
    api = ChildApi()
    with respx.mock:
        respx.get(url__startswith=f"{BASE}/customers/").mock(side_effect=api)
        async with client(concurrency=2) as rest:
            children_of = iter_child_pages(
                rest, aiter_of(parents), "/customers/{id}/bills", records_path="data", parent_field="_customer"
            )
            pages = [p async for p in children_of]
    children = [r for p in pages for r in p]
    assert sorted(r["bill"] for r in children) == sorted(f"c{c}-{i}" for c in range(6) for i in range(3))
    assert all(r["bill"].startswith(r["_customer"] + "-") for r in children)
    for customer in (f"c{c}" for c in range(6)):  # one parent's pages stay in order
        assert [r["bill"] for r in children if r["_customer"] == customer] == [f"{customer}-{i}" for i in range(3)]
    assert api.max_active == 2


async def test_parent_key_may_differ_from_the_placeholder() -> None:
    with respx.mock:
        respx.get(f"{BASE}/orgs/acme/users").mock(return_value=httpx.Response(200, json=[{"u": 1}]))
        async with RestClient(ApiConfig(name="crm", base_url=BASE)) as rest:
            parents = aiter_of([{"slug": "acme", "org_id": 42}])
            pages = [p async for p in iter_child_pages(rest, parents, "/orgs/{slug}/users", parent_key="org_id")]
    assert pages == [[{"u": 1, "_parent_id": 42}]]


async def test_a_child_error_stops_the_extract() -> None:
    with respx.mock:
        respx.get(f"{BASE}/customers/c1/bills").mock(return_value=httpx.Response(200, json={"data": []}))
        respx.get(f"{BASE}/customers/c2/bills").mock(return_value=httpx.Response(404))
        async with client() as rest:
            parents = aiter_of([{"id": "c1"}, {"id": "c2"}, {"id": "c3"}])
            with pytest.raises(SourceError, match="404"):
                [p async for p in iter_child_pages(rest, parents, "/customers/{id}/bills", records_path="data")]


async def test_a_failing_parent_iterator_stops_the_extract() -> None:
    async def parents() -> AsyncIterator[dict[str, Any]]:
        yield {"id": "c1"}
        raise SourceError("GET crm:/customers", 500, "boom")

    with respx.mock:
        respx.get(url__startswith=BASE).mock(return_value=httpx.Response(200, json={"data": []}))
        async with client() as rest:
            with pytest.raises(SourceError, match="boom"):
                [p async for p in iter_child_pages(rest, parents(), "/customers/{id}/bills", records_path="data")]


async def test_stopping_early_cancels_the_children_in_flight() -> None:
    api = ChildApi(bills_per_customer=4)
    with respx.mock:
        respx.get(url__startswith=f"{BASE}/customers/").mock(side_effect=api)
        async with client(concurrency=3) as rest:
            parents = aiter_of([{"id": f"c{i}"} for i in range(50)])
            pages = iter_child_pages(rest, parents, "/customers/{id}/bills", records_path="data")
            first = await anext(pages)
            await pages.aclose()
    assert first
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not any("one_parent" in repr(t.get_coro()) or "_feed" in repr(t.get_coro()) for t in pending)
