"""Auth styles: what each sends, OAuth2's shared token and its one refresh, and secrets kept out of errors."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError, EtlError, RetriableError, SourceError
from prefect_restful_etl.tasks.engine.http import client as client_module
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.auth import BearerAuthConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient

BASE = "http://127.0.0.1:8999/api"
TOKEN_URL = "http://127.0.0.1:8999/oauth/token"
KEY = "k3y/with+odd=chars-0123456789"  # URL-encoded differently from how it is written
OAUTH = {"type": "oauth2_client_credentials", "token_url": TOKEN_URL, "scopes": ["customers.read", "bills.read"]}
OAUTH_CREDENTIALS = Credentials(client_id="etl-client", client_secret=SecretStr("client-s3cret-value"))


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    async def skip(delay: float) -> None:
        pass

    monkeypatch.setattr(client_module, "_sleep", skip)


def api(auth: Any, **extra: Any) -> ApiConfig:
    return ApiConfig(name="crm", base_url=BASE, auth=auth, max_attempts=2, **extra)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


STYLES = [
    pytest.param("none", None, {}, {}, id="none"),
    pytest.param("bearer", Credentials(token=SecretStr("t0ken")), {"authorization": "Bearer t0ken"}, {}, id="bearer"),
    pytest.param(
        {"type": "api_key"}, Credentials(api_key=SecretStr("abc")), {"x-api-key": "abc"}, {}, id="api-key-header"
    ),
    pytest.param(
        {"type": "api_key", "name": "Api-Token", "location": "header"},
        Credentials(api_key=SecretStr("abc")),
        {"api-token": "abc"},
        {},
        id="api-key-named-header",
    ),
    pytest.param(
        {"type": "api_key", "name": "key", "location": "query"},
        Credentials(api_key=SecretStr("abc")),
        {},
        {"key": "abc"},
        id="api-key-query",
    ),
    pytest.param(
        "basic",
        Credentials(username="ann", password=SecretStr("pw:ü")),
        {"authorization": basic("ann", "pw:ü")},
        {},
        id="basic",
    ),
]


@pytest.mark.parametrize("auth,credentials,headers,params", STYLES)
async def test_each_style_sends_its_secret(
    auth: Any, credentials: Credentials | None, headers: dict[str, str], params: dict[str, str]
) -> None:
    with respx.mock:
        route = respx.get(f"{BASE}/customers").mock(return_value=httpx.Response(200, json=[]))
        async with RestClient(api(auth), credentials) as client:
            await client.request("GET", "/customers", params={"page": 1})
    sent = route.calls.last.request
    assert {k: sent.headers[k] for k in headers} == headers
    assert dict(sent.url.params) == {"page": "1", **params}
    if not headers:
        assert "authorization" not in sent.headers


def test_auth_is_chosen_by_name_dict_or_instance() -> None:
    for given in ("bearer", {"type": "bearer"}, BearerAuthConfig()):
        assert isinstance(api(given).auth, BearerAuthConfig)


MISSING = [
    pytest.param("bearer", None, "credentials.crm.token", id="bearer-no-credentials"),
    pytest.param("bearer", Credentials(api_key=SecretStr("x")), "credentials.crm.token", id="bearer-other-field"),
    pytest.param("bearer", Credentials(token=SecretStr("")), "credentials.crm.token", id="bearer-empty"),
    pytest.param({"type": "api_key"}, Credentials(), "credentials.crm.api_key", id="api-key"),
    pytest.param("basic", Credentials(password=SecretStr("p")), "credentials.crm.username", id="basic-username"),
    pytest.param("basic", Credentials(username="ann"), "credentials.crm.password", id="basic-password"),
    pytest.param(OAUTH, Credentials(client_secret=SecretStr("s")), "credentials.crm.client_id", id="oauth-client-id"),
    pytest.param(OAUTH, Credentials(client_id="c"), "credentials.crm.client_secret", id="oauth-client-secret"),
]


@pytest.mark.parametrize("auth,credentials,field", MISSING)
def test_a_missing_credential_fails_before_any_request(auth: Any, credentials: Credentials | None, field: str) -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.route(url__startswith="http://127.0.0.1:8999")
        with pytest.raises(ConfigError) as caught:
            RestClient(api(auth), credentials)
    assert caught.value.field == field and str(caught.value).startswith(field)
    assert not route.called


class TokenServer:
    """An OAuth2 token endpoint handing out tok-1, tok-2, ... and an API accepting only `valid` tokens."""

    def __init__(self, valid: set[str] | None = None) -> None:
        self.issued: list[httpx.Request] = []
        self.valid = valid  # None: every issued token is accepted

    async def token(self, request: httpx.Request) -> httpx.Response:
        self.issued.append(request)
        await asyncio.sleep(0)  # let other requests pile up behind the one fetching
        return httpx.Response(200, json={"access_token": f"tok-{len(self.issued)}", "expires_in": 3600})

    def api(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        accepted = token.startswith("tok-") if self.valid is None else token in self.valid
        return httpx.Response(200, json={"token": token}) if accepted else httpx.Response(401)


def mock_oauth(mock: respx.MockRouter, server: TokenServer) -> respx.Route:
    mock.post(TOKEN_URL).mock(side_effect=server.token)
    return mock.get(url__startswith=BASE).mock(side_effect=server.api)


@pytest.mark.parametrize(
    "client_auth,expect_header",
    [pytest.param("basic", True, id="client-secret-basic"), pytest.param("body", False, id="client-secret-post")],
)
async def test_oauth_fetches_one_token_for_every_client_and_request(client_auth: str, expect_header: bool) -> None:
    server = TokenServer()
    config = api({**OAUTH, "client_auth": client_auth})
    shared = config.auth.build(OAUTH_CREDENTIALS, "crm")
    with respx.mock as mock:
        route = mock_oauth(mock, server)
        async with (
            RestClient(config, OAUTH_CREDENTIALS, auth=shared) as one,
            RestClient(config, OAUTH_CREDENTIALS, auth=shared) as two,
        ):
            await asyncio.gather(*(c.request("GET", "/customers") for c in (one, two) for _ in range(5)))
    assert len(server.issued) == 1 and route.call_count == 10
    assert {call.request.headers["authorization"] for call in route.calls} == {"Bearer tok-1"}
    form = parse_qs(server.issued[0].content.decode())
    assert form["grant_type"] == ["client_credentials"] and form["scope"] == ["customers.read bills.read"]
    if expect_header:
        assert server.issued[0].headers["authorization"] == basic("etl-client", "client-s3cret-value")
        assert "client_secret" not in form
    else:
        assert form["client_id"] == ["etl-client"] and form["client_secret"] == ["client-s3cret-value"]


async def test_oauth_token_url_may_be_a_path_on_the_api_host() -> None:
    server = TokenServer()
    with respx.mock as mock:
        mock_oauth(mock, server)
        async with RestClient(api({**OAUTH, "token_url": "/oauth/token"}), OAUTH_CREDENTIALS) as client:
            await client.request("GET", "/customers")
    assert str(server.issued[0].url) == TOKEN_URL


async def test_oauth_refreshes_once_on_401() -> None:
    server = TokenServer(valid={"tok-2"})  # the first token has been revoked
    with respx.mock as mock:
        route = mock_oauth(mock, server)
        async with RestClient(api(OAUTH), OAUTH_CREDENTIALS) as client:
            response = await client.request("GET", "/customers")
    assert response.json() == {"token": "tok-2"}
    assert len(server.issued) == 2 and route.call_count == 2


async def test_oauth_a_second_401_is_fatal() -> None:
    server = TokenServer(valid=set())
    with respx.mock as mock:
        route = mock_oauth(mock, server)
        async with RestClient(api(OAUTH), OAUTH_CREDENTIALS) as client:
            with pytest.raises(SourceError, match="answered 401") as caught:
                await client.request("GET", "/customers")
    assert not isinstance(caught.value, RetriableError)
    assert len(server.issued) == 2 and route.call_count == 2


async def test_oauth_concurrent_401s_refresh_the_token_once() -> None:
    server = TokenServer(valid={"tok-2"})
    with respx.mock as mock:
        mock_oauth(mock, server)
        async with RestClient(api(OAUTH), OAUTH_CREDENTIALS) as client:
            await asyncio.gather(*(client.request("GET", "/customers") for _ in range(6)))
    assert len(server.issued) == 2


ACCESS_TOKEN = "ACCESS-TOKEN-0f1e2d3c4b5a69788796"


@pytest.mark.parametrize(
    "echo,error",
    [
        pytest.param(httpx.Response(403, text=f"forbidden for Bearer {ACCESS_TOKEN}"), SourceError, id="4xx-echo"),
        pytest.param(httpx.Response(503, text=f"overloaded; token {ACCESS_TOKEN}"), RetriableError, id="5xx-echo"),
    ],
)
async def test_an_oauth_access_token_is_masked_in_errors_and_log_lines(
    echo: httpx.Response, error: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with respx.mock as mock:
        mock.post(TOKEN_URL).mock(return_value=httpx.Response(200, json={"access_token": ACCESS_TOKEN}))
        mock.get(url__startswith=BASE).mock(return_value=echo)
        async with RestClient(api(OAUTH), OAUTH_CREDENTIALS) as client:
            with pytest.raises(error) as caught:
                await client.request("GET", "/customers")
            logging.getLogger("httpx").warning("a proxy said: %s", f"Bearer {ACCESS_TOKEN}")
        logging.getLogger("httpx").warning("later: %s", ACCESS_TOKEN)
    assert ACCESS_TOKEN not in str(caught.value) and "A**********6" in str(caught.value)
    assert [r.getMessage() for r in caplog.records if r.name == "httpx"][-2:] == [
        "a proxy said: Bearer A**********6",
        f"later: {ACCESS_TOKEN}",  # masked while the client was open
    ]


async def test_a_shared_oauth_token_is_masked_by_a_client_that_did_not_fetch_it() -> None:
    config = api(OAUTH)
    shared = config.auth.build(OAUTH_CREDENTIALS, "crm")
    with respx.mock as mock:
        mock.post(TOKEN_URL).mock(return_value=httpx.Response(200, json={"access_token": ACCESS_TOKEN}))
        mock.get(url__startswith=BASE).mock(
            side_effect=[httpx.Response(200, json=[]), httpx.Response(404, text=f"no {ACCESS_TOKEN}")]
        )
        async with RestClient(config, OAUTH_CREDENTIALS, auth=shared) as first:
            await first.request("GET", "/customers")
        async with RestClient(config, OAUTH_CREDENTIALS, auth=shared) as second:
            with pytest.raises(SourceError) as caught:
                await second.request("GET", "/customers")
    assert ACCESS_TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "status,body,error",
    [
        pytest.param(401, {"error": "invalid_client"}, SourceError, id="refused"),
        pytest.param(200, {"token_type": "bearer"}, SourceError, id="no-access-token"),
        pytest.param(503, "down", RetriableError, id="token-endpoint-down"),
    ],
)
async def test_oauth_token_failures_name_the_credential_never_the_secret(
    status: int, body: Any, error: type[Exception]
) -> None:
    echo = {**body, "error_description": "bad secret client-s3cret-value"} if isinstance(body, dict) else body
    with respx.mock as mock:
        mock.post(TOKEN_URL).mock(return_value=httpx.Response(status, json=echo))
        async with RestClient(api(OAUTH), OAUTH_CREDENTIALS) as client:
            with pytest.raises(error) as caught:
                await client.request("GET", "/customers")
    assert "credentials.crm.client_id" in str(caught.value)
    assert "client-s3cret-value" not in str(caught.value)


async def test_an_oauth_error_description_is_redacted_before_it_is_cut() -> None:
    secret = OAUTH_CREDENTIALS.client_secret.get_secret_value()  # type: ignore[union-attr]
    description = "x" * (190 - len("bad secret ")) + f"bad secret {secret} in the request"  # straddles char 200
    with respx.mock as mock:
        mock.post(TOKEN_URL).mock(
            return_value=httpx.Response(401, json={"error": "invalid_client", "error_description": description})
        )
        async with RestClient(api(OAUTH), OAUTH_CREDENTIALS) as client:
            with pytest.raises(SourceError) as caught:
                await client.request("GET", "/customers")
    assert "client-s3" not in str(caught.value)
    assert "bad secret c****" in str(caught.value)  # masked, not merely cut off


QUERY_KEY_API = {"type": "api_key", "name": "api_key", "location": "query"}
ENCODED_KEY = "k3y%2Fwith%2Bodd%3Dchars-0123456789"

LEAKS = [
    pytest.param(httpx.Response(404, text=f"no route for /customers?api_key={KEY}"), SourceError, id="4xx-body-echo"),
    pytest.param(httpx.Response(500, text=f"boom at ?api_key={ENCODED_KEY}"), RetriableError, id="5xx-encoded-echo"),
    pytest.param(httpx.ConnectError(f"cannot reach {BASE}?api_key={KEY}"), RetriableError, id="connect-error"),
    pytest.param(httpx.ReadTimeout(f"timed out on ?api_key={ENCODED_KEY}"), RetriableError, id="timeout"),
    pytest.param(httpx.UnsupportedProtocol(f"bad url {BASE}?api_key={KEY}"), SourceError, id="other-httpx-error"),
]


@pytest.mark.parametrize("failure,error", LEAKS)
async def test_a_query_secret_never_appears_in_an_error(
    failure: Any, error: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with respx.mock:
        respx.get(url__startswith=BASE).mock(side_effect=[failure, failure])
        async with RestClient(api(QUERY_KEY_API), Credentials(api_key=SecretStr(KEY))) as client:
            with pytest.raises(error) as caught:
                await client.request("GET", "/customers")
    assert_no_secret(caught.value, caplog)
    assert caught.value.__context__ is None and caught.value.__cause__ is None  # no chained httpx error


async def test_a_next_url_echoing_the_key_is_redacted_in_pagination_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = f"{BASE}/customers?api_key={ENCODED_KEY}&page=2"
    body = {"data": [{"id": 1}], "next": echo}
    with respx.mock:
        respx.get(url__startswith=BASE).mock(
            side_effect=[httpx.Response(200, json=body), httpx.Response(200, json={**body, "data": [{"id": 2}]})]
        )
        config = api(QUERY_KEY_API, paginator={"type": "next_url"})
        async with RestClient(config, Credentials(api_key=SecretStr(KEY))) as client:
            with pytest.raises(EtlError, match="loop detected") as caught:
                [p async for p in client.paginate("/customers", records_path="data")]
    assert_no_secret(caught.value, caplog)


async def test_httpx_request_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=[]))
    client = RestClient(api(QUERY_KEY_API), Credentials(api_key=SecretStr(KEY)), transport=transport)
    async with client:
        await client.request("GET", "/customers")
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines and all("api_key=k**********9" in line for line in lines)
    assert_no_secret(None, caplog)


def assert_no_secret(error: BaseException | None, caplog: pytest.LogCaptureFixture) -> None:
    texts = [str(error) if error else "", caplog.text, *(r.getMessage() for r in caplog.records)]
    for text in texts:
        assert KEY not in text and ENCODED_KEY not in text


async def test_oauth_renews_a_token_about_to_expire() -> None:
    issued: list[int] = []

    def short_lived(request: httpx.Request) -> httpx.Response:
        issued.append(1)
        return httpx.Response(200, json={"access_token": f"tok-{len(issued)}", "expires_in": 10})

    with respx.mock as mock:
        mock.post(TOKEN_URL).mock(side_effect=short_lived)
        mock.get(url__startswith=BASE).mock(return_value=httpx.Response(200, json=[]))
        async with RestClient(api(OAUTH), OAUTH_CREDENTIALS) as client:
            await client.request("GET", "/customers")
            await client.request("GET", "/customers")
    assert len(issued) == 2  # ten seconds is inside the early-renewal margin
