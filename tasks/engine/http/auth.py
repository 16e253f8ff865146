"""Auth styles: each an `httpx.Auth` built from a small config and the run's credentials.

Configuration names the style (`{"type": "bearer"}`); the secret comes from the run's `Credentials`.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RetriableError, SourceError
from prefect_restful_etl.tasks.engine.redaction import redact_excerpt


def _require(credentials: Credentials | None, field: str, api: str) -> Any:
    """The credential `field`, or a `ConfigError` naming `credentials.<api>.<field>` before any request."""
    value = getattr(credentials, field, None) if credentials else None
    if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()) or value == "":
        raise ConfigError(f"credentials.{api}.{field}", "is required by this API's auth style")
    return value


class _AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        raise NotImplementedError


class NoAuthConfig(_AuthConfig):
    """A public API."""

    type: Literal["none"] = "none"

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return _NoAuth()


class BearerAuthConfig(_AuthConfig):
    """`Authorization: Bearer <credentials.token>`."""

    type: Literal["bearer"] = "bearer"

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return BearerAuth(_require(credentials, "token", api))


class ApiKeyAuthConfig(_AuthConfig):
    """`credentials.api_key` in a header (`X-API-Key: ...`) or a query parameter (`?api_key=...`)."""

    type: Literal["api_key"] = "api_key"
    name: str = "X-API-Key"
    location: Literal["header", "query"] = "header"

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return ApiKeyAuth(_require(credentials, "api_key", api), self.name, self.location)


class BasicAuthConfig(_AuthConfig):
    """HTTP basic: `Authorization: Basic base64(<credentials.username>:<credentials.password>)`."""

    type: Literal["basic"] = "basic"

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return BasicAuth(_require(credentials, "username", api), _require(credentials, "password", api))


class OAuth2ClientCredentialsConfig(_AuthConfig):
    """OAuth2 client credentials: a token from `token_url` for `credentials.client_id` and `client_secret`.

    ```json
    {"type": "oauth2_client_credentials", "token_url": "https://auth.example.com/oauth/token",
     "scopes": ["customers.read"], "client_auth": "basic"}
    ```
    `token_url` is absolute or a path on the API's host (`/oauth/token`). `client_auth` says how the client
    proves itself: HTTP basic (RFC 6749's default) or `client_id`/`client_secret` in the form body.
    The built auth fetches one token and shares it with every request (and every client given the same
    auth object); it fetches a new one when the token expires or on a 401, and a second 401 is fatal.
    """

    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: str = Field(min_length=1)
    scopes: list[str] = Field(default_factory=list)
    client_auth: Literal["basic", "body"] = "basic"

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return OAuth2ClientCredentials(
            api=api,
            token_url=self.token_url,
            client_id=_require(credentials, "client_id", api),
            client_secret=_require(credentials, "client_secret", api),
            scopes=self.scopes,
            client_auth=self.client_auth,
        )


def _by_name(value: Any) -> Any:
    """`"bearer"` is short for `{"type": "bearer"}`."""
    return {"type": value} if isinstance(value, str) else value


AuthConfig = Annotated[
    NoAuthConfig | BearerAuthConfig | ApiKeyAuthConfig | BasicAuthConfig | OAuth2ClientCredentialsConfig,
    Field(discriminator="type"),
    BeforeValidator(_by_name),
]


class _NoAuth(httpx.Auth):
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield request


class BearerAuth(httpx.Auth):
    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request


class ApiKeyAuth(httpx.Auth):
    def __init__(self, key: SecretStr, name: str, location: str) -> None:
        self._key, self._name, self._location = key, name, location

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._location == "header":
            request.headers[self._name] = self._key.get_secret_value()
        else:
            request.url = request.url.copy_merge_params({self._name: self._key.get_secret_value()})
        yield request


class BasicAuth(httpx.Auth):
    def __init__(self, username: str, password: SecretStr) -> None:
        self._username, self._password = username, password

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        pair = f"{self._username}:{self._password.get_secret_value()}".encode()
        request.headers["Authorization"] = f"Basic {base64.b64encode(pair).decode('ascii')}"
        yield request


class OAuth2ClientCredentials(httpx.Auth):
    """One token per run, shared by every request that uses this object, whichever client or event loop.

    The token request is yielded from the auth flow, so it goes through the same client and transport.
    One `asyncio.Lock` per event loop lets a single request fetch while the others wait; the token itself
    sits behind a `threading.Lock` because Prefect may run a run's jobs in several threads.
    The access token is a secret that no configuration holds, so whoever masks secrets (each client using
    this auth) learns every token through `add_token_listener`.
    """

    _EARLY = 30.0  # seconds: renew a token this long before it expires rather than risk a 401

    def __init__(
        self, *, api: str, token_url: str, client_id: str, client_secret: SecretStr, scopes: list[str], client_auth: str
    ) -> None:
        self._api, self._token_url, self._scopes, self._client_auth = api, token_url, scopes, client_auth
        self._client_id, self._client_secret = client_id, client_secret
        self._token: str | None = None
        self._expires_at = float("inf")
        self._state = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self.fetches = 0  # how many tokens this run fetched: one, unless a token expired or was refused
        self._listeners: list[Callable[[str], None]] = []

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

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise NotImplementedError("OAuth2ClientCredentials works with httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        lock = self._loop_lock()
        async with lock:
            if self._current(fresh=True) is None:
                await self._store((yield self._token_request(request)))
        used = self._current()
        request.headers["Authorization"] = f"Bearer {used}"
        response = yield request
        if response.status_code != 401:
            return
        async with lock:
            if self._current() == used:  # no other request renewed it meanwhile
                await self._store((yield self._token_request(request)))
        request.headers["Authorization"] = f"Bearer {self._current()}"
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

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self._scopes:
            data["scope"] = " ".join(self._scopes)
        headers = {"Accept": "application/json"}
        secret = self._client_secret.get_secret_value()
        if self._client_auth == "basic":
            pair = base64.b64encode(f"{self._client_id}:{secret}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {pair}"
        else:
            data.update(client_id=self._client_id, client_secret=secret)
        return httpx.Request("POST", request.url.join(self._token_url), data=data, headers=headers)

    async def _store(self, response: httpx.Response) -> None:
        await response.aread()
        endpoint = f"POST {self._api}:{response.request.url.copy_with(query=None)}"
        body = _json_or_none(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            detail = _oauth_error(body, [self._client_secret.get_secret_value()])
            message = f"no token for credentials.{self._api}.client_id: {detail}"
            if response.status_code == 429 or response.status_code >= 500:
                raise RetriableError(endpoint, response.status_code, message)
            raise SourceError(endpoint, response.status_code, message)
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else float("inf")
        with self._state:
            listeners = list(self._listeners)
        for listener in listeners:  # before any request carries the token, so an echo of it is masked
            listener(token)
        with self._state:
            self._token, self._expires_at = token, time.monotonic() + lifetime
            self.fetches += 1


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _oauth_error(body: Any, secrets: list[str]) -> str:
    """RFC 6749 section 5.2 (`{"error": "invalid_client", "error_description": ...}`), never the raw body."""
    if isinstance(body, dict) and body.get("error"):
        fields = ("error", "error_description")
        return " - ".join(redact_excerpt(str(body[k]), secrets, 200) for k in fields if body.get(k))
    return "the token endpoint gave no access_token"
