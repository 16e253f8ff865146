"""Auth styles that fetch a token at run time: OAuth2 client credentials, OAuth2 refresh token, and a login.

Each fetches one token per run and shares it with every request (and every client given the same auth
object), fetches a new one when it expires or on a 401, and lets a second 401 through as fatal. A fetched
token is a secret that no configuration holds, so whoever masks secrets (each client using the auth) learns
every token through `add_token_listener`.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import httpx
from pydantic import SecretStr

from prefect_restful_etl.tasks.engine.exceptions import RetriableError, SourceError
from prefect_restful_etl.tasks.engine.http.paths import get_path
from prefect_restful_etl.tasks.engine.redaction import redact_excerpt


class TokenAuth(httpx.Auth):
    """The shared machinery: one token per run, renewed on expiry or a 401; subclasses say how to get one.

    The token request is yielded from the auth flow, so it goes through the same client and transport.
    One `asyncio.Lock` per event loop lets a single request fetch while the others wait; the token itself
    sits behind a `threading.Lock` because Prefect may run a run's jobs in several threads.
    """

    _EARLY = 30.0  # seconds: renew a token this long before it expires rather than risk a 401

    def __init__(self, api: str) -> None:
        self._api = api
        self._token: str | None = None
        self._expires_at = float("inf")
        self._state = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self.fetches = 0  # how many tokens this run fetched: one, unless a token expired or was refused
        self._listeners: list[Callable[[str], None]] = []

    # what a style gives

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        raise NotImplementedError

    def _read_token(self, response: httpx.Response, body: Any) -> tuple[str | None, float | None]:
        """The token in the answer and its lifetime in seconds (None: until refused)."""
        raise NotImplementedError

    def _refusal(self, body: Any) -> str:
        """Why the token endpoint gave no token, never quoting the raw body."""
        return "the token endpoint gave no token"

    def _who(self) -> str:
        """The credential the token stands for, as errors name it (`credentials.crm.client_id`)."""
        return f"credentials.{self._api}"

    def _apply(self, request: httpx.Request, token: str) -> None:
        request.headers["Authorization"] = f"Bearer {token}"

    def _secrets(self) -> list[str]:
        """The configured secrets the token request carries, masked in its errors."""
        return []

    # listeners: the clients that mask secrets

    def add_token_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(token)` with the token held now, if any, and with every token fetched later."""
        with self._state:
            self._listeners.append(listener)
            current = self._token
        if current:
            listener(current)

    def remove_token_listener(self, listener: Callable[[str], None]) -> None:
        with self._state:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _tell(self, secret: str) -> None:
        with self._state:
            listeners = list(self._listeners)
        for listener in listeners:  # before any request carries it, so an echo of it is masked
            listener(secret)

    # the flow

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise NotImplementedError(f"{type(self).__name__} works with httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        lock = self._loop_lock()
        async with lock:
            if self._current(fresh=True) is None:
                await self._store((yield self._token_request(request)))
        used = self._current()
        assert used is not None
        self._apply(request, used)
        response = yield request
        if response.status_code != 401:
            return
        async with lock:
            if self._current() == used:  # no other request renewed it meanwhile
                await self._store((yield self._token_request(request)))
        renewed = self._current()
        assert renewed is not None
        self._apply(request, renewed)
        yield request  # a second 401 goes back to the client, which treats it as fatal

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state:
            return self._loop_locks.setdefault(loop, asyncio.Lock())

    def _current(self, fresh: bool = False) -> str | None:
        with self._state:
            if fresh and time.monotonic() >= self._expires_at - self._EARLY:
                return None
            return self._token

    async def _store(self, response: httpx.Response) -> None:
        await response.aread()
        body = _json_or_none(response)
        token, lifetime = self._read_token(response, body) if response.is_success else (None, None)
        if not token:
            endpoint = f"{response.request.method} {self._api}:{response.request.url.copy_with(query=None)}"
            message = f"no token for {self._who()}: {self._refusal(body)}"
            if response.status_code == 429 or response.status_code >= 500:
                raise RetriableError(endpoint, response.status_code, message)
            raise SourceError(endpoint, response.status_code, message)
        self._tell(token)
        with self._state:
            self._token = token
            self._expires_at = time.monotonic() + lifetime if lifetime else float("inf")
            self.fetches += 1


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _lifetime(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _oauth_error(body: Any, secrets: list[str]) -> str:
    """RFC 6749 section 5.2 (`{"error": "invalid_client", "error_description": ...}`), never the raw body."""
    if isinstance(body, dict) and body.get("error"):
        fields = ("error", "error_description")
        return " - ".join(redact_excerpt(str(body[k]), secrets, 200) for k in fields if body.get(k))
    return "the token endpoint gave no access_token"


class _OAuth2(TokenAuth):
    """What both OAuth2 grants share: the token URL, the client's proof, and the RFC 6749 answer."""

    def __init__(
        self, *, api: str, token_url: str, client_id: str | None, client_secret: SecretStr | None, client_auth: str
    ) -> None:
        super().__init__(api)
        self._token_url, self._client_auth = token_url, client_auth
        self._client_id, self._client_secret = client_id, client_secret

    def _grant(self) -> dict[str, str]:
        raise NotImplementedError

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        data = self._grant()
        headers = {"Accept": "application/json"}
        secret = self._client_secret.get_secret_value() if self._client_secret else None
        if self._client_id and secret and self._client_auth == "basic":
            pair = base64.b64encode(f"{self._client_id}:{secret}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {pair}"
        elif self._client_id:
            data["client_id"] = self._client_id
            if secret:
                data["client_secret"] = secret
        return httpx.Request("POST", request.url.join(self._token_url), data=data, headers=headers)

    def _read_token(self, response: httpx.Response, body: Any) -> tuple[str | None, float | None]:
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return None, None
        return token, _lifetime(body.get("expires_in"))

    def _refusal(self, body: Any) -> str:
        return _oauth_error(body, self._secrets())

    def _secrets(self) -> list[str]:
        return [self._client_secret.get_secret_value()] if self._client_secret else []


class OAuth2ClientCredentials(_OAuth2):
    """`grant_type=client_credentials` with the client's id and secret (and `scope`)."""

    def __init__(
        self, *, api: str, token_url: str, client_id: str, client_secret: SecretStr, scopes: list[str], client_auth: str
    ) -> None:
        super().__init__(
            api=api, token_url=token_url, client_id=client_id, client_secret=client_secret, client_auth=client_auth
        )
        self._scopes = scopes

    def _who(self) -> str:
        return f"credentials.{self._api}.client_id"

    def _grant(self) -> dict[str, str]:
        data = {"grant_type": "client_credentials"}
        if self._scopes:
            data["scope"] = " ".join(self._scopes)
        return data


class OAuth2RefreshToken(_OAuth2):
    """`grant_type=refresh_token`: a refresh token in, an access token out. A server that rotates refresh
    tokens answers with a new one (`refresh_token`), which the next grant sends; it is masked as a secret too."""

    def __init__(
        self,
        *,
        api: str,
        token_url: str,
        refresh_token: SecretStr,
        client_id: str | None,
        client_secret: SecretStr | None,
        client_auth: str,
    ) -> None:
        super().__init__(
            api=api, token_url=token_url, client_id=client_id, client_secret=client_secret, client_auth=client_auth
        )
        self._refresh = refresh_token

    def _who(self) -> str:
        return f"credentials.{self._api}.refresh_token"

    def _grant(self) -> dict[str, str]:
        with self._state:
            refresh = self._refresh.get_secret_value()
        return {"grant_type": "refresh_token", "refresh_token": refresh}

    def _read_token(self, response: httpx.Response, body: Any) -> tuple[str | None, float | None]:
        token, lifetime = super()._read_token(response, body)
        rotated = body.get("refresh_token") if token and isinstance(body, dict) else None
        if isinstance(rotated, str) and rotated:
            self._tell(rotated)
            with self._state:
                self._refresh = SecretStr(rotated)
        return token, lifetime

    def _secrets(self) -> list[str]:
        with self._state:
            return [*super()._secrets(), self._refresh.get_secret_value()]


class LoginAuth(TokenAuth):
    """A session token: the credentials POSTed to a login endpoint, the token read from the answer's body (or
    a cookie it sets), then sent as a header (or that cookie) with every request; a 401 logs in again."""

    def __init__(
        self,
        *,
        api: str,
        login_url: str,
        body: dict[str, Any],
        token_path: str | None,
        token_cookie: str | None,
        expires_in_path: str | None,
        header: str,
        prefix: str,
        secrets: list[str],
    ) -> None:
        super().__init__(api)
        self._login_url, self._body, self._secret_values = login_url, body, secrets
        self._token_path, self._token_cookie, self._expires_in_path = token_path, token_cookie, expires_in_path
        self._header, self._prefix = header, prefix

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        headers = {"Accept": "application/json"}
        return httpx.Request("POST", request.url.join(self._login_url), json=self._body, headers=headers)

    def _read_token(self, response: httpx.Response, body: Any) -> tuple[str | None, float | None]:
        if self._token_cookie is not None:
            token = response.cookies.get(self._token_cookie)
        else:
            token = get_path(body, self._token_path)
        if not isinstance(token, str) or not token:
            return None, None
        lifetime = _lifetime(get_path(body, self._expires_in_path)) if self._expires_in_path else None
        return token, lifetime

    def _who(self) -> str:
        return f"the login of {self._api}"

    def _refusal(self, body: Any) -> str:
        where = f"cookie {self._token_cookie!r}" if self._token_cookie else f"{self._token_path!r} in the answer"
        return f"the login endpoint gave no {where}"

    def _secrets(self) -> list[str]:
        return list(self._secret_values)

    def _apply(self, request: httpx.Request, token: str) -> None:
        if self._token_cookie is not None:
            request.headers["Cookie"] = f"{self._token_cookie}={token}"
        else:
            request.headers[self._header] = f"{self._prefix}{token}"
