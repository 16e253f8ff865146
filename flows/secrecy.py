"""Redact on receipt: the batch flow's first act overwrites the run's stored parameters with masks."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.redaction import MASK


def masked_credentials(credentials: dict[str, Credentials]) -> dict[str, dict[str, Any]]:
    """The same shape with every secret replaced by a mask; usernames and client ids stay readable."""
    masked: dict[str, dict[str, Any]] = {}
    for api, creds in credentials.items():
        values = creds.model_dump(exclude_none=True)
        masked[api] = {name: MASK if name in _SECRET_FIELDS else value for name, value in values.items()}
    return masked


_SECRET_FIELDS = {name for name, f in Credentials.model_fields.items() if "SecretStr" in str(f.annotation)}


async def redact_stored_parameters(
    flow_run_id: UUID, parameters: dict[str, Any], credentials: dict[str, Credentials], tags: list[str]
) -> None:
    """A run created through the REST API or the UI holds its parameters in clear until this runs."""
    stored = {name: value for name, value in parameters.items() if name != "credentials"}
    stored = _jsonable(stored)
    stored["credentials"] = masked_credentials(credentials)
    async with get_client() as client:
        current = await client.read_flow_run(flow_run_id)
        await client.update_flow_run(flow_run_id, parameters=stored, tags=sorted({*current.tags, *tags}))


def _jsonable(value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(Any).dump_python(value, mode="json")
