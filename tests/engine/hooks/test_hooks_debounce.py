"""The debouncer: a burst becomes one micro-batch, a count starts one at once, one at a time per group."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect_restful_etl.tasks.engine.hooks.debounce import Debouncer, Group

A, B = ("acme", "crm-to-accounting"), ("globex", "crm-to-accounting")


async def until(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


class Runs:
    """The fire callback: records each micro-batch; `gate` holds them running until set."""

    def __init__(self, outcomes: list[bool] | None = None) -> None:
        self.fired: list[tuple[Group, int]] = []
        self.running = self.most_at_once = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.outcomes = outcomes or []

    async def __call__(self, group: Group, waiting: int) -> bool:
        self.fired.append((group, waiting))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return self.outcomes.pop(0) if self.outcomes else True


async def test_a_burst_within_the_debounce_becomes_one_micro_batch_per_group() -> None:
    runs = Runs()
    debouncer = Debouncer(runs)
    for _ in range(300):
        debouncer.notify(A, delay=0.2, max_events=1000)
    debouncer.notify(B, delay=0.2, max_events=1000, count=5)
    await until(lambda: len(runs.fired) == 2 and not debouncer.running())
    assert sorted(runs.fired) == [(A, 300), (B, 5)]
    await debouncer.close()


async def test_enough_events_start_a_micro_batch_without_waiting_for_the_debounce() -> None:
    runs = Runs()
    debouncer = Debouncer(runs)
    for _ in range(10):
        debouncer.notify(A, delay=3600, max_events=10)
    await until(lambda: runs.fired == [(A, 10)])
    await debouncer.close()


async def test_one_micro_batch_per_group_at_a_time_and_events_meanwhile_wait_for_the_next() -> None:
    runs = Runs()
    debouncer = Debouncer(runs)
    runs.gate.clear()
    debouncer.notify(A, delay=0, max_events=100)
    await until(lambda: runs.running == 1)
    for _ in range(50):
        debouncer.notify(A, delay=0, max_events=100)
    assert debouncer.waiting(A) == 50 and runs.fired == [(A, 1)]
    runs.gate.set()
    await until(lambda: len(runs.fired) == 2 and not debouncer.running())
    assert runs.fired == [(A, 1), (A, 50)] and runs.most_at_once == 1
    await debouncer.close()


async def test_a_micro_batch_that_did_not_complete_is_tried_again_with_its_events() -> None:
    runs = Runs(outcomes=[False, False, True])
    debouncer = Debouncer(runs, retry_seconds=0.01)
    debouncer.notify(A, delay=0, max_events=100, count=7)
    await until(lambda: len(runs.fired) == 3 and not debouncer.running())
    assert runs.fired == [(A, 7)] * 3
    await debouncer.close()


async def test_a_failing_fire_call_is_retried_not_lost() -> None:
    calls: list[int] = []

    async def broken(group: Group, waiting: int) -> bool:
        calls.append(waiting)
        if len(calls) == 1:
            raise RuntimeError("the Prefect API is down")
        return True

    debouncer = Debouncer(broken, retry_seconds=0.01)
    debouncer.notify(A, delay=0, max_events=100, count=3)
    await until(lambda: len(calls) == 2 and not debouncer.running())
    assert calls == [3, 3]
    await debouncer.close()
