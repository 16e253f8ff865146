"""A batch flow's parameters, validated by the batch itself once the stored ones are masked.

Prefect would validate them before the flow body runs, and on a failure it logs every parameter as sent
(credentials included) and leaves them stored in clear. So batch flows turn Prefect's validation off and
the batch validates here, after redaction: a bad parameter is a `ConfigError` naming the field, never
quoting the value.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError


class BatchParameters(BaseModel):
    """What one run of a batch type is given: the parameters of every batch type's flow.

    A run created through Prefect's REST API (`POST /api/deployments/{id}/create_flow_run`) sends them as
    `{"parameters": {...}}`; `restful-etl run` builds them from its options (`--base-url crm=...`).
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {
                    "tenant_id": "acme",
                    "credentials": {"crm": {"token": "..."}, "accounting": {"api_key": "..."}},
                    "full_refresh": False,
                    "base_urls": {"crm": "https://acme.crm.example.com/api"},
                }
            ]
        },
    )

    tenant_id: str = Field(
        min_length=1, description="Whose records move; every run, stage key, watermark and audit row carries it."
    )
    credentials: dict[str, Credentials] = Field(
        default_factory=dict, description="The secrets per API name; masked as soon as the run starts."
    )
    full_refresh: bool = Field(default=False, description="Ignore the watermarks and read everything, then reset them.")
    base_urls: dict[str, str] | None = Field(
        default=None,
        description="Per API name, a base URL that replaces the configured one for this run (a tenant's own host).",
    )
    dry_run: bool = Field(
        default=False, description="Extract and transform, then compute and report the load's changes without writing."
    )
    resume_batch_id: str | None = Field(
        default=None,
        description="A failed, cancelled or crashed batch of this tenant to continue: the jobs it completed are "
        "reused from its stage, the others run.",
    )
    sealed_credentials: str | None = Field(
        default=None,
        description="Credentials sealed with the workers' key (`restful-etl seal`): Prefect keeps only ciphertext, "
        "so a Retry works. Given with `credentials`, each API is named in one of them.",
    )
    callback_url: str | None = Field(
        default=None,
        description="Where the batch report is POSTed when the batch ends, signed with `credentials.callback.token`.",
    )
    api_blocks: dict[str, str] | None = Field(
        default=None,
        description="Per API name, a `RestApi` block that replaces the batch type's configuration of that API.",
    )


def parse_parameters(raw: dict[str, Any]) -> BatchParameters:
    """The run's parameters as sent (JSON from the REST API, or Python objects from a direct call)."""
    given = {name: value for name, value in raw.items() if value is not None}
    try:
        return BatchParameters.model_validate(given)
    except ValidationError as ex:
        failed = ex
    # Raised outside the handler, so no traceback carries the ValidationError along
    first = failed.errors(include_input=False, include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "parameters"
    more = f" (and {failed.error_count() - 1} more)" if failed.error_count() > 1 else ""
    raise ConfigError(field, f"{first['msg']}{more}")
