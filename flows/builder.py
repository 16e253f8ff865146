"""The builder: turns a batch type (plain configuration) into a Prefect flow whose jobs are tasks."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from prefect import Flow, flow

from prefect_restful_etl.flows.batch import run_batch
from prefect_restful_etl.flows.endings import mark_cancelled, mark_crashed, mask_failed
from prefect_restful_etl.flows.parameters import BatchParameters
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.jobtypes import BatchType
from prefect_restful_etl.tasks.engine.report import BatchReport


def run_name() -> str:
    """`acme incremental 2026-03-01 14:00` (UTC): runs of one tenant told apart in the UI's lists and histories."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    tenant = parameters.get("tenant_id")
    kind = "full re-sync" if parameters.get("full_refresh") is True else "incremental"
    when = flow_run.scheduled_start_time.astimezone(UTC)  # a pendulum DateTime, or a datetime (Python 3.13+)
    return f"{tenant if isinstance(tenant, str) and tenant else 'no tenant'} {kind} {when:%Y-%m-%d %H:%M}"


BATCH_TYPE_ATTRIBUTE = "restful_etl_batch_type"


def batch_type_of(batch_flow: Flow[..., Any]) -> BatchType | None:
    """The batch type a flow was built from (`build_flow`), or None for any other flow."""
    found = getattr(batch_flow.fn, BATCH_TYPE_ATTRIBUTE, None)
    return found if isinstance(found, BatchType) else None


def _docstring(batch_type: BatchType) -> str:
    """The flow's docstring: Prefect shows each `Args:` line as its parameter's description (BatchParameters')."""
    args = []
    for name, field in BatchParameters.model_fields.items():
        said = field.description or ""
        if name == "credentials":
            said = f"{said} APIs: {', '.join(batch_type.apis)}."
        args.append(f"        {name}: {said}")
    return f"{batch_type.description or batch_type.name}\n\n    Args:\n" + "\n".join(args) + "\n    "


def build_flow(batch_type: BatchType, **flow_options: Any) -> Flow[..., Any]:
    """One flow per batch type; its parameters are the batch's: tenant, credentials, full or incremental."""

    async def batch(
        tenant_id: str,
        credentials: dict[str, Credentials] | None = None,
        full_refresh: bool = False,
        base_urls: dict[str, str] | None = None,
        dry_run: bool = False,
        resume_batch_id: str | None = None,
        sealed_credentials: str | None = None,
        callback_url: str | None = None,
        api_blocks: dict[str, str] | None = None,
    ) -> BatchReport:
        # Prefect's own validation is off (see flows/parameters.py): the batch masks, then validates
        return await run_batch(
            batch_type,
            {
                "tenant_id": tenant_id,
                "credentials": credentials,
                "full_refresh": full_refresh,
                "base_urls": base_urls,
                "dry_run": dry_run,
                "resume_batch_id": resume_batch_id,
                "sealed_credentials": sealed_credentials,
                "callback_url": callback_url,
                "api_blocks": api_blocks,
            },
        )

    batch.__doc__ = _docstring(batch_type)
    batch.__name__ = batch_type.name.replace("-", "_")
    batch.__dict__[BATCH_TYPE_ATTRIBUTE] = batch_type  # see batch_type_of
    options: dict[str, Any] = {
        "name": batch_type.name,
        "flow_run_name": run_name,
        "description": batch_type.description or None,
        "persist_result": False,
        # validated by the batch after its stored parameters are masked: Prefect would log them as sent
        "validate_parameters": False,
        # a cancelled or killed run may never reach run_batch's own ending: these mark its audit rows; and a
        # run that ends before its body never reached redaction on receipt: all three mask its credentials
        "on_cancellation": [mark_cancelled],
        "on_crashed": [mark_crashed],
        "on_failure": [mask_failed],
    }
    return flow(**(options | flow_options))(batch)
