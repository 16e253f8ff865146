"""Paginators: each reads a response (`update_state`) and shapes the next request (`update_request`).

A paginator is chosen by name in configuration (`{"type": "page_number", "page_size": 100}`); the
client calls `fresh()` for every pagination run so that state never leaks between runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from prefect_restful_etl.tasks.engine.exceptions import PaginationError
from prefect_restful_etl.tasks.engine.paths import get_path


@dataclass
class PageRequest:
    """The request a paginator shapes: a URL (absolute or relative to the API) and its query."""

    url: str
    params: dict[str, Any] = field(default_factory=dict)


class BasePaginator(BaseModel):
    """The contract: `init_request` once, then `update_state` per response and `update_request` per page."""

    model_config = ConfigDict(extra="forbid")

    max_pages: int | None = Field(default=None, ge=1, description="Stop with an error past this many pages.")
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
        raise NotImplementedError

    def update_request(self, request: PageRequest) -> None:
        raise NotImplementedError

    def _guard(self, token: Any) -> None:
        """Every style passes its next token or URL here, so no style can spin forever."""
        if token in self._seen:
            raise PaginationError(f"loop detected: {type(self).__name__} was given {token!r} twice")
        self._seen.add(token)


class SinglePagePaginator(BasePaginator):
    """The endpoint returns everything at once: `[{"id": 1}, {"id": 2}]`."""

    type: Literal["single_page"] = "single_page"

    def update_state(self, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        self._has_next = False

    def update_request(self, request: PageRequest) -> None:
        pass


class PageNumberPaginator(BasePaginator):
    """Numbered pages: `GET /customers?page=2&per_page=100`.

    ```json
    {"data": [...], "page": 2, "total": 1234}
    ```
    Stops on an empty or short page, past `total_path` (records) when given, or when `has_more_path` is false.
    """

    type: Literal["page_number"] = "page_number"
    page_param: str = "page"
    size_param: str | None = "per_page"
    page_size: int = Field(default=100, ge=1)
    first_page: int = 1
    total_path: str | None = Field(default=None, description="Where the body gives the total record count.")
    has_more_path: str | None = Field(default=None, description="Where the body says whether more pages follow.")
    _page: int = PrivateAttr(default=1)
    _fetched: int = PrivateAttr(default=0)

    def init_request(self, request: PageRequest) -> None:
        self._page, self._fetched = self.first_page, 0
        request.params[self.page_param] = self._page
        if self.size_param:
            request.params[self.size_param] = self.page_size

    def update_state(self, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        self._fetched += len(records)
        body = response.json() if (self.total_path or self.has_more_path) else None
        if not records or len(records) < self.page_size:
            self._has_next = False
        elif self.has_more_path is not None:
            self._has_next = bool(get_path(body, self.has_more_path))
        elif self.total_path is not None:
            self._has_next = self._fetched < int(get_path(body, self.total_path, 0))

    def update_request(self, request: PageRequest) -> None:
        self._page += 1
        self._guard(self._page)
        request.params[self.page_param] = self._page


class HeaderLinkPaginator(BasePaginator):
    """RFC 8288 `Link` header: `Link: <https://api.example.com/customers?page=3>; rel="next"`."""

    type: Literal["header_link"] = "header_link"
    rel: str = "next"
    _next_url: str | None = PrivateAttr(default=None)

    def update_state(self, response: httpx.Response, records: list[dict[str, Any]]) -> None:
        link = response.links.get(self.rel)
        self._next_url = link.get("url") if link else None
        self._has_next = bool(self._next_url)

    def update_request(self, request: PageRequest) -> None:
        assert self._next_url is not None
        self._guard(self._next_url)
        request.url, request.params = self._next_url, {}


Paginator = Annotated[
    SinglePagePaginator | PageNumberPaginator | HeaderLinkPaginator,
    Field(discriminator="type"),
]
