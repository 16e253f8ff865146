"""The batch lease in the audit database, on SQLite and PostgreSQL (`audit_url`): one holder per tenant and batch
type, among tasks, stores and processes alike; a holder that stops renewing loses it; a waiting batch gets it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from prefect_restful_etl.tasks.engine.audit.lease import BatchLease, BatchOverlap, release_lease
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlLease


@pytest.fixture
async def store(audit_url: str) -> AsyncIterator[AuditStore]:
    opened = await AuditStore.open(audit_url)
    yield opened
    await opened.close()


def lease(store: AuditStore, holder: str, ttl: float = 60.0, tenant: str = "acme") -> BatchLease:
    return BatchLease(store, tenant, "crm-to-accounting", holder, ttl=ttl)


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def test_one_batch_holds_the_lease_and_the_next_is_refused_until_it_ends(store: AuditStore) -> None:
    first, second = lease(store, "batch-1"), lease(store, "batch-2")
    assert await first.try_acquire() is None
    assert await second.try_acquire() == "batch-1"
    with pytest.raises(BatchOverlap, match=r"batch batch-1 of tenant 'acme' and batch type 'crm-to-accounting'"):
        await second.acquire(wait=0)
    assert await lease(store, "batch-3", tenant="other").try_acquire() is None, "another tenant is not held up"
    assert await first.try_acquire() is None, "a Prefect retry of the holder's run takes it again"

    await first.release()

    assert await second.try_acquire() is None
    assert await first.renew() is False and await second.renew() is True


async def test_a_waiting_batch_takes_the_lease_once_its_holder_ends(store: AuditStore) -> None:
    first, second = lease(store, "batch-1"), lease(store, "batch-2")
    await first.acquire(wait=0)
    waiting = asyncio.create_task(second.acquire(wait=60))
    await asyncio.sleep(0)
    assert not waiting.done()
    await first.release()
    await asyncio.wait_for(waiting, 30)
    assert await first.try_acquire() == "batch-2"


async def test_a_holder_that_stops_renewing_loses_its_lease_to_the_next(store: AuditStore) -> None:
    dead, next_one = lease(store, "dead", ttl=0.5), lease(store, "next")
    assert await dead.try_acquire() is None  # and never renews: its process is gone
    await until(lambda: _took(next_one), "the lease expired and the next batch took it")
    assert await dead.renew() is False, "the old holder learns it lost the lease"


async def _took(candidate: BatchLease) -> bool:
    return await candidate.try_acquire() is None


async def test_a_holder_that_finds_its_lease_taken_is_stopped(store: AuditStore) -> None:
    holder, thief = lease(store, "slow", ttl=0.6), lease(store, "thief")

    async def batch() -> None:
        await holder.hold(wait=0)
        try:
            await asyncio.sleep(60)  # the batch's work
        finally:
            await holder.end()

    running = asyncio.create_task(batch())
    await until(lambda: _held_by(store, "slow"), "the slow batch holds the lease")
    await release_lease(store, "slow")  # as if it had expired while the holder's loop stalled
    await until(lambda: _took(thief), "another batch took it")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 20)
    assert holder.lost and await thief.renew() is True, "the holder stopped and left the thief's lease alone"


async def _held_by(store: AuditStore, holder: str) -> bool:
    async with store.session() as session:
        row = await session.get(EtlLease, ("acme", "crm-to-accounting"))
    return row is not None and row.holder == holder


async def test_of_batches_starting_at_once_one_holds_the_lease(audit_url: str) -> None:
    stores = [await AuditStore.open(audit_url) for _ in range(6)]  # as separate workers would
    try:
        outcomes = await asyncio.gather(*(lease(s, f"batch-{n}").try_acquire() for n, s in enumerate(stores)))
    finally:
        for opened in stores:
            await opened.close()
    winners = [n for n, holder in enumerate(outcomes) if holder is None]
    assert len(winners) == 1 and set(outcomes) - {None} == {f"batch-{winners[0]}"}


_CONTENDER = """
import asyncio, sys
from prefect_restful_etl.tasks.engine.audit.lease import BatchLease
from prefect_restful_etl.tasks.engine.audit.store import AuditStore

async def main(url, holder):
    store = await AuditStore.open(url)
    try:
        print("won" if await BatchLease(store, "acme", "crm-to-accounting", holder).try_acquire() is None else "lost")
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.mark.integration  # four interpreters start
def test_of_processes_starting_at_once_one_holds_the_lease(audit_url: str) -> None:
    asyncio.run(_opened(audit_url))  # the tables, before the contenders race
    contenders = [
        subprocess.Popen([sys.executable, "-c", _CONTENDER, audit_url, f"process-{n}"], stdout=subprocess.PIPE)
        for n in range(4)
    ]
    said = [process.communicate(timeout=120)[0].decode().strip() for process in contenders]
    assert all(process.returncode == 0 for process in contenders)
    assert sorted(said) == ["lost", "lost", "lost", "won"]


async def _opened(url: str) -> None:
    await (await AuditStore.open(url)).close()
