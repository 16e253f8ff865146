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
    """What one run of a batch type is given (see `build_flow` for each parameter's meaning)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    tenant_id: str = Field(min_length=1)
    credentials: dict[str, Credentials] = Field(default_factory=dict)
    full_refresh: bool = False
    base_urls: dict[str, str] | None = None
    dry_run: bool = False
    resume_batch_id: str | None = None
    sealed_credentials: str | None = None
    callback_url: str | None = None
    api_blocks: dict[str, str] | None = None


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
