"""Auth styles: each an `httpx.Auth` built from a small config and the run's credentials.

Configuration names the style (`{"type": "bearer"}`); the secret comes from the run's `Credentials`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Generator
from typing import TYPE_CHECKING, Annotated, Any, Literal

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.shorthand import with_names
from prefect_restful_etl.tasks.engine.http.tokens import (
    LoginAuth,
    OAuth2ClientCredentials,
    OAuth2RefreshToken,
    TokenAuth,
)

__all__ = ["AuthConfig", "LoginAuth", "OAuth2ClientCredentials", "OAuth2RefreshToken", "TokenAuth"]


def _require(credentials: Credentials | None, field: str, api: str) -> Any:
    """The credential `field`, or a `ConfigError` naming `credentials.<api>.<field>` before any request."""
    value = getattr(credentials, field, None) if credentials else None
    if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()) or value == "":
        raise ConfigError(f"credentials.{api}.{field}", "is required by this API's auth style")
    return value


class _AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        raise NotImplementedError


class NoAuthConfig(_AuthConfig):
    """A public API: no credentials. `"none"` (the default).

    ```
    GET /v1/countries  (no Authorization header)
    200 [{"code": "DE", "name": "Germany"}, ...]
    ```
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "none"}]})

    type: Literal["none"] = "none"

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return _NoAuth()


class BearerAuthConfig(_AuthConfig):
    """`Authorization: Bearer <credentials.token>`: `"bearer"`, with credentials `{"token": "..."}`.

    ```
    GET /customers?page=1
    Authorization: Bearer <credentials.token>
    ```
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "bearer"}]})

    type: Literal["bearer"] = "bearer"

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return BearerAuth(_require(credentials, "token", api))


class ApiKeyAuthConfig(_AuthConfig):
    """`credentials.api_key` in a header (`X-API-Key: ...`) or a query parameter (`?api_key=...`).

    `{"type": "api_key", "name": "X-API-Key", "location": "header"}`, with credentials `{"api_key": "..."}`.
    ```
    GET /invoices                  X-API-Key: <credentials.api_key>     (location: header)
    GET /invoices?api_key=<key>                                         (location: query, name: api_key)
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "api_key", "name": "X-API-Key", "location": "header"},
                {"type": "api_key", "name": "api_key", "location": "query"},
            ]
        }
    )

    type: Literal["api_key"] = "api_key"
    name: str = Field(default="X-API-Key", description="The header or query parameter that carries the key.")
    location: Literal["header", "query"] = Field(default="header", description="Where the key goes.")

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return ApiKeyAuth(_require(credentials, "api_key", api), self.name, self.location)


class BasicAuthConfig(_AuthConfig):
    """HTTP basic: `Authorization: Basic base64(<credentials.username>:<credentials.password>)`.

    `"basic"`, with credentials `{"username": "etl", "password": "..."}`.
    ```
    GET /orders
    Authorization: Basic ZXRsOnMzY3IzdA==      (base64 of "etl:s3cr3t")
    ```
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "basic"}]})

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
    ```
    POST https://auth.example.com/oauth/token  grant_type=client_credentials&scope=customers.read
    Authorization: Basic base64(<client_id>:<client_secret>)
    200 {"access_token": "eyJ...", "token_type": "Bearer", "expires_in": 3600}
    then every request:  Authorization: Bearer eyJ...
    ```
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "oauth2_client_credentials",
                    "token_url": "https://auth.example.com/oauth/token",
                    "scopes": ["customers.read"],
                    "client_auth": "basic",
                }
            ]
        }
    )

    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: str = Field(min_length=1, description="The token endpoint: absolute, or a path on the API's host.")
    scopes: list[str] = Field(default_factory=list, description="Sent as `scope`, space-separated; none by default.")
    client_auth: Literal["basic", "body"] = Field(
        default="basic", description="How the client proves itself: HTTP basic, or client_id/client_secret in the body."
    )

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


class OAuth2RefreshTokenConfig(_AuthConfig):
    """OAuth2 refresh-token grant: an access token from `token_url` for `credentials.refresh_token`.

    ```
    POST https://auth.example.com/oauth/token  grant_type=refresh_token&refresh_token=<credentials.refresh_token>
    200 {"access_token": "eyJ...", "expires_in": 3600, "refresh_token": "<a new one, if the server rotates>"}
    ```
    `{"type": "oauth2_refresh_token", "token_url": "/oauth/token", "client_auth": "body"}`, with credentials
    `{"refresh_token": "...", "client_id": "...", "client_secret": "..."}` (the client's are optional: a public
    client has none). The access token goes out as `Authorization: Bearer ...`, renewed on expiry or a 401; a
    rotated refresh token is used for the next grant (held in memory for the run, never stored).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"type": "oauth2_refresh_token", "token_url": "/oauth/token", "client_auth": "body"}]
        }
    )

    type: Literal["oauth2_refresh_token"] = "oauth2_refresh_token"
    token_url: str = Field(min_length=1, description="The token endpoint: absolute, or a path on the API's host.")
    client_auth: Literal["basic", "body"] = Field(
        default="basic", description="How a confidential client proves itself: HTTP basic, or in the body."
    )

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return OAuth2RefreshToken(
            api=api,
            token_url=self.token_url,
            refresh_token=_require(credentials, "refresh_token", api),
            client_id=credentials.client_id if credentials else None,
            client_secret=credentials.client_secret if credentials else None,
            client_auth=self.client_auth,
        )


_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_FILLABLE = ("username", "password", "token", "api_key", "client_id", "client_secret")


class LoginAuthConfig(_AuthConfig):
    """A login (session token): POST the credentials to `login_url`, read the token from the answer, send it.

    PocketBase's superuser login, for one:
    ```
    POST /api/collections/_superusers/auth-with-password  {"identity": "<username>", "password": "<password>"}
    200 {"token": "eyJhbGciOi...", "record": {"id": "...", "email": "..."}}
    then every request:  Authorization: eyJhbGciOi...
    ```
    `{"type": "login", "login_url": "/api/collections/_superusers/auth-with-password",
      "body": {"identity": "{username}", "password": "{password}"}, "token_path": "token", "prefix": ""}`,
    with credentials `{"username": "...", "password": "..."}`. `body` is a JSON template: `{username}`,
    `{password}`, `{token}`, `{api_key}`, `{client_id}` and `{client_secret}` in its text are the credentials.
    A login that sets a session cookie instead: `"token_cookie": "sessionid"` (the cookie goes back on every
    request). A 401 logs in again once; the token lives for the run (or `expires_in_path` seconds).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "login",
                    "login_url": "/api/collections/_superusers/auth-with-password",
                    "body": {"identity": "{username}", "password": "{password}"},
                    "token_path": "token",
                    "prefix": "",
                },
                {"type": "login", "login_url": "/auth/login", "token_cookie": "sessionid"},
            ]
        }
    )

    type: Literal["login"] = "login"
    login_url: str = Field(min_length=1, description="The login endpoint: absolute, or a path on the API's host.")
    body: dict[str, Any] = Field(
        default_factory=lambda: {"username": "{username}", "password": "{password}"},
        description="The JSON body POSTed, with `{username}`, `{password}` ... standing for the credentials.",
    )
    token_path: str = Field(default="token", description="Dotted path of the token in the answer's body.")
    token_cookie: str | None = Field(
        default=None, description="Read the token from this cookie of the answer instead, and send it back so."
    )
    expires_in_path: str | None = Field(default=None, description="Where the answer gives the token's lifetime (s).")
    header: str = Field(default="Authorization", description="The header that carries the token.")
    prefix: str = Field(default="Bearer ", description='Written before the token in that header ("" for none).')

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        used: list[str] = []
        body = _fill(self.body, credentials, api, used)
        return LoginAuth(
            api=api,
            login_url=self.login_url,
            body=body,
            token_path=self.token_path,
            token_cookie=self.token_cookie,
            expires_in_path=self.expires_in_path,
            header=self.header,
            prefix=self.prefix,
            secrets=used,
        )


def _fill(template: Any, credentials: Credentials | None, api: str, used: list[str]) -> Any:
    """The login body with each `{field}` replaced by that credential (every one named is required)."""
    if isinstance(template, dict):
        return {key: _fill(value, credentials, api, used) for key, value in template.items()}
    if isinstance(template, list):
        return [_fill(value, credentials, api, used) for value in template]
    if not isinstance(template, str):
        return template

    def value(match: re.Match[str]) -> str:
        field = match.group(1)
        if field not in _FILLABLE:
            raise ConfigError(f"auth.body: {{{field}}}", f"names no credential field (one of {', '.join(_FILLABLE)})")
        found = _require(credentials, field, api)
        text = found.get_secret_value() if isinstance(found, SecretStr) else str(found)
        if isinstance(found, SecretStr):
            used.append(text)
        return text

    return _PLACEHOLDER.sub(value, template)


class CookieAuthConfig(_AuthConfig):
    """A session cookie given as a credential: `Cookie: <name>=<credentials.cookie>`.

    `{"type": "cookie", "name": "session"}`, with credentials `{"cookie": "..."}`.
    ```
    GET /reports
    Cookie: session=<credentials.cookie>
    ```
    """

    model_config = ConfigDict(json_schema_extra={"examples": [{"type": "cookie", "name": "session"}]})

    type: Literal["cookie"] = "cookie"
    name: str = Field(min_length=1, pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$", description="The cookie's name.")

    def build(self, credentials: Credentials | None, api: str) -> httpx.Auth:
        return CookieAuth(self.name, _require(credentials, "cookie", api))


_AuthStyles = Annotated[
    NoAuthConfig
    | BearerAuthConfig
    | ApiKeyAuthConfig
    | BasicAuthConfig
    | OAuth2ClientCredentialsConfig
    | OAuth2RefreshTokenConfig
    | LoginAuthConfig
    | CookieAuthConfig,
    Field(discriminator="type"),
    BeforeValidator(_by_name),
]
if TYPE_CHECKING:
    AuthConfig = _AuthStyles
else:  # the JSON Schema says a name alone is accepted too
    AuthConfig = with_names(_AuthStyles)


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


class CookieAuth(httpx.Auth):
    def __init__(self, name: str, value: SecretStr) -> None:
        self._name, self._value = name, value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Cookie"] = f"{self._name}={self._value.get_secret_value()}"
        yield request
