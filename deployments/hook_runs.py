"""How the hook receiver starts a micro-batch and learns how it ended: a run of the `hooks` deployment on the
Prefect server (production: served by `restful-etl serve` or a worker), or the flow called in this process
(development and the demo, with no Prefect server to ask)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from prefect.client.orchestration import get_client

from prefect_restful_etl.flows.hooks import DEPLOYMENT

logger = logging.getLogger(__name__)
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


class Dispatcher(Protocol):
    async def run(self, parameters: dict[str, Any], tags: list[str]) -> tuple[str, str]:
        """Start a micro-batch and wait for its end: its run id and final state type (`COMPLETED` ...)."""


class DeploymentDispatcher:
    """A flow run of the hooks deployment (`restful-etl-hooks/hooks`), followed by polling its state."""

    def __init__(self, deployment: str = DEPLOYMENT, *, poll_seconds: float = 0.5, deadline: float = 3600.0) -> None:
        self.deployment, self.poll_seconds, self.deadline = deployment, poll_seconds, deadline
        self._deployment_id: Any = None

    async def run(self, parameters: dict[str, Any], tags: list[str]) -> tuple[str, str]:
        async with get_client() as client:
            if self._deployment_id is None:
                self._deployment_id = (await client.read_deployment_by_name(self.deployment)).id
            run = await client.create_flow_run_from_deployment(self._deployment_id, parameters=parameters, tags=tags)
            run_id, started, warned = str(run.id), time.monotonic(), False
            while True:
                state = (await client.read_flow_run(run.id)).state
                kind = state.type.value if state else "PENDING"
                if kind in FINAL:
                    return run_id, kind
                waited = time.monotonic() - started
                if waited > self.deadline:
                    return run_id, kind  # not ended: the receiver tries again later, the load diffs
                if kind == "SCHEDULED" and waited > 60 and not warned:
                    warned = True
                    logger.warning("micro-batch %s not started after 60 s: is %s served?", run_id, self.deployment)
                await asyncio.sleep(self.poll_seconds)


class InProcessDispatcher:
    """The micro-batch flow called here, in a thread of its own (so the receiver's loop keeps answering)."""

    async def run(self, parameters: dict[str, Any], tags: list[str]) -> tuple[str, str]:
        return await asyncio.to_thread(_run_here, parameters, tags)


def _run_here(parameters: dict[str, Any], tags: list[str]) -> tuple[str, str]:
    from prefect import tags as run_tags

    from prefect_restful_etl.flows.hooks import micro_batch

    async def go() -> Any:
        with run_tags(*tags):
            return await micro_batch(**parameters, return_state=True)

    state = asyncio.run(go())
    return str(state.state_details.flow_run_id), state.type.value
