"""Secrets on receipt: the batch flow's first act overwrites the run's stored parameters with masks, then
opens sealed credentials in memory (for its tenant and their hosts only) and sets the callback's signing
secret apart. A run that ends before its
flow body masks them (cancelled by the CLI, or the flow's end hooks) through `mask_stored_credentials`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from pydantic import SecretStr

from prefect_restful_etl.flows.parameters import BatchParameters
from prefect_restful_etl.flows.sealing import CALLBACK, check_hosts, unseal
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.redaction import MASK


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
            name: value if value is None or (name in _READABLE_FIELDS and isinstance(value, str)) else MASK
            for name, value in values.items()
        }
    return masked


_READABLE_FIELDS = {name for name, f in Credentials.model_fields.items() if "SecretStr" not in str(f.annotation)}


# The parameters of a batch that hold no secret; any other one (`credential`, misspelt) is masked whole, since
# a run refused for it still stores what it was given.
_PLAIN_PARAMETERS = set(BatchParameters.model_fields) - {"credentials"}
_PLAIN_PARAMETERS |= {"batch_type", "segments", "feed", "receiver"}  # a hooks micro-batch's own (flows/hooks.py)


def masked_parameters(parameters: dict[str, Any]) -> dict[str, Any] | None:
    """Stored run parameters with their plain `credentials`, and every parameter a batch does not know,
    masked; None when nothing there is in clear."""
    masked = {
        name: value if name in _PLAIN_PARAMETERS or value is None or value == MASK else MASK
        for name, value in parameters.items()
        if name != "credentials"
    }
    credentials = parameters.get("credentials")
    if isinstance(credentials, Mapping):
        masked["credentials"] = masked_credentials(credentials)
    elif "credentials" in parameters:
        masked["credentials"] = credentials if credentials is None or credentials == MASK else MASK
    return None if masked == parameters else {name: masked[name] for name in parameters}


async def mask_stored_credentials(client: PrefectClient, flow_run_id: UUID) -> bool:
    """Mask the plain credentials Prefect stores for the run, as they are now; True when any were in clear."""
    run = await client.read_flow_run(flow_run_id)
    masked = masked_parameters(run.parameters)
    if masked is None:
        return False
    await client.update_flow_run(flow_run_id, parameters=masked)
    return True


async def redact_stored_parameters(flow_run_id: UUID, parameters: dict[str, Any], tags: list[str]) -> None:
    """A run created through the REST API or the UI holds its parameters in clear until this runs."""
    stored = {name: value for name, value in parameters.items() if name != "credentials"}
    stored = _jsonable(stored)
    credentials = parameters.get("credentials") or {}
    stored["credentials"] = masked_credentials(credentials) if isinstance(credentials, Mapping) else MASK
    async with get_client() as client:
        current = await client.read_flow_run(flow_run_id)
        # Whoever creates a run sets its tags: a `tenant:` or `batch-type:` tag the run's own parameters do not
        # say is dropped, so the CLI's tag filter finds it only under the tenant it runs for
        kept = {tag for tag in current.tags if not tag.startswith(_OWN_TAGS)}
        await client.update_flow_run(flow_run_id, parameters=stored, tags=sorted(kept | set(tags)))


_OWN_TAGS = ("tenant:", "batch-type:")


def _jsonable(value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_python(value, mode="json")


def open_credentials(
    credentials: dict[str, Credentials],
    sealed_credentials: str | None,
    *,
    tenant_id: str,
    apis: Mapping[str, ApiConfig],
    callback_url: str | None,
) -> tuple[dict[str, Credentials], SecretStr | None]:
    """Plain and sealed credentials as one map by API name, and the callback's secret taken out of it.

    Sealed ones open only for the tenant they were sealed for, and only when this run sends each API's to the
    hosts they are bound to (`apis` as this run resolved them: base URLs and blocks applied). They stay sealed in
    Prefect, so a Prefect Retry opens them again; plain ones were masked on receipt, so a retry finds masks: say
    so instead of sending them to the API as a password.
    """
    if any(secret == MASK for creds in credentials.values() for secret in creds.secret_values()):
        raise ConfigError(
            "credentials",
            "were masked when the run first started: a retry needs sealed "
            "credentials (`restful-etl seal`), or start a new run with the credentials",
        )
    merged = dict(credentials)
    if sealed_credentials:
        opened = unseal(sealed_credentials, tenant_id=tenant_id)
        check_hosts(opened, apis, callback_url)  # before any request: a replay to another host sends nothing
        both = sorted(set(opened.credentials) & set(merged))
        if both:
            raise ConfigError("sealed_credentials", f"and credentials both name {both}: give each API once")
        merged |= opened.credentials
    callback = merged.pop(CALLBACK, None)
    return merged, callback.token if callback is not None else None
