"""The HTTP client: one `httpx.AsyncClient` per API and job, with auth, retries, rate limit and paging.

What a run shares between the clients of one API (the rate limit, an OAuth2 token) is passed in: its
`Limiter` (`ratelimit.py`: one schedule for every worker) and `api.auth.build(credentials, api.name)`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from functools import partial
from typing import Any

import httpx

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import PaginationError, RetriableError, SourceError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.body import forget_body
from prefect_restful_etl.tasks.engine.http.paginators import BasePaginator, PagePlan, PageRequest, body_of
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.http.ratelimit import Limiter, RateLimiter
from prefect_restful_etl.tasks.engine.http.streaming import large_body, read_page
from prefect_restful_etl.tasks.engine.http.tokens import TokenAuth
from prefect_restful_etl.tasks.engine.http.window import fetch_in_order
from prefect_restful_etl.tasks.engine.redaction import (
    RedactingFilter,
    install_log_redaction,
    redact,
    redact_excerpt,
)

logger = logging.getLogger(__name__)

_NOT_RETRIABLE_5XX = frozenset({501, 505})  # the server says it will never do this
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Failures where the request surely never reached the application, so even a POST may be sent again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_DROPPED = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_sleep = asyncio.sleep  # the backoff's pause, a module attribute so that tests can record it instead


def classify(response: httpx.Response, endpoint: str, secrets: Sequence[str] = ()) -> None:
    """The one place that decides what an HTTP status means: success, retry, or a fatal error."""
    if response.is_success:
        return
    status = response.status_code
    message = redact_excerpt(response.text, secrets, 300) or response.reason_phrase
    if status in (408, 425, 429) or (status >= 500 and status not in _NOT_RETRIABLE_5XX):
        raise RetriableError(endpoint, status, message, retry_after=parse_retry_after(response))
    raise SourceError(endpoint, status, message)


def parse_retry_after(response: httpx.Response, now: Callable[[], float] = time.time) -> float | None:
    """`Retry-After` in seconds (`120`) or as an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


class RestClient:
    """Requests against one API for one job; use as `async with RestClient(api, credentials) as client`."""

    def __init__(
        self,
        api: ApiConfig,
        credentials: Credentials | None = None,
        *,
        rate_limiter: Limiter | None = None,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api = api
        self._secrets = credentials.secret_values() if credentials else []
        self._auth = auth or api.auth.build(credentials, api.name)  # a missing credential fails here
        self._limiter = rate_limiter or RateLimiter(api.rate_limit)
        install_log_redaction()
        RedactingFilter.register(self._secrets)
        limits = httpx.Limits(max_connections=api.concurrency * 2, max_keepalive_connections=api.concurrency * 2)
        # The limiter waits in a request hook, which httpx runs for every request it sends: retries, and
        # also those an auth flow yields (an OAuth2 token request, the request again after a 401).
        self._http = httpx.AsyncClient(
            base_url=api.url,
            headers=api.headers,
            timeout=api.timeout,
            limits=limits,
            transport=transport,
            event_hooks={"request": [self._before_send]},
        )
        self._base = httpx.URL(api.url)
        # `http://host:port/` of the API: an absolute URL starting so is on its origin without parsing it
        self._origin_prefix = str(self._base.copy_with(path="/", query=None, fragment=None))
        if isinstance(self._auth, TokenAuth):  # the tokens it fetches are secrets too
            self._auth.add_token_listener(self._add_secret)

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if not self._http.is_closed:
            await self._http.aclose()
            if isinstance(self._auth, TokenAuth):
                self._auth.remove_token_listener(self._add_secret)
            RedactingFilter.unregister(self._secrets)

    def _add_secret(self, secret: str) -> None:
        """A secret learnt while running (a fetched token): masked in errors and log lines from now on."""
        if secret and secret not in self._secrets and not self._http.is_closed:  # closed: unregistered already
            self._secrets.append(secret)
            RedactingFilter.register([secret])

    async def _before_send(self, request: httpx.Request) -> None:
        await self._limiter.wait()

    def _endpoint(self, method: str, url: str | httpx.URL) -> str:
        """`GET crm:/customers`: what errors name, built only when one is raised (it parses and redacts)."""
        return redact(f"{method} {self.api.name}:{httpx.URL(url).copy_with(query=None)}", self._secrets)

    async def request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool | None = None,
        attempts: int | None = None,
        accept_status: frozenset[int] = frozenset(),
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request, retried on 429, 5xx, timeouts and dropped connections with backoff and jitter.

        A request that is not `idempotent` (by default POST and PATCH) is sent again only when it surely
        never reached the API (no connection): a retried POST after a 502, a 429 or a cut answer could create a
        record twice, since an API may act on a request and still answer so. `attempts=1` sends it once and leaves
        every retry to the caller (a load's create looks its key up first).
        A status in `accept_status` is the caller's to read (a batch API naming its failed rows), not an error.
        With `stream` (a page's GET) a long body is left to stream as it arrives (`streaming.large_body`).
        """
        self._check_origin(method, url)
        safe = method.upper() in _IDEMPOTENT if idempotent is None else idempotent
        most = attempts or self.api.max_attempts
        for attempt in range(1, most + 1):
            outcome, unsent = await self._send(method, url, kwargs, accept_status, stream)
            if isinstance(outcome, httpx.Response):
                return outcome
            if attempt == most or not (safe or unsent):
                raise outcome
            await self.pause(attempt, outcome)
        raise AssertionError("unreachable")

    async def pause(self, attempt: int, failure: RetriableError) -> None:
        """The backoff before attempt `attempt + 1` after `failure` (its Retry-After, or jittered doubling)."""
        delay = self._backoff(attempt, failure.retry_after)
        logger.warning("%s; attempt %d of %d, retrying in %.2fs", failure, attempt, self.api.max_attempts, delay)
        await _sleep(delay)

    async def _send(
        self,
        method: str,
        url: str,
        kwargs: dict[str, Any],
        accept_status: frozenset[int] = frozenset(),
        stream: bool = False,
    ) -> tuple[httpx.Response | RetriableError, bool]:
        """The response, or a retriable error and whether the request surely never reached the API."""
        failure = ""
        try:
            if stream:
                response = await self._send_page(method, url, kwargs)
            else:
                response = await self._http.request(method, url, auth=self._auth, **kwargs)
            if response.is_success or response.status_code in accept_status:  # the common case pays for no label
                return response, False
            classify(response, self._endpoint(method, url), self._secrets)
            return response, False
        except RetriableError as ex:  # a 429 too: some APIs count (and answer) a request after acting on it
            return ex, False
        except _DROPPED as ex:
            error = RetriableError(
                self._endpoint(method, url), None, redact(f"{type(ex).__name__}: {ex}", self._secrets)
            )
            return error, isinstance(ex, _NOT_SENT)
        except (httpx.HTTPError, httpx.InvalidURL) as ex:
            failure = redact(f"{type(ex).__name__}: {ex}", self._secrets)
        # Raised outside the `except`, so no chained httpx exception carries the URL (and a query secret).
        raise SourceError(self._endpoint(method, url), None, failure)

    async def _send_page(self, method: str, url: str, kwargs: dict[str, Any]) -> httpx.Response:
        """Send a page's request and read its body, whole when short; a long one is left to `large_body`."""
        response = await self._http.send(self._http.build_request(method, url, **kwargs), auth=self._auth, stream=True)
        try:
            await read_page(response)
        except BaseException:
            await response.aclose()
            raise
        return response

    def _check_origin(self, method: str, url: str) -> None:
        """A next URL from a response must not carry this API's credentials to another host.

        A relative URL (a configured path) is on the API's host by construction; an absolute one is parsed once
        per distinct origin prefix, not per request."""
        if not url.startswith(("http://", "https://", "//")) or url.startswith(self._origin_prefix):
            return
        target = httpx.URL(url)
        if (target.scheme, target.host, target.port) != (self._base.scheme, self._base.host, self._base.port):
            message = f"refusing to send {self.api.name}'s credentials to another host"
            raise SourceError(self._endpoint(method, url), None, message)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.api.backoff_max * 10)  # honour the server, within reason
        ceiling = min(self.api.backoff_max, self.api.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": never zero, never in lockstep

    async def paginate(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        records_path: str | None = None,
        paginator: BasePaginator | None = None,
        concurrency: int | None = None,
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Yield the records of each page in turn, in page order.

        When the paginator plans the remaining pages after page one (a numbered style with `concurrent`
        set and a total), they are fetched with at most `concurrency` (default `api.concurrency`) in flight.
        """
        pager = (paginator or self.api.paginator).fresh()
        request = PageRequest(url=path, params=dict(params or {}))
        pager.init_request(request)
        first = PageRequest(request.url, dict(request.params))
        pages = 0
        while True:
            response = await self._get_page(request, stream=True)
            endpoint = partial(self._endpoint, "GET", request.url)
            pages += 1
            one_object = pager.one_object_is_a_record
            extract = partial(extract_records, endpoint=endpoint, single_object=one_object, page=pages)
            large = large_body(response)
            if large is not None:  # a long body, staged as it is parsed: the paginator gets its summary after
                on_page = f" (page {pages} of the stream)"
                async with aclosing(large.records(records_path, endpoint, extract, on_page=on_page)) as chunks:
                    async for chunk in chunks:
                        yield chunk
            records = extract(response, records_path) if large is None else []
            self._step(endpoint, pages, pager.update_state, response, records if large is None else large.summary)
            plan = pager.planned_pages(first) if pages == 1 else None
            forget_body(response)
            if plan is not None:
                self._check_max_pages(pager, 1 + len(plan), path)
            if large is None:
                yield records
            if plan is not None:
                planned = self._fetch_planned(pager, plan, records_path, concurrency or self.api.concurrency)
                async with aclosing(planned):  # a consumer that stops early cancels the pages in flight
                    async for page in planned:
                        yield page
                return
            if not pager.has_next:
                return
            self._check_max_pages(pager, pages + 1, path)
            self._step(endpoint, pages, pager.update_request, request)

    def _step(self, endpoint: Callable[[], str], page: int | None, method: Callable[..., None], *args: Any) -> None:
        """Run one paginator step; its error names the endpoint and the page, and may quote a next URL, so it
        is redacted (and not chained). `SourceChanged` stays itself: an extract reads the stream again."""
        try:
            method(*args)
            return
        except PaginationError as ex:
            where = endpoint() if page is None else f"{endpoint()} (page {page} of the stream)"
            kind, message = type(ex), redact(f"{where}: {ex}", self._secrets)
        raise kind(message)

    def _check_max_pages(self, pager: BasePaginator, pages: int, path: str) -> None:
        if pager.max_pages is not None and pages > pager.max_pages:
            raise PaginationError(f"{self._endpoint('GET', path)}: more than max_pages={pager.max_pages} pages")

    def _fetch_planned(
        self, pager: BasePaginator, plan: PagePlan, records_path: str | None, concurrency: int
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The planned pages in order, with `concurrency` requests in flight all along (see `fetch_in_order`);
        each is checked against what page one announced."""

        async def fetch(page: PageRequest) -> list[dict[str, Any]]:
            response = await self._get_page(page)
            endpoint = partial(self._endpoint, "GET", page.url)
            records = extract_records(response, records_path, endpoint, single_object=False)
            self._step(endpoint, None, pager.check_planned, page, response, records)
            forget_body(response)
            return records

        return fetch_in_order(plan, fetch, concurrency)

    def _get_page(self, page: PageRequest, *, stream: bool = False) -> Awaitable[httpx.Response]:
        """GET a page; with `stream`, a long body is left to stream (`large_body`) rather than read whole."""
        # httpx 0.28 replaces a URL's query by `params=` (even `{}`): a URL with a query of its own (a next link)
        # gets the page's parameters merged into it; a plain path takes them as `params=` (no URL re-rendered).
        if not page.params:
            return self.request("GET", page.url, stream=stream)
        if "?" in page.url:
            return self.request("GET", str(httpx.URL(page.url).copy_merge_params(page.params)), stream=stream)
        return self.request("GET", page.url, params=page.params, stream=stream)


_ABSENT = object()


def extract_records(
    response: httpx.Response,
    records_path: str | None,
    endpoint: str | Callable[[], str],
    *,
    single_object: bool = True,
    page: int | None = None,
) -> list[dict[str, Any]]:
    """The list of records at `records_path` in the body; a single object counts as one record where
    `single_object` (an endpoint that answers one object), and is an error in a stream of pages.

    `null` or `[]` there is an empty page. A body without the path at all is an error: it is far more often
    a mistyped `records_path` than an API that leaves the key out, and read as empty it would give an
    extract that succeeds with nothing (and a full-refresh load that expires everything). `endpoint` names the
    request in errors (a callable builds that name only when one is raised), and so does `page`, the page's
    place in its stream.
    """
    on_page = "" if page is None else f" (page {page} of the stream)"
    try:
        body = body_of(response)
    except ValueError as ex:
        raise SourceError(_named(endpoint), response.status_code, "the body is not JSON" + on_page) from ex
    records = get_path(body, records_path, _ABSENT)
    if type(records) is list:  # the common case first
        return records
    if records is _ABSENT:
        message = f"records_path {records_path!r} is not in the body" + _keys_hint(body) + on_page
        raise SourceError(_named(endpoint), response.status_code, message)
    if records is None:
        return []
    where = records_path or "the body"
    if isinstance(records, dict) and single_object:
        return [records]
    message = f"{where} is an object, not a page's list of records" if isinstance(records, dict) else ""
    message = message or f"{where} is not a list of records"
    raise SourceError(_named(endpoint), response.status_code, message + on_page)


def _named(endpoint: str | Callable[[], str]) -> str:
    return endpoint if isinstance(endpoint, str) else endpoint()


def _keys_hint(body: Any, limit: int = 10) -> str:
    """The body's top-level keys (names, never values), so that a typo in the path is easy to see."""
    if not isinstance(body, dict):
        return f" (the body is a JSON {type(body).__name__})" if isinstance(body, list) else ""
    keys = sorted(map(str, body))
    return f" (its keys: {', '.join(keys[:limit])}{', ...' if len(keys) > limit else ''})"
