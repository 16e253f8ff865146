"""The token-fetching styles beyond client credentials: a login (session token, body or cookie), the OAuth2
refresh-token grant with rotation, and a cookie credential; each token masked as a secret."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import SecretStr

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError, SourceError
from prefect_restful_etl.tasks.engine.http import client as client_module
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient

BASE = "http://127.0.0.1:8997"
LOGIN = {
    "type": "login",
    "login_url": "/api/collections/_superusers/auth-with-password",
    "body": {"identity": "{username}", "password": "{password}"},
    "token_path": "token",
    "prefix": "",
}
PASSWORD = "pa55-w0rd-never-shown"
USER = Credentials(username="admin@example.com", password=SecretStr(PASSWORD))


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    async def skip(delay: float) -> None:
        pass

    monkeypatch.setattr(client_module, "_sleep", skip)


def api(auth: Any) -> ApiConfig:
    return ApiConfig(name="pb", base_url=BASE, auth=auth, max_attempts=2)


class LoginServer:
    """Hands out tokens tok-1, tok-2 ... for the right password; `expire()` makes the current one answer 401."""

    def __init__(self) -> None:
        self.logins: list[dict[str, Any]] = []
        self.valid: str | None = None

    def login(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.logins.append(body)
        if body.get("password") != PASSWORD:
            return httpx.Response(400, json={"message": "Failed to authenticate.", "data": {}})
        self.valid = f"tok-{len(self.logins)}"
        return httpx.Response(200, json={"token": self.valid, "record": {"email": body["identity"]}})

    def records(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != self.valid:
            return httpx.Response(401, json={"message": f"bad token {request.headers.get('Authorization')}"})
        return httpx.Response(200, json={"items": [{"id": 1}]})


async def test_a_login_posts_the_filled_body_once_and_sends_the_token_as_configured() -> None:
    server = LoginServer()
    with respx.mock:
        respx.post(f"{BASE}{LOGIN['login_url']}").mock(side_effect=server.login)
        respx.get(f"{BASE}/api/items").mock(side_effect=server.records)
        async with RestClient(api(LOGIN), USER) as client:
            for _ in range(3):
                assert (await client.request("GET", "/api/items")).json() == {"items": [{"id": 1}]}
    assert server.logins == [{"identity": "admin@example.com", "password": "pa55-w0rd-never-shown"}]


async def test_a_login_logs_in_again_when_its_session_ends() -> None:
    server = LoginServer()
    with respx.mock:
        respx.post(f"{BASE}{LOGIN['login_url']}").mock(side_effect=server.login)
        respx.get(f"{BASE}/api/items").mock(side_effect=server.records)
        async with RestClient(api(LOGIN), USER) as client:
            await client.request("GET", "/api/items")
            server.valid = "revoked"  # the session ended on the server's side: a 401, a new login, the request again
            assert (await client.request("GET", "/api/items")).status_code == 200
    assert len(server.logins) == 2


async def test_a_second_401_after_a_new_login_is_fatal_and_the_echoed_token_masked() -> None:
    server = LoginServer()

    def always_401(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": f"bad token {request.headers.get('Authorization')}"})

    with respx.mock:
        respx.post(f"{BASE}{LOGIN['login_url']}").mock(side_effect=server.login)
        respx.get(f"{BASE}/api/items").mock(side_effect=always_401)
        async with RestClient(api(LOGIN), USER) as client:
            with pytest.raises(SourceError, match="401") as raised:
                await client.request("GET", "/api/items")
    assert len(server.logins) == 2
    assert "bad token" in str(raised.value) and "tok-2" not in str(raised.value)


async def test_a_refused_login_names_the_login_never_the_password_or_the_answer() -> None:
    wrong = Credentials(username="admin@example.com", password=SecretStr("wr0ng-pa55word"))
    with respx.mock:
        respx.post(f"{BASE}{LOGIN['login_url']}").mock(side_effect=LoginServer().login)
        async with RestClient(api(LOGIN), wrong) as client:
            with pytest.raises(SourceError) as raised:
                await client.request("GET", "/api/items")
    message = str(raised.value)
    assert "the login of pb" in message and "400" in message and "'token' in the answer" in message
    assert "wr0ng" not in message and "Failed to authenticate" not in message


async def test_a_login_may_set_a_session_cookie_that_goes_back_on_every_request() -> None:
    auth = {"type": "login", "login_url": "/login", "token_cookie": "sessionid"}
    seen: list[str | None] = []

    def items(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Cookie"))
        return httpx.Response(200, json=[])

    with respx.mock:
        login = respx.post(f"{BASE}/login").mock(
            return_value=httpx.Response(204, headers={"Set-Cookie": "sessionid=s3ss-10n; Path=/; HttpOnly"})
        )
        respx.get(f"{BASE}/items").mock(side_effect=items)
        async with RestClient(api(auth), USER) as client:
            await client.request("GET", "/items")
            await client.request("GET", "/items")
    assert json.loads(login.calls[0].request.content) == {
        "username": "admin@example.com",
        "password": PASSWORD,
    }
    assert seen == ["sessionid=s3ss-10n", "sessionid=s3ss-10n"]


@pytest.mark.parametrize(
    "auth,credentials,field",
    [
        pytest.param(LOGIN, Credentials(username="u"), "credentials.pb.password", id="login-password"),
        pytest.param(
            {**LOGIN, "body": {"key": "{secret_sauce}"}}, USER, "auth.body: {secret_sauce}", id="login-unknown-field"
        ),
        pytest.param(
            {"type": "oauth2_refresh_token", "token_url": "/t"},
            None,
            "credentials.pb.refresh_token",
            id="refresh-token",
        ),
        pytest.param({"type": "cookie", "name": "session"}, Credentials(), "credentials.pb.cookie", id="cookie"),
    ],
)
def test_a_missing_credential_fails_before_any_request(auth: Any, credentials: Credentials | None, field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RestClient(api(auth), credentials)
    assert raised.value.field == field


async def test_the_refresh_token_grant_uses_a_rotated_refresh_token_next_time() -> None:
    auth = {"type": "oauth2_refresh_token", "token_url": "/oauth/token", "client_auth": "body"}
    credentials = Credentials(refresh_token=SecretStr("refresh-0-abcdef"), client_id="etl")
    grants: list[dict[str, list[str]]] = []
    valid: list[str] = []

    def token(request: httpx.Request) -> httpx.Response:
        grants.append(parse_qs(request.content.decode()))
        n = len(grants)
        valid[:] = [f"Bearer access-{n}-xyz"]
        return httpx.Response(200, json={"access_token": f"access-{n}-xyz", "refresh_token": f"refresh-{n}-abcdef"})

    def items(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] not in valid:
            return httpx.Response(401, json={"detail": "expired"})
        return httpx.Response(200, json=[])

    with respx.mock:
        respx.post(f"{BASE}/oauth/token").mock(side_effect=token)
        respx.get(f"{BASE}/items").mock(side_effect=items)
        async with RestClient(api(auth), credentials) as client:
            await client.request("GET", "/items")
            valid.clear()  # access-1 expired on the server: a 401, then a grant with the rotated refresh token
            await client.request("GET", "/items")
            assert {"access-2-xyz", "refresh-1-abcdef", "refresh-2-abcdef"} <= set(client._secrets)
    assert [g["refresh_token"] for g in grants] == [["refresh-0-abcdef"], ["refresh-1-abcdef"]]
    assert grants[0]["grant_type"] == ["refresh_token"] and grants[0]["client_id"] == ["etl"]


async def test_a_cookie_credential_is_sent_as_a_cookie_and_masked() -> None:
    credentials = Credentials(cookie=SecretStr("c00kie-value-123"))
    with respx.mock:
        route = respx.get(f"{BASE}/items").mock(
            return_value=httpx.Response(403, json={"detail": "cookie c00kie-value-123 is not allowed"})
        )
        async with RestClient(api({"type": "cookie", "name": "session"}), credentials) as client:
            with pytest.raises(SourceError) as raised:
                await client.request("GET", "/items")
    assert route.calls[0].request.headers["Cookie"] == "session=c00kie-value-123"
    assert "c00kie-value-123" not in str(raised.value)
