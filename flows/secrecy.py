"""Secrets on receipt: the batch flow's first act overwrites the run's stored parameters with masks, then
opens sealed credentials in memory and sets the callback's signing secret apart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from pydantic import SecretStr

from prefect_restful_etl.flows.sealing import seal_key_from_env, unseal
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.redaction import MASK

CALLBACK = "callback"  # the credentials entry whose token signs the batch report posted to `callback_url`


def masked_credentials(credentials: Mapping[str, Any]) -> dict[str, Any]:
    """The same shape with every secret replaced by a mask; usernames and client ids stay readable.

    Takes the credentials as sent, valid or not: a misspelt field or a value of the wrong type is masked
    too, since it is still somebody's secret.
    """
    masked: dict[str, Any] = {}
    for api, creds in credentials.items():
        values = creds.model_dump(exclude_none=True) if isinstance(creds, Credentials) else creds
        if not isinstance(values, Mapping):
            masked[api] = MASK
            continue
        masked[api] = {
            name: value if name in _READABLE_FIELDS and isinstance(value, str) else MASK
            for name, value in values.items()
            if value is not None
        }
    return masked


_READABLE_FIELDS = {name for name, f in Credentials.model_fields.items() if "SecretStr" not in str(f.annotation)}


async def redact_stored_parameters(flow_run_id: UUID, parameters: dict[str, Any], tags: list[str]) -> None:
    """A run created through the REST API or the UI holds its parameters in clear until this runs."""
    stored = {name: value for name, value in parameters.items() if name != "credentials"}
    stored = _jsonable(stored)
    credentials = parameters.get("credentials") or {}
    stored["credentials"] = masked_credentials(credentials) if isinstance(credentials, Mapping) else MASK
    async with get_client() as client:
        current = await client.read_flow_run(flow_run_id)
        await client.update_flow_run(flow_run_id, parameters=stored, tags=sorted({*current.tags, *tags}))


def _jsonable(value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_python(value, mode="json")


def open_credentials(
    credentials: dict[str, Credentials], sealed_credentials: str | None
) -> tuple[dict[str, Credentials], SecretStr | None]:
    """Plain and sealed credentials as one map by API name, and the callback's secret taken out of it.

    Sealed ones stay sealed in Prefect, so a Prefect Retry opens them again; plain ones were masked on
    receipt, so a retry finds masks: say so instead of sending them to the API as a password.
    """
    if any(secret == MASK for creds in credentials.values() for secret in creds.secret_values()):
        raise ConfigError("credentials", "were masked when the run first started: a retry needs sealed "
                          "credentials (`restful-etl seal`), or start a new run with the credentials")
    merged = dict(credentials)
    if sealed_credentials:
        opened = unseal(sealed_credentials, seal_key_from_env())
        both = sorted(set(opened) & set(merged))
        if both:
            raise ConfigError("sealed_credentials", f"and credentials both name {both}: give each API once")
        merged |= opened
    callback = merged.pop(CALLBACK, None)
    return merged, callback.token if callback is not None else None
