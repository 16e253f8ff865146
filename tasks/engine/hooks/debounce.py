"""The debouncer: hooks gathered per tenant and batch type into micro-batches, never one run per event.

A group's micro-batch starts `delay` seconds after the first event that waits for it, or at once when
`max_events` wait, whichever comes first; at most one of a group's micro-batches runs at a time, and events
that arrive meanwhile wait for the next. A micro-batch that did not complete is tried again after a backoff
(its events are still on the stage: the intake gives it every sealed segment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

Group = tuple[str, str]  # (tenant, batch type)
Fire = Callable[[Group, int], Awaitable[bool]]  # run one micro-batch of the events waiting; True if it completed


@dataclass
class _State:
    delay: float
    max_events: int
    pending: int = 0
    first_at: float | None = None
    not_before: float = 0.0
    failures: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None


class Debouncer:
    """`notify(group, ...)` as each event is stored; `fire(group, waiting)` runs the micro-batch."""

    def __init__(
        self,
        fire: Fire,
        *,
        retry_seconds: float = 5.0,
        max_retry_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fire, self.clock = fire, clock
        self.retry_seconds, self.max_retry_seconds = retry_seconds, max_retry_seconds
        self._groups: dict[Group, _State] = {}

    def notify(self, group: Group, *, delay: float, max_events: int, count: int = 1) -> None:
        state = self._groups.setdefault(group, _State(delay, max_events))
        state.delay, state.max_events = delay, max_events
        state.pending += count
        if state.first_at is None:
            state.first_at = self.clock()
        if state.pending >= state.max_events:
            state.wake.set()
        if state.worker is None or state.worker.done():
            state.worker = asyncio.create_task(self._run(group, state), name=f"micro-batches {group}")

    def waiting(self, group: Group) -> int:
        state = self._groups.get(group)
        return state.pending if state else 0

    def running(self) -> int:
        return sum(1 for state in self._groups.values() if state.worker is not None and not state.worker.done())

    async def _run(self, group: Group, state: _State) -> None:
        while state.pending:
            wait = self._wait(state)
            if wait > 0:
                state.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.wake.wait(), wait)
                continue
            taken, state.pending, state.first_at = state.pending, 0, None
            try:
                completed = await self.fire(group, taken)
            except Exception:  # the events are on the stage: try again, never lose the worker
                logger.exception("micro-batch of %s/%s could not be started", group[1], group[0])
                completed = False
            if completed:
                state.failures = 0
                continue
            state.failures += 1
            backoff = min(self.max_retry_seconds, self.retry_seconds * 2 ** (state.failures - 1))
            state.not_before = self.clock() + backoff
            state.pending = max(state.pending, taken)  # what the failed run held waits for the next
            state.first_at = state.first_at if state.first_at is not None else self.clock()

    def _wait(self, state: _State) -> float:
        now = self.clock()
        assert state.first_at is not None
        if state.pending >= state.max_events:
            return state.not_before - now  # enough events: now, unless a failed run is backing off
        return max(state.first_at + state.delay, state.not_before) - now

    async def close(self) -> None:
        """Stop every group's worker (a running micro-batch's own run goes on in Prefect)."""
        workers = [state.worker for state in self._groups.values() if state.worker is not None]
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
