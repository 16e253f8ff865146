"""fetch_in_order: results in order, `concurrency` fetches running all along, bounded look-ahead, failures, closing."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from prefect_restful_etl.tasks.engine.http.window import fetch_in_order


class Fetcher:
    """Fetches that finish when the test says (`release`), or at once when `instant`; records what ran when."""

    def __init__(self, instant: bool = True) -> None:
        self.instant = instant
        self.started: list[int] = []
        self.running = self.max_running = 0
        self.gates: dict[int, asyncio.Event] = {}
        self.cancelled: list[int] = []

    def release(self, item: int) -> None:
        self.gates.setdefault(item, asyncio.Event()).set()

    async def __call__(self, item: int) -> int:
        self.started.append(item)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if not self.instant:
                await self.gates.setdefault(item, asyncio.Event()).wait()
            for _ in range((item * 7) % 5):  # scrambles completion order without any wall-clock sleep
                await asyncio.sleep(0)
            if item < 0:
                raise ValueError(f"item {item} failed")
            return item * 10
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        finally:
            self.running -= 1


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    "items,concurrency",
    [
        pytest.param(list(range(50)), 4, id="many-items"),
        pytest.param([3], 4, id="fewer-items-than-slots"),
        pytest.param([], 4, id="no-items"),
        pytest.param(list(range(10)), 1, id="one-at-a-time"),
    ],
)
async def test_results_come_in_order_with_at_most_concurrency_running(items: list[int], concurrency: int) -> None:
    fetch = Fetcher()
    results = [r async for r in fetch_in_order(items, fetch, concurrency)]
    assert results == [i * 10 for i in items]
    assert sorted(fetch.started) == items
    assert fetch.max_running <= concurrency


async def test_a_slow_first_item_leaves_no_slot_idle_and_the_look_ahead_is_bounded() -> None:
    fetch = Fetcher(instant=False)
    for item in range(1, 100):
        fetch.release(item)  # every item but the first answers at once
    async with aclosing(fetch_in_order(range(100), fetch, concurrency=3, ahead=8)) as results:
        first = asyncio.ensure_future(anext(results))
        await settle()
        # item 0 is still out, yet the other slots kept working: up to 8 items past the one awaited
        assert sorted(fetch.started) == list(range(8)) and fetch.running == 1
        fetch.release(0)
        assert await first == 0
        assert [await anext(results) for _ in range(3)] == [10, 20, 30]


async def test_the_first_failure_in_order_is_raised_and_nothing_more_is_fetched() -> None:
    fetch = Fetcher()
    items = [0, 1, 2, -3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    got: list[int] = []
    with pytest.raises(ValueError, match="item -3 failed"):
        async for result in fetch_in_order(items, fetch, concurrency=2, ahead=4):
            got.append(result)
    assert got == [0, 10, 20]
    assert len(fetch.started) <= 4 + 4  # the items up to the failure, and at most one look-ahead past it


async def test_closing_early_cancels_the_fetches_in_flight() -> None:
    fetch = Fetcher(instant=False)
    fetch.release(0)
    async with aclosing(fetch_in_order(range(10**9), fetch, concurrency=4)) as results:
        assert await anext(results) == 0
        await settle()
    assert fetch.running == 0 and len(fetch.cancelled) == 4
    assert len(fetch.started) == 1 + 4  # never more than the slots, with a lazy iterable of a billion items
