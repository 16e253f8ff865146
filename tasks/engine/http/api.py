"""An API: a REST endpoint family (base URL, auth style, pagination, limits), holding no secret."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from prefect_restful_etl.tasks.engine.http.auth import AuthConfig, NoAuthConfig
from prefect_restful_etl.tasks.engine.http.paginators import Paginator, SinglePagePaginator


class ApiConfig(BaseModel):
    """How to talk to one API; the secrets arrive separately, per run, as `Credentials`.

    ```json
    {"name": "crm", "base_url": "https://crm.example.com/api",
     "auth": {"type": "bearer"}, "paginator": {"type": "page_number", "page_size": 100}}
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "crm",
                    "base_url": "https://crm.example.com/api",
                    "auth": "bearer",
                    "paginator": {"type": "page_number", "page_size": 200, "total_path": "total"},
                    "rate_limit": 10,
                }
            ]
        },
    )

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$", description="The API's name: its key in `apis`.")
    base_url: HttpUrl = Field(description="Where the API's paths start; a run's `base_urls` may replace it.")
    auth: AuthConfig = Field(default_factory=NoAuthConfig, description="How requests prove who sends them.")
    paginator: Paginator = Field(
        default_factory=SinglePagePaginator, description="How its list endpoints page; an endpoint may override it."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request; never secrets.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds a request may take.")
    max_attempts: int = Field(default=5, ge=1, description="Attempts per request on 429, 5xx and network errors.")
    backoff_base: float = Field(default=0.5, ge=0, description="Seconds; doubled per attempt, with jitter.")
    backoff_max: float = Field(default=30.0, ge=0, description="The longest wait between two attempts, in seconds.")
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="Requests per second, held across every batch, worker and process (on the stage's Redis).",
    )
    rate_limit_scope: Literal["api", "tenant"] = Field(
        default="api", description="Whose requests share the rate: every tenant's (api), or each tenant's own."
    )
    concurrency: int = Field(default=4, ge=1, description="Requests in flight at once per job.")

    @field_validator("headers")
    @classmethod
    def _no_auth_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if name.lower() in {"authorization", "x-api-key", "cookie"}:
                raise ValueError(f"header {name!r} carries a secret: give it as credentials, not configuration")
        return headers

    @property
    def url(self) -> str:
        return str(self.base_url).rstrip("/")
