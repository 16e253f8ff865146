"""Paginators: each reads a response (`update_state`) and shapes the next request (`update_request`).

A paginator is chosen by name in configuration (`"page_number"`, or `{"type": "page_number", "page_size": 100}`);
the client calls `fresh()` for every pagination run so that state never leaks between runs. Numbered styles
that know the total may also plan every remaining page at once (`planned_pages`) for concurrent fetching.
That is opt-in (`"concurrent": true`): it multiplies the load on the API, and an API that counts its total
loosely would be asked for pages that do not exist, where sequential paging simply stops at an empty page.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, model_validator

from prefect_restful_etl.tasks.engine.exceptions import PaginationError, SourceChanged
from prefect_restful_etl.tasks.engine.http.body import json_body
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.http.shorthand import with_names


def body_of(response: httpx.Response) -> Any:
    """The response's JSON body, parsed once (by the client or the first paginator step that reads it);
    `http/body.py` says how values no stage can hold (NaN, 1e400, a lone surrogate, deep nesting) come out."""
    return json_body(response)


def _header_int(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None or not value.strip():
        return None
    return _as_int(value.strip(), f"header {name}")


@dataclass
class PageRequest:
    """The request a paginator shapes: a URL (absolute or relative to the API) and its query."""

    url: str
    params: dict[str, Any] = field(default_factory=dict)


class PagePlan:
    """The remaining pages of a numbered style, built lazily: a plan of a million pages costs a `range`."""

    def __init__(self, base: PageRequest, param: str, values: range) -> None:
        self._base, self._param, self._values = base, param, values

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[PageRequest]:
        for value in self._values:
            yield PageRequest(self._base.url, {**self._base.params, self._param: value})


class BasePaginator(BaseModel):
    """The contract: `init_request` once, then `update_state` per response and `update_request` per page."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    max_pages: int | None = Field(default=None, ge=1, description="Stop with an error past this many pages.")
    # Whether an object where the records list belongs is one record (an endpoint that answers one object);
    # in a stream of pages it contradicts the stream, an error rather than a page of one.
    one_object_is_a_record: ClassVar[bool] = False
    _has_next: bool = PrivateAttr(default=True)
    _seen: set[Any] = PrivateAttr(default_factory=set)

    def fresh(self) -> Self:
        """A copy with clean state, for one pagination run."""
        return self.model_copy(deep=True, update={})._reset()

    def _reset(self) -> Self:
        self._has_next, self._seen = True, set()
        return self

    @property
    def has_next(self) -> bool:
        return self._has_next

    def init_request(self, request: PageRequest) -> None:
        """Shape the first request (the first page's parameters)."""

    def update_state(self, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        """Read a page. For a page streamed as it was parsed (`streaming.py`), `records` is its `PageSummary`:
        its `len()` and `==` (the same page twice) are all a style may use of it."""
        raise NotImplementedError

    def update_request(self, request: PageRequest) -> None:
        raise NotImplementedError

    def planned_pages(self, first: PageRequest) -> PagePlan | None:
        """After the first page: every remaining request, if this style may fetch them concurrently."""
        return None

    def check_planned(self, request: PageRequest, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        """A planned page, fetched concurrently: raise if it contradicts what page one announced."""

    def positional(self) -> bool:
        """Whether pages are positions (a number, an offset): records written meanwhile move between them."""
        return False

    def _guard(self, token: Any) -> None:
        """Every style passes its next token or URL here, so no style can spin forever."""
        if token in self._seen:
            raise PaginationError(f"loop detected: {type(self).__name__} was given {token!r} twice")
        self._seen.add(token)


class SinglePagePaginator(BasePaginator):
    """The endpoint returns everything at once:

    ```json
    [{"id": 1, "name": "Acme"}, {"id": 2, "name": "Globex"}]
    ```
    or one object, which is one record (`GET /settings` answered by `{"currency": "EUR"}`).
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "single_page"}]})

    type: Literal["single_page"] = "single_page"
    one_object_is_a_record: ClassVar[bool] = True

    def update_state(self, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        self._has_next = False

    def update_request(self, request: PageRequest) -> None:
        pass


class _NumberedPaginator(BasePaginator):
    """Shared by page-number and offset styles: stop signals, the total, and the concurrent plan.

    Stops on an empty page; else on `has_more_path` when given; else past the total when it is given; else
    on a short page (only when the size is sent, since otherwise the server picks the size).

    A page that contradicts the stream fails it (`PaginationError`, naming the page) rather than ending it:
    an empty page, or one shorter than the page size, while the total or `has_more` says more follow; a
    stream that ends with another count than its total. A total that changes between pages means the
    source was written while it was read: `SourceChanged`, which an extract answers by reading again.
    """

    total_path: str | None = Field(default=None, description="Where the body gives the total record count.")
    total_header: str | None = Field(
        default=None, description="A response header giving the total record count (`X-Total-Count`)."
    )
    has_more_path: str | None = Field(default=None, description="Where the body says whether more pages follow.")
    concurrent: bool = Field(
        default=False, description="Once page one gives the total, fetch the other pages concurrently."
    )
    _fetched: int = PrivateAttr(default=0)
    _total: int | None = PrivateAttr(default=None)
    _previous: list[dict[str, Any]] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _concurrent_needs_total(self) -> Self:
        if self.concurrent and not self._can_plan():
            raise ValueError(
                "concurrent paging needs the total and the page size: set total_path (or total_header) and the size"
            )
        if self.total_path is not None and self.total_header is not None:
            raise ValueError("give the total in the body (total_path) or in a header (total_header), not both")
        return self

    def _can_plan(self) -> bool:
        raise NotImplementedError

    def _page_size(self) -> int | None:
        raise NotImplementedError

    def _more_by_total(self) -> bool | None:
        raise NotImplementedError

    def _reset(self) -> Self:
        self._fetched, self._total, self._previous = 0, None, None
        return super()._reset()

    def update_state(self, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        # An API that ignores the page parameter answers page one forever: that is a loop too.
        if records and records == self._previous:
            raise PaginationError(f"loop detected: {type(self).__name__} got the same page twice")
        self._previous = records
        self._fetched += len(records)
        body = body_of(response) if self._reads_body() else None
        self._read_totals(body, response)
        more = bool(get_path(body, self.has_more_path)) if self.has_more_path is not None else self._more_by_total()
        size = self._page_size()
        if more and (not records or (size is not None and len(records) < size)):
            raise PaginationError(
                f"{self._where()} has {len(records)} records of the {size or 'some'} asked for, yet the stream says"
                " more follow (an API that serves fewer per page than asked needs the page size lowered to its maximum)"
            )
        if not records:
            self._has_next = False
        elif more is not None:
            self._has_next = more
        elif size is not None:
            self._has_next = len(records) >= size
        if not self._has_next:
            self._check_count()

    def check_planned(self, request: PageRequest, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        self._same_total(body_of(response) if self.total_path is not None else None, response)
        expected = self._expected(request)
        if expected is not None and len(records) != expected:
            where = self._where(request)
            raise PaginationError(
                f"{where} has {len(records)} records where the total of {self._total} puts {expected}"
            )

    def _expected(self, request: PageRequest) -> int | None:
        """How many records a planned page holds by page one's total (None: the style cannot tell)."""
        raise NotImplementedError

    def positional(self) -> bool:
        return True

    def _where(self, request: PageRequest | None = None) -> str:
        """The page, as its request names it: `page 3`, `offset 600`."""
        raise NotImplementedError

    def _check_count(self) -> None:
        expected = None if self._total is None else self._total - self._skipped()
        if expected is not None and self._fetched != expected:
            raise PaginationError(f"the stream ended after {self._fetched} records, yet its total was {expected}")

    def _skipped(self) -> int:
        return 0

    def _reads_body(self) -> bool:
        return self.total_path is not None or self.has_more_path is not None

    def _read_totals(self, body: Any, response: httpx.Response) -> None:
        if self._total is not None:
            self._same_total(body, response)
        elif self.total_path is not None:
            self._total = _as_int(get_path(body, self.total_path), self.total_path)
        elif self.total_header is not None:
            self._total = _header_int(response, self.total_header)

    def _same_total(self, body: Any, response: httpx.Response) -> None:
        if self._total is None:
            return
        if self.total_path is not None:
            total = _as_int(get_path(body, self.total_path), self.total_path)
        elif self.total_header is not None:
            total = _header_int(response, self.total_header)
        else:
            return
        if total is not None and total != self._total:
            raise SourceChanged(f"the total went from {self._total} to {total} while the pages were read")


def _as_int(value: Any, path: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PaginationError(f"{path} should be a number, got {type(value).__name__}") from None


class PageNumberPaginator(_NumberedPaginator):
    """Numbered pages: `GET /customers?page=2&per_page=100` answered by

    ```json
    {"data": [{"id": 101}, ...], "page": 2, "total": 1234, "total_pages": 13}
    ```
    handled by `{"type": "page_number", "page_size": 100, "total_path": "total"}` (or `total_pages_path`);
    add `"concurrent": true` to fetch pages 2..13 at once after page 1. The total may come in a header
    instead (`X-Total-Count: 1234`: `total_header`; `X-Total-Pages: 13`: `total_pages_header`), or the last
    page in a `Link` header (`<...?page=13>; rel="last"`: `last_link_rel: "last"`).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "page_number", "page_size": 100, "total_path": "total", "concurrent": True},
                {"type": "page_number", "page_param": "page", "size_param": "limit", "total_header": "X-Total-Count"},
            ]
        }
    )

    type: Literal["page_number"] = "page_number"
    page_param: str = Field(default="page", description="Query parameter carrying the page number.")
    size_param: str | None = Field(
        default="per_page", description="Query parameter carrying the page size; null: the server picks it."
    )
    page_size: int = Field(default=100, ge=1, description="Records per page, sent as `size_param`.")
    first_page: int = Field(default=1, description="The number of the first page (0 or 1).")
    total_pages_path: str | None = Field(default=None, description="Where the body gives the page count.")
    total_pages_header: str | None = Field(
        default=None, description="A response header giving the page count (`X-Total-Pages`)."
    )
    last_link_rel: str | None = Field(
        default=None,
        description='The `Link` header relation naming the last page (`"last"`); its `page_param` is the last page.',
    )
    _page: int = PrivateAttr(default=1)
    _last_page: int | None = PrivateAttr(default=None)

    def _can_plan(self) -> bool:
        by_count = self.total_pages_path is not None or self.total_pages_header is not None
        by_link = self.last_link_rel is not None
        by_total = (self.total_path is not None or self.total_header is not None) and self.size_param is not None
        return by_count or by_link or by_total

    def _page_size(self) -> int | None:
        return self.page_size if self.size_param else None

    def _reads_body(self) -> bool:
        return super()._reads_body() or self.total_pages_path is not None

    def _read_totals(self, body: Any, response: httpx.Response) -> None:
        super()._read_totals(body, response)
        if self._last_page is not None:
            return
        pages = None
        if self.total_pages_path is not None:
            pages = _as_int(get_path(body, self.total_pages_path), self.total_pages_path)
        elif self.total_pages_header is not None:
            pages = _header_int(response, self.total_pages_header)
        elif self.last_link_rel is not None:
            self._last_page = _linked_page(response, self.last_link_rel, self.page_param)
            return
        if pages is not None:
            self._last_page = self.first_page + pages - 1
        elif self._total is not None and self.size_param:
            self._last_page = self.first_page + math.ceil(self._total / self.page_size) - 1

    def _more_by_total(self) -> bool | None:
        if self._last_page is not None:
            return self._page < self._last_page
        return None if self._total is None else self._fetched < self._total

    def _reset(self) -> Self:
        self._last_page = None
        return super()._reset()

    def init_request(self, request: PageRequest) -> None:
        self._page = self.first_page
        request.params[self.page_param] = self._page
        if self.size_param:
            request.params[self.size_param] = self.page_size

    def update_request(self, request: PageRequest) -> None:
        self._page += 1
        self._guard(self._page)
        request.params[self.page_param] = self._page

    def planned_pages(self, first: PageRequest) -> PagePlan | None:
        if not (self.concurrent and self._has_next and self._last_page is not None):
            return None
        return PagePlan(first, self.page_param, range(self._page + 1, self._last_page + 1))

    def _where(self, request: PageRequest | None = None) -> str:
        return f"page {self._page if request is None else request.params[self.page_param]}"

    def _expected(self, request: PageRequest) -> int | None:
        number = request.params[self.page_param]
        if self._total is not None and self.size_param:
            return max(0, min(self.page_size, self._total - (number - self.first_page) * self.page_size))
        return self.page_size if self.size_param and number != self._last_page else None


def _linked_page(response: httpx.Response, rel: str, page_param: str) -> int | None:
    """The page number in the `Link` header's `rel` URL (`<https://api.example.com/items?page=13>; rel="last"`)."""
    link = response.links.get(rel)
    if not link or not link.get("url"):
        return None
    value = httpx.URL(link["url"]).params.get(page_param)
    return None if value is None else _as_int(value, f'the Link rel="{rel}" {page_param}')


class OffsetPaginator(_NumberedPaginator):
    """Offset and limit: `GET /invoices?offset=200&limit=100` answered by

    ```json
    {"items": [{"id": 201}, ...], "count": 1234}
    ```
    handled by `{"type": "offset", "limit": 100, "total_path": "count"}` (or `"total_header": "X-Total-Count"`);
    without a total it stops on an empty or short page. The total is the collection's size, so offsets run up
    to it.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "offset", "limit": 100, "total_path": "count"}]})

    type: Literal["offset"] = "offset"
    offset_param: str = Field(default="offset", description="Query parameter carrying the offset.")
    limit_param: str = Field(default="limit", description="Query parameter carrying the page size.")
    limit: int = Field(default=100, ge=1, description="Records per page, sent as `limit_param`.")
    initial_offset: int = Field(default=0, ge=0, description="The offset of the first page.")
    _offset: int = PrivateAttr(default=0)

    def _can_plan(self) -> bool:
        return self.total_path is not None or self.total_header is not None

    def _page_size(self) -> int | None:
        return self.limit

    def _more_by_total(self) -> bool | None:
        return None if self._total is None else self._offset + self.limit < self._total

    def init_request(self, request: PageRequest) -> None:
        self._offset = self.initial_offset
        request.params[self.offset_param] = self._offset
        request.params[self.limit_param] = self.limit

    def update_request(self, request: PageRequest) -> None:
        self._offset += self.limit
        self._guard(self._offset)
        request.params[self.offset_param] = self._offset

    def planned_pages(self, first: PageRequest) -> PagePlan | None:
        if not (self.concurrent and self._has_next and self._total is not None):
            return None
        return PagePlan(first, self.offset_param, range(self._offset + self.limit, self._total, self.limit))

    def _where(self, request: PageRequest | None = None) -> str:
        return f"offset {self._offset if request is None else request.params[self.offset_param]}"

    def _expected(self, request: PageRequest) -> int | None:
        assert self._total is not None, "planned only once page one gave the total"
        return max(0, min(self.limit, self._total - request.params[self.offset_param]))

    def _skipped(self) -> int:
        return min(self.initial_offset, self._total or 0)


class _ReferencePaginator(BasePaginator):
    """Shared by styles where each response names the next page (a token or a URL): stop when it names none.

    The page size is asked for on the first request (`size_param`, `page_size`); a cursor is sent back with it,
    and a next URL carries what the API put in it."""

    stop_after_empty_page: bool = Field(default=True, description="An empty page ends paging whatever it says.")
    size_param: str | None = Field(
        default=None, description="Query parameter carrying the page size (`limit`), sent with `page_size`."
    )
    page_size: int | None = Field(default=None, ge=1, description="Records per page, sent as `size_param`.")
    _next: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _sizes_together(self) -> Self:
        if (self.size_param is None) != (self.page_size is None):
            raise ValueError("size_param and page_size go together: the size is sent as that parameter")
        return self

    def _reset(self) -> Self:
        self._next = None
        return super()._reset()

    def init_request(self, request: PageRequest) -> None:
        if self.size_param is not None:
            request.params[self.size_param] = self.page_size

    def _find_next(self, response: httpx.Response) -> str | None:
        raise NotImplementedError

    def update_state(self, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        found = self._find_next(response)
        self._next = None if _absent(found) else str(found)
        self._has_next = self._next is not None and not (self.stop_after_empty_page and not records)

    def update_request(self, request: PageRequest) -> None:
        assert self._next is not None
        self._guard(self._next)
        self._apply(request, self._next)

    def _apply(self, request: PageRequest, reference: str) -> None:
        raise NotImplementedError


class _CursorParam(_ReferencePaginator):
    cursor_param: str = Field(default="cursor", description="Query parameter the cursor is sent back as.")

    def _apply(self, request: PageRequest, reference: str) -> None:
        request.params[self.cursor_param] = reference


class _NextUrl(_ReferencePaginator):
    def _apply(self, request: PageRequest, reference: str) -> None:
        request.url, request.params = reference, {}


def _absent(reference: Any) -> bool:
    """No next page: a null, missing or empty reference, or `false` (`"next_cursor": false` on the last page),
    which would otherwise be sent back as the token "False" and then again, a loop."""
    return reference is None or reference is False or reference == ""


def _absolute(response: httpx.Response, url: Any) -> str | None:
    # A relative next link is relative to the page that gave it, not to the API's base URL.
    return None if _absent(url) else str(response.request.url.join(str(url)))


class CursorPaginator(_CursorParam):
    """A cursor (next token) in the body, sent back as a query parameter:

    ```json
    {"results": [...], "meta": {"next_cursor": "eyJpZCI6MTAwfQ"}}
    ```
    handled by `{"type": "cursor", "cursor_path": "meta.next_cursor", "cursor_param": "cursor"}`;
    paging stops when the cursor is null, empty or missing. With `"size_param": "limit", "page_size": 1000` every
    request asks for pages of 1,000 (`GET /customers?limit=1000`, then `?limit=1000&cursor=eyJpZCI6MTAwfQ`).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "cursor", "cursor_path": "meta.next_cursor", "cursor_param": "cursor"},
                {"type": "cursor", "cursor_path": "next", "size_param": "limit", "page_size": 1000},
            ]
        }
    )

    type: Literal["cursor"] = "cursor"
    cursor_path: str = Field(default="next_cursor", description="Where the body gives the next cursor.")

    def _find_next(self, response: httpx.Response) -> str | None:
        return get_path(body_of(response), self.cursor_path)


class NextUrlPaginator(_NextUrl):
    """The next page's URL in the body (absolute, or relative to the page that gave it):

    ```json
    {"data": [...], "links": {"next": "https://api.example.com/v1/bills?after=99"}}
    ```
    handled by `{"type": "next_url", "next_url_path": "links.next"}`.
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "next_url", "next_url_path": "links.next"}]})

    type: Literal["next_url"] = "next_url"
    next_url_path: str = Field(default="next", description="Where the body gives the next page's URL.")

    def _find_next(self, response: httpx.Response) -> str | None:
        return _absolute(response, get_path(body_of(response), self.next_url_path))


class HeaderLinkPaginator(_NextUrl):
    """RFC 8288 `Link` header: `Link: <https://api.example.com/customers?page=3>; rel="next"`.

    Handled by `"header_link"` (or `{"type": "header_link", "rel": "next"}`), following each next link.
    With `page_param` (and `size_param`, `page_size`) the first request asks for a page and its size, and with
    `"concurrent": true` and the last page known from page one (a `Link` `rel="last"` URL, `X-Total-Pages`, or
    `X-Total-Count` over the page size) the other pages are fetched concurrently by number:
    ```
    GET /customers?_page=1&_limit=50
    200 Link: <http://api/customers?_page=2&_limit=50>; rel="next",
              <http://api/customers?_page=40&_limit=50>; rel="last"
        X-Total-Count: 1990
    ```
    `{"type": "header_link", "page_param": "_page", "size_param": "_limit", "page_size": 50,
      "total_header": "X-Total-Count", "concurrent": true}`.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "header_link", "rel": "next"},
                {
                    "type": "header_link",
                    "page_param": "_page",
                    "size_param": "_limit",
                    "page_size": 50,
                    "total_header": "X-Total-Count",
                    "concurrent": True,
                },
            ]
        }
    )

    type: Literal["header_link"] = "header_link"
    rel: str = Field(default="next", description="The `Link` relation of the next page.")
    page_param: str | None = Field(
        default=None, description="Query parameter carrying the page number: sent on page one, planned by it."
    )
    first_page: int = Field(default=1, description="The number of the first page (0 or 1).")
    last_rel: str = Field(default="last", description="The `Link` relation of the last page, read when planning.")
    total_header: str | None = Field(
        default=None, description="A response header giving the total record count (`X-Total-Count`)."
    )
    total_pages_header: str | None = Field(
        default=None, description="A response header giving the page count (`X-Total-Pages`)."
    )
    concurrent: bool = Field(
        default=False, description="Once page one tells the last page, fetch the other pages concurrently."
    )
    _last_page: int | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _planned_by_number(self) -> Self:
        if self.concurrent and self.page_param is None:
            raise ValueError("concurrent Link paging plans pages by number: set page_param")
        return self

    def _reset(self) -> Self:
        self._last_page = None
        return super()._reset()

    def positional(self) -> bool:
        return self.page_param is not None  # its pages are planned by number; else links, which may be either

    def init_request(self, request: PageRequest) -> None:
        if self.page_param is not None:
            request.params[self.page_param] = self.first_page
        super().init_request(request)

    def update_state(self, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        super().update_state(response, records)
        if self.concurrent and self._last_page is None:
            self._last_page = self._last_from(response)

    def _last_from(self, response: httpx.Response) -> int | None:
        assert self.page_param is not None
        linked = _linked_page(response, self.last_rel, self.page_param)
        if linked is not None:
            return linked
        pages = None if self.total_pages_header is None else _header_int(response, self.total_pages_header)
        if pages is None and self.total_header is not None and self.page_size:
            total = _header_int(response, self.total_header)
            pages = None if total is None else math.ceil(total / self.page_size)
        return None if pages is None else self.first_page + pages - 1

    def planned_pages(self, first: PageRequest) -> PagePlan | None:
        # The last page decides, not the next link: an API with a total may send no Link header at all.
        if not (self.concurrent and self._last_page is not None and self.page_param):
            return None
        return PagePlan(first, self.page_param, range(self.first_page + 1, self._last_page + 1))

    def _find_next(self, response: httpx.Response) -> str | None:
        link = response.links.get(self.rel)
        return _absolute(response, link.get("url")) if link else None


class HeaderCursorPaginator(_CursorParam):
    """A cursor in a response header, sent back as a query parameter:

    ```
    GET /events?limit=100
    200 X-Next-Cursor: c2FsdA
        [{"id": "ev_1"}, ...]
    GET /events?limit=100&cursor=c2FsdA
    ```
    Handled by `{"type": "header_cursor", "cursor_header": "X-Next-Cursor", "cursor_param": "cursor",
    "size_param": "limit", "page_size": 100}`.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "header_cursor",
                    "cursor_header": "X-Next-Cursor",
                    "cursor_param": "cursor",
                    "size_param": "limit",
                    "page_size": 100,
                }
            ]
        }
    )

    type: Literal["header_cursor"] = "header_cursor"
    cursor_header: str = Field(default="X-Next-Cursor", description="The response header giving the next cursor.")

    def _find_next(self, response: httpx.Response) -> str | None:
        return response.headers.get(self.cursor_header)


def _by_name(value: Any) -> Any:
    """`"page_number"` is short for `{"type": "page_number"}`."""
    return {"type": value} if isinstance(value, str) else value


_PagingStyles = Annotated[
    SinglePagePaginator
    | PageNumberPaginator
    | OffsetPaginator
    | CursorPaginator
    | NextUrlPaginator
    | HeaderLinkPaginator
    | HeaderCursorPaginator,
    Field(discriminator="type"),
    BeforeValidator(_by_name),
]
if TYPE_CHECKING:
    Paginator = _PagingStyles
else:  # the JSON Schema says a name alone is accepted too
    Paginator = with_names(_PagingStyles)
