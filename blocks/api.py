"""The API connection Block: how to reach one REST API (base URL, auth style, paging, limits), no secrets."""

from __future__ import annotations

from typing import ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, HttpUrl, field_validator

from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.auth import AuthConfig, NoAuthConfig
from prefect_restful_etl.tasks.engine.http.paginators import Paginator, SinglePagePaginator


class RestApi(Block):
    """An API connection that replaces a batch type's built-in one, per environment or per tenant.

    It holds no secret: credentials still arrive with each run. A batch uses it when the run names it in
    `api_blocks` (`{"crm": "crm-production"}`), a deployment's parameter or one run's.

    Example:
        Save one for the CRM of production:
        ```python
        from prefect_restful_etl.blocks import RestApi

        RestApi(name="crm", base_url="https://crm.example.com/api", auth={"type": "bearer"},
                paginator={"type": "page_number", "page_size": 200, "total_path": "total"}).save("crm-production")
        ```

        Load it and read the engine's configuration:
        ```python
        from prefect_restful_etl.blocks import RestApi

        rest_api = RestApi.load("BLOCK_NAME")
        config = rest_api.to_config()
        ```
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # no error quotes a value given

    _block_type_name: ClassVar[str] = "RESTful ETL API"
    _logo_url = "https://raw.githubusercontent.com/PrefectHQ/prefect/420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/webhook.png"  # type: ignore[assignment]
    _documentation_url = "https://docs.prefect.io/v3/develop/blocks"  # type: ignore[assignment]
    _description: ClassVar[str] = (
        "How restful-etl reaches one REST API: base URL, auth style, pagination, retries and rate limit. "
        "No secrets: credentials come with each run."
    )

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$", description="The API's name in batch types (crm).")
    base_url: HttpUrl = Field(description="Where the API's paths start (https://crm.example.com/api).")
    auth: AuthConfig = Field(
        default_factory=NoAuthConfig,
        description="Auth style (none, bearer, api_key, basic, oauth2_client_credentials, oauth2_refresh_token, "
        "login, cookie).",
    )
    paginator: Paginator = Field(
        default_factory=SinglePagePaginator, description="Paging style of its list endpoints (page_number, cursor ...)."
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
        """Refused before the block is saved: Prefect would store a secret header in clear."""
        return ApiConfig._no_auth_headers(headers)

    def to_config(self) -> ApiConfig:
        """The engine's `ApiConfig`, validated again (so a bad header fails here, naming the field)."""
        fields = self.model_dump(include=set(ApiConfig.model_fields), mode="json")
        return ApiConfig.model_validate(fields)
