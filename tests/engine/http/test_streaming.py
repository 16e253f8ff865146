"""Large pages streamed as they arrive: the same records, errors and paging as a body read whole, a chunk at a
time, handed on before the body has ended."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from prefect_restful_etl.tasks.engine.exceptions import PaginationError, RetriableError, SourceError
from prefect_restful_etl.tasks.engine.http import streaming
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.body import Unrepresentable
from prefect_restful_etl.tasks.engine.http.client import RestClient

BASE = "http://127.0.0.1:8999/api"


class Pieces(httpx.AsyncByteStream):
    """A body sent `size` bytes at a time (so a token, a record or a UTF-8 character is cut anywhere)."""

    def __init__(self, body: bytes, size: int = 7, *, drop_after: int | None = None) -> None:
        self.body, self.size, self.drop_after = body, size, drop_after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), self.size):
            if self.drop_after is not None and start >= self.drop_after:
                raise httpx.ReadError("connection reset")
            yield self.body[start : start + self.size]


def plain(value: Any) -> Any:
    """Records with their Unrepresentable values spelled out, so that two parses compare."""
    if isinstance(value, Unrepresentable):
        return ("unrepresentable", value.reason)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


async def read(
    bodies: list[bytes], *, records_path: str | None, paginator: Any = "single_page", piece: int = 7
) -> tuple[list[list[Any]], BaseException | None]:
    """Serve `bodies` in order (a piece at a time, no Content-Length); the pages (or chunks) read, and the error."""
    served = iter(bodies)
    pages: list[list[Any]] = []
    with respx.mock:
        respx.get(url__startswith=BASE).mock(
            side_effect=lambda request: httpx.Response(200, stream=Pieces(next(served), piece))
        )
        api = ApiConfig(name="crm", base_url=BASE, paginator=paginator, max_attempts=1)
        async with RestClient(api) as client:
            try:
                async for page in client.paginate("/customers", records_path=records_path):
                    pages.append(plain(page))
            except (SourceError, PaginationError) as ex:
                return pages, ex
    return pages, None


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every body streamed, two records to a chunk, each piece parsed as it comes."""
    monkeypatch.setattr(streaming, "STREAM_OVER", 0)
    monkeypatch.setattr(streaming, "CHUNK_RECORDS", 2)
    monkeypatch.setattr(streaming, "READ_AT_LEAST", 1)


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


ODD_VALUES = (
    '{"id": 1, "score": NaN, "big": 1e400, "long": 12345678901234567890123, "neg": -Infinity},'
    ' {"id": 2, "name": "Zoë \\ud800 😀", "text": "a],\\"{b}", "deep": ' + deep(2000) + "},"
    ' {"id": 3, "nested": {"a": [1, {"b": [2.5, -0.0, 1E+2]}]}, "empty": {}, "none": null, "yes": true}'
)

BODIES = [
    pytest.param(['{"total": 5, "data": [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}, {"id": 5}]}'], "data", id="path"),
    pytest.param(['[{"id": 1}, {"id": 2}, {"id": 3}]'], None, id="bare-list"),
    pytest.param(
        ['{"result": {"count": 2, "items": [{"id": 1}, {"id": 2}]}, "ok": true}'], "result.items", id="nested"
    ),
    pytest.param(
        [json.dumps({"meta": {"a": [1, 2]}, "data": [{"id": i} for i in range(5)]}, indent=2)], "data", id="pretty"
    ),
    pytest.param(["[" + ODD_VALUES + "]"], None, id="odd-values"),
    pytest.param(['{"data": []}'], "data", id="empty-list"),
    pytest.param(['{"data": [1, "two", [3], null, 4.5]}'], "data", id="not-objects"),
    pytest.param(['{"data": {"id": 1}}'], "data", id="one-object-read-whole"),
    pytest.param(['{"data": [{"id": 1}], "more": [2]}'], "data.0", id="index-path-read-whole"),
    pytest.param(['{"other": [{"id": 1}]}'], "data", id="path-absent"),
    pytest.param(['{"data": [{"id": 1}, {"id": 2}'], "data", id="cut-short"),
    pytest.param(['{"data": [{"id": 1}, {"id": 2},]}'], "data", id="trailing-comma"),
    pytest.param(['{"data": [{"id": 1}]} trailing'], "data", id="garbage-after"),
    pytest.param(['{"data": [{"id": 1} {"id": 2}]}'], "data", id="no-separator"),
]


@pytest.mark.parametrize("bodies,records_path", BODIES)
@pytest.mark.parametrize("piece", [1, 7, 1 << 20])
async def test_a_streamed_body_reads_as_the_same_body_read_whole(
    monkeypatch: pytest.MonkeyPatch, bodies: list[str], records_path: str | None, piece: int
) -> None:
    raw = [body.encode("utf-8", "surrogatepass") for body in bodies]
    whole_pages, whole_error = await read(raw, records_path=records_path, piece=piece)
    monkeypatch.setattr(streaming, "STREAM_OVER", 0)
    monkeypatch.setattr(streaming, "CHUNK_RECORDS", 2)
    monkeypatch.setattr(streaming, "READ_AT_LEAST", 1)  # each piece parsed as it comes: cut anywhere
    chunks, error = await read(raw, records_path=records_path, piece=piece)

    assert (type(error), str(error)) == (type(whole_error), str(whole_error))
    if error is None:  # (a streamed page that fails has handed on records before: the job fails all the same)
        assert [record for chunk in chunks for record in chunk] == [record for page in whole_pages for record in page]
    streamed_list = records_path != "data.0" and not (bodies[0].startswith('{"data": {'))
    if streamed_list and error is None:
        assert all(len(chunk) <= 2 for chunk in chunks)


PAGED = [
    pytest.param(
        {"type": "cursor", "cursor_path": "next"},
        ['{"data": [{"id": 1}, {"id": 2}, {"id": 3}], "next": "b"}', '{"data": [{"id": 4}], "next": null}'],
        [1, 2, 3, 4],
        id="cursor-after-the-records",
    ),
    pytest.param(
        {"type": "page_number", "page_size": 3, "total_path": "meta.total"},
        [
            '{"data": [{"id": 1}, {"id": 2}, {"id": 3}], "meta": {"total": 4}}',
            '{"meta": {"total": 4}, "data": [{"id": 4}]}',
        ],
        [1, 2, 3, 4],
        id="page-number-total-after-the-records",
    ),
]


@pytest.mark.parametrize("paginator,bodies,ids", PAGED)
async def test_the_paginator_reads_what_surrounds_a_streamed_list(
    streamed: None, paginator: Any, bodies: list[str], ids: list[int]
) -> None:
    chunks, error = await read([body.encode() for body in bodies], records_path="data", paginator=paginator, piece=1)
    assert error is None
    assert [record["id"] for chunk in chunks for record in chunk] == ids


async def test_an_api_serving_one_streamed_page_forever_is_a_loop(streamed: None) -> None:
    page = b'{"data": [{"id": 1}, {"id": 2}, {"id": 3}], "total": 9}'
    _, error = await read([page] * 3, records_path="data", paginator={"type": "page_number", "page_size": 3})
    assert isinstance(error, PaginationError) and "same page twice" in str(error)


async def test_a_list_twice_at_the_records_path_fails_rather_than_choose(streamed: None) -> None:
    _, error = await read([b'{"data": [{"id": 1}], "data": [{"id": 2}]}'], records_path="data")
    assert isinstance(error, SourceError) and "records_path 'data' is in the body twice" in str(error)


async def test_a_connection_dropped_within_a_streamed_body_is_retriable(streamed: None) -> None:
    body = json.dumps({"data": [{"id": i} for i in range(50)]}).encode()
    with respx.mock:
        respx.get(url__startswith=BASE).mock(return_value=httpx.Response(200, stream=Pieces(body, 16, drop_after=200)))
        async with RestClient(ApiConfig(name="crm", base_url=BASE)) as client:
            with pytest.raises(RetriableError, match=r"ReadError within a streamed body \(page 1 of the stream\)"):
                async for _ in client.paginate("/customers", records_path="data"):
                    pass


async def test_records_are_handed_on_while_the_body_is_still_arriving(streamed: None) -> None:
    """The API holds back the rest of its page until the consumer has the first records: a client that read
    the body whole would wait for ever (here: until the deadline)."""
    first_records = asyncio.Event()

    class HeldBack(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"data": [{"id": 1}, {"id": 2}, {"id": 3},'
            await asyncio.wait_for(first_records.wait(), timeout=30)
            yield b' {"id": 4}]}'

    seen: list[int] = []
    with respx.mock:
        respx.get(url__startswith=BASE).mock(return_value=httpx.Response(200, stream=HeldBack()))
        async with RestClient(ApiConfig(name="crm", base_url=BASE)) as client:
            async for chunk in client.paginate("/customers", records_path="data"):
                seen += [record["id"] for record in chunk]
                first_records.set()
    assert seen == [1, 2, 3, 4]


async def test_a_short_body_with_its_length_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "CHUNK_RECORDS", 1)
    with respx.mock:
        respx.get(url__startswith=BASE).mock(return_value=httpx.Response(200, json={"data": [{"id": 1}, {"id": 2}]}))
        async with RestClient(ApiConfig(name="crm", base_url=BASE)) as client:
            pages = [page async for page in client.paginate("/customers", records_path="data")]
    assert pages == [[{"id": 1}, {"id": 2}]]  # one page, not chunks


def test_a_summary_tells_the_same_page_from_another() -> None:
    page = streaming.PageSummary(3, '{"id": 1}', '{"id": 3}')
    assert len(page) == 3 and page
    assert page == streaming.PageSummary(3, '{"id": 1}', '{"id": 3}')
    assert page != streaming.PageSummary(3, '{"id": 4}', '{"id": 6}') and page != [{"id": 1}]
    assert not streaming.PageSummary(0, "", "")
