"""The HTTP client: one `httpx.AsyncClient` per API and run, with auth, retries, rate limit and paging."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from prefect_restful_etl.tasks.engine.api import ApiConfig
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import PaginationError, RetriableError, SourceError
from prefect_restful_etl.tasks.engine.paginators import BasePaginator, PageRequest
from prefect_restful_etl.tasks.engine.paths import get_path
from prefect_restful_etl.tasks.engine.redaction import redact

logger = logging.getLogger(__name__)

_RETRIABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def classify(response: httpx.Response, endpoint: str) -> None:
    """The one place that decides what an HTTP status means: success, retry, or a fatal error."""
    if response.is_success:
        return
    status = response.status_code
    message = response.text[:300] or response.reason_phrase
    if status in _RETRIABLE_STATUSES:
        raise RetriableError(endpoint, status, message, retry_after=parse_retry_after(response))
    raise SourceError(endpoint, status, message)


def parse_retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (`120`) or as an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RateLimiter:
    """At most `rate` requests per second, spread evenly, shared by every job that holds it."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            await asyncio.sleep(delay)


class RestClient:
    """Requests against one API for one run; use as `async with RestClient(api, credentials) as client`."""

    def __init__(
        self,
        api: ApiConfig,
        credentials: Credentials | None = None,
        *,
        rate_limiter: RateLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api = api
        self._secrets = credentials.secret_values() if credentials else []
        self._auth = api.auth.build(credentials, api.name)  # fails here, before any request
        self._limiter = rate_limiter or RateLimiter(api.rate_limit)
        limits = httpx.Limits(max_connections=api.concurrency * 2, max_keepalive_connections=api.concurrency * 2)
        self._http = httpx.AsyncClient(
            base_url=api.url, headers=api.headers, timeout=api.timeout, limits=limits, transport=transport
        )

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    def _endpoint(self, method: str, url: str) -> str:
        return redact(f"{method} {self.api.name}:{httpx.URL(url).copy_with(query=None)}", self._secrets)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on 429, 5xx, timeouts and dropped connections with backoff and jitter."""
        endpoint = self._endpoint(method, url)
        for attempt in range(1, self.api.max_attempts + 1):
            await self._limiter.wait()
            try:
                response = await self._http.request(method, url, auth=self._auth, **kwargs)
                classify(response, endpoint)
                return response
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as ex:
                error: RetriableError = RetriableError(endpoint, None, redact(f"{type(ex).__name__}: {ex}", self._secrets))
            except RetriableError as ex:
                error = ex
            if attempt == self.api.max_attempts:
                raise error
            delay = self._backoff(attempt, error.retry_after)
            logger.warning("%s; attempt %d of %d, retrying in %.2fs", error, attempt, self.api.max_attempts, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.api.backoff_max * 10)
        ceiling = min(self.api.backoff_max, self.api.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": never zero, never in lockstep

    async def paginate(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        records_path: str | None = None,
        paginator: BasePaginator | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the records of each page in turn."""
        pager = (paginator or self.api.paginator).fresh()
        request = PageRequest(url=path, params=dict(params or {}))
        pager.init_request(request)
        pages = 0
        while True:
            response = await self.request("GET", request.url, params=request.params)
            records = extract_records(response, records_path, self._endpoint("GET", request.url))
            pager.update_state(response, records)
            pages += 1
            yield records
            if not pager.has_next:
                return
            if pager.max_pages is not None and pages >= pager.max_pages:
                raise PaginationError(f"{self._endpoint('GET', path)}: more than max_pages={pager.max_pages} pages")
            pager.update_request(request)


def extract_records(response: httpx.Response, records_path: str | None, endpoint: str) -> list[dict[str, Any]]:
    """The list of records at `records_path` in the body; a single object counts as one record."""
    try:
        body = response.json()
    except ValueError as ex:
        raise SourceError(endpoint, response.status_code, "the body is not JSON") from ex
    records = get_path(body, records_path)
    if records is None:
        return []
    if isinstance(records, dict):
        return [records]
    if not isinstance(records, list):
        raise SourceError(endpoint, response.status_code, f"{records_path or 'the body'} is not a list of records")
    return records
