"""Fetching concurrently, yielding in order: a sliding window of requests with a small reorder buffer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_END = object()


async def fetch_in_order(
    items: Iterable[Item], fetch: Callable[[Item], Awaitable[Result]], concurrency: int, ahead: int | None = None
) -> AsyncGenerator[Result, None]:
    """Yield `await fetch(item)` for every item, in the items' order, with `concurrency` fetches running.

    A fetch starts as soon as any other ends, not only when the oldest does: one slow response would
    otherwise leave the other slots idle until it came. Results that arrive before an earlier one wait
    in a reorder buffer, and no fetch starts more than `ahead` (default four times `concurrency`) items
    past the one the consumer waits for, so memory stays bounded however slow one response or the consumer
    is. A larger `ahead` hides slower outliers: a page that takes k times as long as the others idles no
    slot while `ahead` >= about k x `concurrency`.
    The first failure, in order, is raised; closing the generator cancels every fetch in flight.
    """
    window = _Window(iter(items), fetch, concurrency, ahead or 4 * concurrency)
    try:
        while (task := window.next_task()) is not None:
            result = await task
            window.taken()
            yield result
    finally:
        await window.close()


class _Window(Generic[Item, Result]):
    """The started fetches by position; done callbacks refill it, whatever the consumer is doing."""

    def __init__(
        self, items: Iterator[Item], fetch: Callable[[Item], Awaitable[Result]], concurrency: int, ahead: int
    ) -> None:
        self._items, self._fetch = items, fetch
        self._concurrency, self._ahead = concurrency, max(ahead, concurrency)
        self._tasks: dict[int, asyncio.Future[Result]] = {}  # started and not yet taken, by position
        self._started = self._next = self._running = 0
        self._stopped = False  # exhausted, failed or closed: start nothing more

    def next_task(self) -> asyncio.Future[Result] | None:
        """The fetch of the next item in order, or None once every item was taken."""
        self._fill()
        return self._tasks.get(self._next)

    def taken(self) -> None:
        del self._tasks[self._next]
        self._next += 1
        self._fill()

    def _fill(self) -> None:
        while not self._stopped and self._running < self._concurrency and self._started - self._next < self._ahead:
            item = next(self._items, _END)
            if item is _END:
                self._stopped = True
                return
            task = asyncio.ensure_future(self._fetch(item))  # type: ignore[arg-type]  # not _END here
            task.add_done_callback(self._finished)
            self._tasks[self._started] = task
            self._started += 1
            self._running += 1

    def _finished(self, task: asyncio.Future[Result]) -> None:
        self._running -= 1
        if not task.cancelled() and task.exception() is not None:
            self._stopped = True  # the consumer raises it when it gets there: fetch nothing more meanwhile
        self._fill()

    async def close(self) -> None:
        self._stopped = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
