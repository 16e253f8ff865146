"""Serving in one long-lived process: `restful-etl serve --in-process`.

The same deployments as `restful-etl serve` (deployments/serve.py), registered the same way, so runs created
through the REST API, the UI's Run, schedules and Retry reach them alike. What differs is how a run is run:
Prefect's Runner starts a process per flow run (imports of Prefect and this package, about 3 CPU-seconds a
batch); this runner runs each one with Prefect's own flow engine as an asyncio task of this process, with its
own flow run, states, task runs, logs and audit rows, several tenants' batches at once up to `limit`.

Around a run it does what Prefect's Runner does (prefect/runner/_scheduled_run_poller.py, _state_proposer.py,
_cancellation_manager.py):

- polls Prefect every `poll_seconds` for Scheduled runs of its deployments that are due
  (`get_scheduled_flow_runs_for_deployments`), earliest first, as many as free slots;
- claims each by proposing Pending: a run the server refuses (another runner has it) is skipped;
- runs it with the flow engine on the flow run (its parameters resolved from the run, as the engine's
  `run_flow` does); the engine sets Running and the final state, runs the flow's state hooks, and sends
  heartbeats when PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set;
- watches its runs for Cancelling (the UI's or the REST API's Cancel) and cancels the run's task; the engine
  then sets the run Cancelled and runs its on_cancellation hooks (flows/endings.py), the batch's own code having
  written its audit rows CANCELLED on the way out;
- on Ctrl-C or SIGTERM stops claiming, cancels what runs (as the Runner does when it shuts down: Cancelled,
  its hooks run; `restful-etl restart` resumes such a batch) and pauses the schedules it served.

A crash of the process leaves its Running runs to the janitor (their heartbeats stop), as with serve.

The event loop runs in a thread of its own: Prefect's engine installs a SIGTERM handler for the one flow run of
its process when it runs in the main thread, which here holds many; the main thread keeps the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import Abort
from prefect.flow_engine import AsyncFlowRunEngine
from prefect.logging import get_logger
from prefect.states import Cancelled, Crashed, Pending, State
from prefect.types._datetime import now
from prefect.utilities.callables import get_call_parameters, parameters_to_args_kwargs
from prefect.utilities.engine import propose_state

logger = get_logger("restful_etl.inprocess")  # under Prefect's loggers: shown where Prefect's logs are

POLL_SECONDS = 0.5
"""How often the in-process runner asks Prefect for runs that are due, and for Cancelling runs of its own."""
LIMIT = 20
"""Runs at once by default."""
SHUTTING_DOWN = "the in-process runner is shutting down"


class _Engine(AsyncFlowRunEngine[Any, Any]):
    """Prefect's async flow engine, told when the runner cancelled its task for a cancel request.

    In a process of its own, a run is cancelled by the Runner's SIGTERM, which the engine answers by setting the run
    Cancelled and running its on_cancellation hooks (`handle_cancellation`). Here the runner cancels the run's
    asyncio task instead, which the engine would take for a crash: with `cancel_requested` set it takes the same
    path as on the Runner's signal."""

    cancel_requested: str | None = None

    async def handle_crash(self, exc: BaseException) -> None:
        if self.cancel_requested is not None and isinstance(exc, asyncio.CancelledError):
            await self.handle_cancellation(exc)
        else:
            await super().handle_crash(exc)


@dataclass
class _Run:
    flow_run: FlowRun
    task: asyncio.Task[None] | None = None
    engine: _Engine | None = None
    started: bool = False
    cancelled: str | None = None  # why, once asked to cancel


@dataclass
class InProcessRunner:
    """Runs the flow runs of `deployments` (deployment id -> flow) as tasks of this process's event loop."""

    deployments: dict[UUID, Flow[..., Any]]
    limit: int = LIMIT
    poll_seconds: float = POLL_SECONDS
    pause_on_shutdown: bool = True
    running: dict[UUID, _Run] = field(default_factory=dict)
    _stop: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def stop_threadsafe(self) -> None:
        """Ask the runner to stop, from any thread (the signal handlers' main thread)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self, ready: threading.Event | None = None) -> None:
        """Poll, claim and run until `stop_threadsafe`; then cancel what runs, wait for it, pause the schedules."""
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        if ready is not None:
            ready.set()
        async with get_client() as client:
            try:
                while not self._stop.is_set():
                    try:
                        await self.poll_once(client)
                    except Exception as ex:  # the server is busy or away for a moment: the next poll tries again
                        logger.warning("in-process runner: a poll failed (%s: %s)", type(ex).__name__, ex)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.poll_seconds)
            finally:
                await self._shut_down(client)

    async def poll_once(self, client: PrefectClient) -> None:
        """One round: cancel our runs that Prefect says are Cancelling, then claim and start the due ones."""
        await self._cancel_requested(client)
        free = self.limit - len(self.running)
        if free <= 0:
            return
        due = await client.get_scheduled_flow_runs_for_deployments(
            deployment_ids=list(self.deployments), scheduled_before=now("UTC") + timedelta(seconds=1)
        )
        due.sort(key=lambda run: (run.next_scheduled_start_time is None, run.next_scheduled_start_time))
        for flow_run in due:
            if len(self.running) >= self.limit:
                break
            if flow_run.id in self.running or flow_run.deployment_id not in self.deployments:
                continue
            if not await self._claim(client, flow_run):
                continue
            run = self.running[flow_run.id] = _Run(flow_run)
            run.task = asyncio.create_task(self._execute(run), name=f"flow run {flow_run.id}")

    async def _claim(self, client: PrefectClient, flow_run: FlowRun) -> bool:
        """Propose Pending, as Prefect's runner does before it starts a run; False when the server refuses."""
        try:
            state = await propose_state(client, Pending(), flow_run_id=flow_run.id)
        except Abort as ex:
            logger.info("in-process runner: flow run %s is not ours to run (%s)", flow_run.id, ex)
            return False
        if not state.is_pending():
            logger.info("in-process runner: flow run %s is %s, not ours to run", flow_run.id, state.type.value)
            return False
        flow_run.state = state
        return True

    async def _execute(self, run: _Run) -> None:
        """The flow engine on this flow run, as `prefect.flow_engine.run_flow_async` drives it (with `_Engine`)."""
        flow_run = run.flow_run
        assert flow_run.deployment_id is not None
        flow = self.deployments[flow_run.deployment_id]
        run.started = True
        try:
            if run.cancelled is not None:  # asked before its task first ran
                await self._cancelled_before_start(run)
                return
            # the flow run's parameters with the flow's defaults, as prefect.flow_engine.run_flow resolves them
            args, kwargs = parameters_to_args_kwargs(flow.fn, flow_run.parameters)
            parameters = get_call_parameters(flow.fn, args, kwargs)
            engine = run.engine = _Engine(flow=flow, flow_run=flow_run, parameters=parameters)
            async with engine.start():
                while engine.is_running():
                    async with engine.run_context():
                        _ = await engine.call_flow_fn()  # (typed as returning the flow's coroutine: its result)
        except asyncio.CancelledError:
            if run.engine is None or not run.engine.state.is_final():  # cancelled before the engine could say so
                await asyncio.shield(self._cancelled_before_start(run))
        except Exception as ex:
            # what the engine does not turn into a state of the run (it failed to start): Crashed, as the Runner
            # says of a run whose process ended without one
            logger.exception("in-process runner: flow run %s did not run", flow_run.id)
            message = f"the in-process runner could not run it: {type(ex).__name__}"
            await asyncio.shield(self._crashed(flow_run, message))
        finally:
            self.running.pop(flow_run.id, None)

    async def _cancel_requested(self, client: PrefectClient) -> None:
        """Cancel the task of each of our runs Prefect says is Cancelling."""
        if not self.running:
            return
        cancelling = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=list(self.running)),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING])),
            )
        )
        for flow_run in cancelling:
            self.cancel(
                flow_run.id, (flow_run.state.message if flow_run.state else None) or "cancelled through Prefect"
            )

    def cancel(self, flow_run_id: UUID, why: str) -> None:
        """Cancel the run's task, once; the engine then sets the run Cancelled and runs its hooks."""
        run = self.running.get(flow_run_id)
        if run is None or run.cancelled is not None:
            return  # not ours, or asked already: its task is ending
        run.cancelled = why
        if run.engine is not None:
            run.engine.cancel_requested = why
        logger.info("in-process runner: cancelling flow run %s (%s)", flow_run_id, why)
        if run.started and run.task is not None:
            run.task.cancel(why)  # (one not started yet sees `cancelled` when it starts)

    async def _cancelled_before_start(self, run: _Run) -> None:
        """A run cancelled before the engine took it: Cancelled, and its flow's on_cancellation hooks run, as
        Prefect's runner does for a run it killed."""
        flow_run = run.flow_run
        assert flow_run.deployment_id is not None
        flow = self.deployments[flow_run.deployment_id]
        async with get_client() as client:
            state: State[Any] = Cancelled(message="cancelled before it started")
            for hook in flow.on_cancellation_hooks or []:
                try:
                    await hook(flow, flow_run, state)  # type: ignore[misc]  # our hooks are async
                except Exception:
                    logger.exception("in-process runner: a cancellation hook of flow run %s failed", flow_run.id)
            await client.set_flow_run_state(flow_run.id, state, force=True)

    async def _crashed(self, flow_run: FlowRun, message: str) -> None:
        try:
            async with get_client() as client:
                await propose_state(client, Crashed(message=message), flow_run_id=flow_run.id)
        except Exception:  # refused (already final) or the server away: the janitor ends a stuck run
            logger.warning("in-process runner: could not set flow run %s Crashed", flow_run.id)

    async def _shut_down(self, client: PrefectClient) -> None:
        """Stop what runs (Cancelled, their hooks run), then pause the schedules served, as Prefect's runner does."""
        for flow_run_id in list(self.running):
            self.cancel(flow_run_id, SHUTTING_DOWN)
        tasks = [run.task for run in self.running.values() if run.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.pause_on_shutdown:
            for deployment_id in self.deployments:
                with contextlib.suppress(Exception):
                    await client.pause_deployment(deployment_id)


async def register(deployments: Sequence[tuple[RunnerDeployment, Flow[..., Any]]]) -> dict[UUID, Flow[..., Any]]:
    """Register (create or update) each deployment with Prefect, as `serve` does; deployment id -> its flow."""
    registered: dict[UUID, Flow[..., Any]] = {}
    for deployment, flow in deployments:
        registered[await deployment.aapply()] = flow
    return registered


def serve_in_process(
    deployments: Sequence[tuple[RunnerDeployment, Flow[..., Any]]],
    *,
    limit: int | None = None,
    poll_seconds: float | None = None,
) -> None:
    """Register `deployments` and run their runs in this process until Ctrl-C or SIGTERM."""
    registered = asyncio.run(register(deployments))
    runner = InProcessRunner(registered, limit=limit or LIMIT, poll_seconds=poll_seconds or POLL_SECONDS)
    logger.info(
        "in-process runner: %d deployments, up to %d runs at once, polling every %.2f s",
        len(registered),
        runner.limit,
        runner.poll_seconds,
    )
    ready, failed = threading.Event(), []

    def loop() -> None:
        try:
            asyncio.run(runner.run(ready))
        except BaseException as ex:  # reported by the main thread
            failed.append(ex)
            ready.set()

    stopping = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    thread = threading.Thread(target=loop, name="restful-etl in-process runner")
    thread.start()
    try:
        ready.wait()
        while thread.is_alive() and not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop_threadsafe()
        thread.join()
        signal.signal(signal.SIGTERM, previous)
    if failed:
        raise failed[0]
