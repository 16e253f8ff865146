"""`restful-etl serve`: its runner settings (how often it polls Prefect for runs to start), the deployments it
makes, and the janitor's sweep before it serves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.states import Completed

from prefect_restful_etl.deployments import serve as serving
from prefect_restful_etl.flows.catalog import batch_flows
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.tasks.engine.redaction import MASK


@pytest.mark.parametrize("setting,expected", [(None, serving.POLL_SECONDS), ("7", None)])
def test_serve_polls_every_second_unless_prefect_is_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: float | None
) -> None:
    given: dict[str, Any] = {}
    monkeypatch.setattr(serving, "serve", lambda *deployments, **options: given.update(options))
    monkeypatch.setattr(serving, "served_batch_types", dict)
    monkeypatch.setattr(serving, "sweep_once", lambda: None)  # the janitor's start-up sweep needs a Prefect API
    if setting is None:
        monkeypatch.delenv("PREFECT_RUNNER_POLL_FREQUENCY", raising=False)
    else:
        monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", setting)
    serving.serve_all(limit=3)
    assert (given["query_seconds"], given["limit"]) == (expected, 3)


def test_no_deployment_that_takes_credentials_has_prefect_check_its_parameters() -> None:
    """Prefect's check answers a malformed run with a 409 that quotes the value sent, a credential: the batch
    deployments and the hooks' micro-batches alike leave the parameters to the batch, which masks them first."""
    made = [d for name, flow in batch_flows().items() for d in serving.batch_deployments(name, flow)]
    made.append(serving.hooks_deployment())
    assert {d.name: d.enforce_parameter_schema for d in made} == {d.name: False for d in made}


@pytest.mark.integration
def test_serve_sweeps_with_the_janitor_before_it_serves(
    prefect_harness: Path, etl_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that ended holding plain credentials (its runner was killed before it could mask them) is masked
    by the start-up sweep, before the first deployment is served."""
    secret = "serve-sweep-secret-8c1e"

    async def ended_holding_a_secret() -> UUID:
        async with get_client() as client:
            flow_run = await client.create_flow_run(
                crm_to_accounting, parameters={"tenant_id": "acme", "credentials": {"crm": {"token": secret}}}
            )
            await client.set_flow_run_state(flow_run.id, Completed(), force=True)
            return flow_run.id

    batch_id = asyncio.run(ended_holding_a_secret())
    when_served: dict[str, Any] = {}

    def serve(*deployments: Any, **options: Any) -> None:
        with get_client(sync_client=True) as client:
            when_served.update(client.read_flow_run(batch_id).parameters)

    monkeypatch.setattr(serving, "serve", serve)
    monkeypatch.setattr(serving, "served_batch_types", dict)
    serving.serve_all()
    assert when_served["credentials"] == {"crm": {"token": MASK}}
