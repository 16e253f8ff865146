"""RestClient: status classification, retries and backoff, Retry-After, network errors, the rate limiter."""

from __future__ import annotations

import asyncio
import threading
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import RetriableError, SourceError
from prefect_restful_etl.tasks.engine.http import client as client_module
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import (
    RateLimiter,
    RestClient,
    classify,
    extract_records,
    parse_retry_after,
)

BASE = "http://127.0.0.1:8999/api"
URL = f"{BASE}/customers"


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff pauses the client asked for, recorded instead of slept."""
    recorded: list[float] = []

    async def record(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(client_module, "_sleep", record)
    return recorded


def make_client(**api: Any) -> RestClient:
    config = {"name": "crm", "base_url": BASE, "max_attempts": 3, "backoff_base": 1.0, "backoff_max": 30.0, **api}
    return RestClient(ApiConfig(**config))


def ok() -> httpx.Response:
    return httpx.Response(200, json={"ok": True})


@pytest.mark.parametrize(
    "status,retriable",
    [
        pytest.param(200, None, id="200-ok"),
        pytest.param(204, None, id="204-ok"),
        pytest.param(400, False, id="400-fatal"),
        pytest.param(401, False, id="401-fatal"),
        pytest.param(403, False, id="403-fatal"),
        pytest.param(404, False, id="404-fatal"),
        pytest.param(422, False, id="422-fatal"),
        pytest.param(408, True, id="408-retry"),
        pytest.param(425, True, id="425-retry"),
        pytest.param(429, True, id="429-retry"),
        pytest.param(500, True, id="500-retry"),
        pytest.param(502, True, id="502-retry"),
        pytest.param(503, True, id="503-retry"),
        pytest.param(504, True, id="504-retry"),
        pytest.param(520, True, id="520-retry"),
        pytest.param(501, False, id="501-fatal"),
    ],
)
def test_classify_is_the_one_place_statuses_get_a_meaning(status: int, retriable: bool | None) -> None:
    response = httpx.Response(status, text="nope", request=httpx.Request("GET", URL))
    if retriable is None:
        assert classify(response, "GET crm:/customers") is None
        return
    with pytest.raises(SourceError) as caught:
        classify(response, "GET crm:/customers")
    assert isinstance(caught.value, RetriableError) is retriable
    assert caught.value.status == status and "GET crm:/customers" in str(caught.value)


SECRET = "supersecretkey-0123456789"


@pytest.mark.parametrize(
    "status,start",
    [
        pytest.param(404, 290, id="fatal-secret-straddles-the-cut"),
        pytest.param(503, 280, id="retriable-secret-straddles-the-cut"),
        pytest.param(400, 300 - len(SECRET), id="secret-ends-at-the-cut"),
    ],
)
def test_classify_redacts_the_body_before_cutting_it(status: int, start: int) -> None:
    body = "x" * (start - len("api_key=")) + f"api_key={SECRET}" + " trailing" * 50  # the secret at `start`
    response = httpx.Response(status, text=body, request=httpx.Request("GET", URL))
    with pytest.raises(SourceError) as caught:
        classify(response, "GET crm:/customers", [SECRET])
    message = str(caught.value)
    assert SECRET[:6] not in message  # no part of it survives the cut
    assert "api_key=s*" in message  # masked, not merely cut off


RETRIES = [
    pytest.param([ok()], nullcontext(), 1, id="ok-first-time"),
    pytest.param([httpx.Response(429), ok()], nullcontext(), 2, id="429-then-ok"),
    pytest.param([httpx.Response(503), httpx.Response(502), ok()], nullcontext(), 3, id="5xx-twice-then-ok"),
    pytest.param([httpx.Response(500)] * 3, pytest.raises(RetriableError, match="answered 500"), 3, id="5xx-exhausts"),
    pytest.param([httpx.Response(404, text="no such")], pytest.raises(SourceError, match="answered 404"), 1, id="404"),
    pytest.param([httpx.Response(401)], pytest.raises(SourceError, match="answered 401"), 1, id="401"),
    pytest.param([httpx.Response(400)], pytest.raises(SourceError, match="400"), 1, id="400"),
    pytest.param([httpx.ConnectError("refused"), ok()], nullcontext(), 2, id="connect-error"),
    pytest.param([httpx.ConnectTimeout("slow"), httpx.ReadTimeout("slow"), ok()], nullcontext(), 3, id="timeouts"),
    pytest.param([httpx.RemoteProtocolError("dropped"), ok()], nullcontext(), 2, id="dropped-connection"),
    pytest.param(
        [httpx.ReadError("reset")] * 3, pytest.raises(RetriableError, match="ReadError"), 3, id="network-exhausts"
    ),
]


@pytest.mark.parametrize("responses,expectation,attempts", RETRIES)
async def test_retry_table(
    responses: list[Any], expectation: AbstractContextManager[Any], attempts: int, delays: list[float]
) -> None:
    with respx.mock:
        route = respx.get(URL).mock(side_effect=responses)
        async with make_client() as client:
            with expectation:
                await client.request("GET", "/customers")
    assert route.call_count == attempts
    assert len(delays) == attempts - 1


async def test_fatal_error_names_the_endpoint_and_status(delays: list[float]) -> None:
    with respx.mock:
        respx.get(URL).mock(return_value=httpx.Response(404, text="not here"))
        async with make_client() as client:
            with pytest.raises(SourceError) as caught:
                await client.request("GET", "/customers", params={"since": "x"})
    assert caught.value.endpoint == "GET crm:/customers" and caught.value.status == 404
    assert str(caught.value) == "GET crm:/customers answered 404: not here"


@pytest.mark.parametrize(
    "attempts,low,high",
    [
        pytest.param(1, 0.5, 1.0, id="first-retry"),
        pytest.param(2, 1.0, 2.0, id="second-retry"),
        pytest.param(5, 8.0, 16.0, id="fifth-retry"),
        pytest.param(9, 15.0, 30.0, id="capped-by-backoff-max"),
    ],
)
def test_backoff_doubles_with_equal_jitter(attempts: int, low: float, high: float) -> None:
    client = make_client()
    samples = [client._backoff(attempts, None) for _ in range(200)]
    assert all(low <= s <= high for s in samples)
    assert len(set(samples)) > 1  # jittered, so clients do not retry in lockstep


@pytest.mark.parametrize(
    "header,expected",
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param(" 0 ", 0.0, id="zero"),
        pytest.param("Wed, 21 Oct 2026 07:28:30 GMT", 30.0, id="http-date"),
        pytest.param("Wed, 21 Oct 2026 07:27:00 GMT", 0.0, id="http-date-in-the-past"),
        pytest.param("soon", None, id="garbage"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    response = httpx.Response(429, headers={"Retry-After": header} if header is not None else {})
    now = 1792567680.0  # Wed, 21 Oct 2026 07:28:00 GMT
    assert parse_retry_after(response, now=lambda: now) == expected


@pytest.mark.parametrize(
    "retry_after,expected",
    [
        pytest.param("7", 7.0, id="seconds-honoured"),
        pytest.param("100000", 300.0, id="capped-at-ten-backoff-max"),
    ],
)
async def test_retry_after_drives_the_pause(retry_after: str, expected: float, delays: list[float]) -> None:
    with respx.mock:
        respx.get(URL).mock(side_effect=[httpx.Response(429, headers={"Retry-After": retry_after}), ok()])
        async with make_client() as client:
            await client.request("GET", "/customers")
    assert delays == [expected]


@pytest.mark.parametrize(
    "method,idempotent,failure,attempts",
    [
        pytest.param("POST", None, httpx.Response(502), 1, id="post-not-resent-after-502"),
        pytest.param("POST", None, httpx.ReadTimeout("late"), 1, id="post-not-resent-after-read-timeout"),
        # a 429 may come after the API acted on the request (it did in issue #12): only the caller, who can look
        # the key up, knows whether to send it again
        pytest.param("POST", None, httpx.Response(429), 1, id="post-not-resent-after-429"),
        pytest.param("POST", None, httpx.Response(429, headers={"Retry-After": "1"}), 1, id="post-not-resent-429-ra"),
        pytest.param("POST", None, httpx.ConnectError("refused"), 2, id="post-resent-when-never-connected"),
        pytest.param("POST", None, httpx.ConnectTimeout("no"), 2, id="post-resent-when-connect-timed-out"),
        pytest.param("POST", True, httpx.Response(429), 2, id="post-declared-idempotent-429"),
        pytest.param("POST", True, httpx.Response(502), 2, id="post-declared-idempotent"),
        pytest.param("PUT", None, httpx.Response(502), 2, id="put-is-idempotent"),
        pytest.param("GET", False, httpx.Response(503), 1, id="get-declared-unsafe"),
    ],
)
async def test_writes_are_resent_only_when_safe(
    method: str, idempotent: bool | None, failure: Any, attempts: int, delays: list[float]
) -> None:
    with respx.mock:
        route = respx.route(method=method, url=URL).mock(side_effect=[failure, ok()])
        async with make_client() as client:
            with suppress(RetriableError):
                await client.request(method, "/customers", json={"a": 1}, idempotent=idempotent)
    assert route.call_count == attempts


async def test_an_absolute_url_on_another_host_is_refused_before_sending() -> None:
    with respx.mock:
        elsewhere = respx.get("http://127.0.0.2:8999/steal").mock(return_value=ok())
        async with make_client() as client:
            with pytest.raises(SourceError, match="another host"):
                await client.request("GET", "http://127.0.0.2:8999/steal")
            with pytest.raises(SourceError, match="another host"):
                await client.request("GET", "https://127.0.0.1:8999/api/customers")
    assert not elsewhere.called


class FakeClock:
    """Time stands still; every limiter pause is recorded with the moment it would end."""

    def __init__(self) -> None:
        self.now = 100.0
        self.wakes: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.wakes.append(round(self.now + delay, 6))


async def test_rate_limiter_spaces_requests_evenly() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep)
    await asyncio.gather(*(limiter.wait() for _ in range(5)))
    assert clock.wakes == [100.25, 100.5, 100.75, 101.0]  # the first goes at once


async def test_rate_limiter_lets_a_quiet_api_go_at_once() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    await limiter.wait()
    clock.now += 10
    await limiter.wait()
    assert clock.wakes == []


async def test_one_limiter_is_shared_by_clients_for_reads_and_writes() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    api = ApiConfig(name="crm", base_url=BASE, rate_limit=10)
    with respx.mock:
        respx.route(url__startswith=BASE).mock(return_value=ok())
        async with RestClient(api, rate_limiter=limiter) as reader, RestClient(api, rate_limiter=limiter) as writer:
            await asyncio.gather(
                reader.request("GET", "/customers"),
                writer.request("POST", "/customers", json={}),
                reader.request("GET", "/customers"),
                writer.request("PUT", "/customers/1", json={}),
            )
    assert clock.wakes == [100.1, 100.2, 100.3]


async def test_oauth_token_requests_and_the_retry_after_a_401_wait_for_the_limiter() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    oauth = {"type": "oauth2_client_credentials", "token_url": "/oauth/token"}
    api = ApiConfig(name="crm", base_url=BASE, rate_limit=10, auth=oauth)
    credentials = Credentials(client_id="c", client_secret=SecretStr("client-secret-value"))
    tokens = iter(["revoked-token", "fresh-token"])
    with respx.mock:
        token_route = respx.post("http://127.0.0.1:8999/oauth/token").mock(
            side_effect=lambda request: httpx.Response(200, json={"access_token": next(tokens)})
        )
        respx.get(URL).mock(
            side_effect=lambda request: ok() if "fresh" in request.headers["authorization"] else httpx.Response(401)
        )
        async with RestClient(api, credentials, rate_limiter=limiter) as client:
            await client.request("GET", "/customers")
    assert token_route.call_count == 2
    # token, GET (401), token again, GET again: four requests, each after the one before by 1/rate
    assert clock.wakes == [100.1, 100.2, 100.3]


def test_rate_limiter_serves_jobs_in_other_threads_and_event_loops() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)

    def job() -> None:
        asyncio.run(limiter.wait())

    threads = [threading.Thread(target=job) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(clock.wakes) == [100.1, 100.2, 100.3]


@pytest.mark.parametrize(
    "body,records_path,expected",
    [
        pytest.param([{"id": 1}], None, [{"id": 1}], id="top-level-list"),
        pytest.param({"data": {"items": [{"id": 1}]}}, "data.items", [{"id": 1}], id="dotted-path"),
        pytest.param({"id": 7}, None, [{"id": 7}], id="single-object"),
        pytest.param({"data": None}, "data", [], id="null-is-empty"),
        pytest.param({"data": []}, "data", [], id="empty-list-is-empty"),
        pytest.param({"results": {"items": None}}, "results.items", [], id="nested-null-is-empty"),
    ],
)
def test_extract_records(body: Any, records_path: str | None, expected: list[dict[str, Any]]) -> None:
    assert extract_records(httpx.Response(200, json=body), records_path, "GET crm:/x") == expected


@pytest.mark.parametrize(
    "response,records_path,message",
    [
        pytest.param(httpx.Response(200, text="<html>"), "data", "not JSON", id="not-json"),
        pytest.param(httpx.Response(200, json={"data": 5}), "data", "not a list", id="not-a-list"),
        pytest.param(
            httpx.Response(200, json={"dta": [], "total": 0}),
            "data",
            r"GET crm:/x answered 200: records_path 'data' is not in the body \(its keys: dta, total\)",
            id="missing-path",
        ),
        pytest.param(
            httpx.Response(200, json={"results": {}}),
            "results.items",
            "records_path 'results.items' is not in the body",
            id="missing-nested-path",
        ),
        pytest.param(
            httpx.Response(200, json=[{"id": 1}]),
            "data",
            r"is not in the body \(the body is a JSON list\)",
            id="path-into-a-list",
        ),
    ],
)
def test_extract_records_rejects_bad_bodies(response: httpx.Response, records_path: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        extract_records(response, records_path, "GET crm:/x")
