"""Auth styles: each an `httpx.Auth` built from a small config and the run's credentials.

Configuration names the style (`{"type": "bearer"}`); the secret comes from the run's `Credentials`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Annotated, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError


def _require(credentials: Credentials | None, field: str, api: str) -> SecretStr:
    value = getattr(credentials, field, None) if credentials else None
    if value is None:
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


AuthConfig = Annotated[
    NoAuthConfig | BearerAuthConfig | ApiKeyAuthConfig,
    Field(discriminator="type"),
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
