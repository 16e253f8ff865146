"""Parent/child extracts: each parent record names a child collection, like `/customers/{id}/bills`.

Placeholders are dotted paths into the parent (`/accounts/{owner.id}/notes`); each value is percent-encoded,
so an id such as `a/../b` stays one path segment. Every child record gets the parent's key under
`parent_field`, so the two can be joined again after the extract.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any
from urllib.parse import quote

from prefect_restful_etl.tasks.engine.exceptions import RecordError
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.http.paginators import BasePaginator
from prefect_restful_etl.tasks.engine.http.paths import get_path

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_DONE = object()

Records = list[dict[str, Any]]


def child_path(template: str, parent: dict[str, Any]) -> str:
    """`/customers/{id}/bills` with the parent's values filled in, each one percent-encoded."""

    def fill(match: re.Match[str]) -> str:
        value = get_path(parent, match.group(1))
        if value is None or isinstance(value, (dict, list)):
            field = match.group(1)
            raise RecordError(f"the parent record has no value for {{{field}}} in {template}", column=field)
        return quote(str(value), safe="")

    return _PLACEHOLDER.sub(fill, template)


async def iter_child_pages(
    client: RestClient,
    parents: AsyncIterable[dict[str, Any]] | AsyncIterable[Records],
    path_template: str,
    *,
    parent_key: str = "id",
    parent_field: str = "_parent_id",
    params: dict[str, Any] | None = None,
    records_path: str | None = None,
    paginator: BasePaginator | None = None,
    concurrency: int | None = None,
) -> AsyncIterator[Records]:
    """Yield the child pages of every parent, with at most `concurrency` parents' children in flight.

    `parents` yields records or pages of records (what `RestClient.paginate` yields). Pages of one parent
    come in order; pages of different parents interleave as they arrive. The first error stops everything.
    """
    limit = concurrency or client.api.concurrency
    out: asyncio.Queue[Any] = asyncio.Queue(maxsize=limit * 2)  # a slow consumer holds the workers back

    async def one_parent(parent: dict[str, Any]) -> None:
        try:
            path, key = child_path(path_template, parent), get_path(parent, parent_key)
            pages = client.paginate(path, params=params, records_path=records_path, paginator=paginator)
            async for page in pages:
                for record in page:
                    if isinstance(record, dict):
                        record[parent_field] = key
                await out.put(page)
        except Exception as ex:  # handed to the consumer, which raises it
            await out.put(ex)

    producer = asyncio.ensure_future(_feed(parents, one_parent, limit, out))
    try:
        while (item := await out.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)


async def _feed(parents: AsyncIterable[Any], work: Any, limit: int, out: asyncio.Queue[Any]) -> None:
    """Start one task per parent, at most `limit` at once; `_DONE` once every parent's children are out."""
    slots = asyncio.Semaphore(limit)
    running: set[asyncio.Task[None]] = set()

    def finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        slots.release()

    try:
        async for item in parents:
            for parent in item if isinstance(item, list) else [item]:
                await slots.acquire()
                task = asyncio.ensure_future(work(parent))
                running.add(task)
                task.add_done_callback(finished)
        await asyncio.gather(*running)
        await out.put(_DONE)
    except Exception as ex:  # the parents' own iterator failed
        await out.put(ex)
    finally:
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
