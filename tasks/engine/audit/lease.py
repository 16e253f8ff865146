"""One batch per tenant and batch type at a time, across every process and worker: a lease in the audit database.

```
etl_lease  tenant_id | batch_type        | holder (batch id)  | acquired_at | expires_at
           acme      | crm-to-accounting | 7f1c...            | 14:00:02    | 14:01:32   <- renewed every ttl/3
```
A batch takes the row when there is none, when it has expired, or when it holds it already (a Prefect retry of
the same flow run); it renews it while it runs and deletes it when it ends. A holder that dies stops renewing:
its lease expires `ttl` seconds after its last renewal, and its crash hook deletes it at once where one runs.
A second batch waits for the lease, polling, up to its `wait`, then is refused (`BatchOverlap`, naming the
holder). A holder that fails to renew before its lease ends has lost it: its batch is stopped (`LeaseLost`).

The audit database is where every worker of a deployment already keeps its watermarks, so it is shared by
whatever must not overlap. Expiry is judged by each process's clock (UTC): workers' clocks must agree to well
within `ttl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlmodel import col, select

from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlLease, utcnow
from prefect_restful_etl.tasks.engine.exceptions import EtlError

logger = logging.getLogger(__name__)

DEFAULT_TTL = 90.0  # seconds a lease outlives its holder's last renewal
_POLL = 1.0  # seconds between a waiting batch's attempts (jittered)


class BatchOverlap(EtlError):
    """Another batch of the tenant and batch type holds the lease, and it was not freed within the wait."""

    def __init__(self, tenant_id: str, batch_type: str, holder: str, waited: float) -> None:
        self.tenant_id, self.batch_type, self.holder = tenant_id, batch_type, holder
        super().__init__(
            f"batch {holder} of tenant {tenant_id!r} and batch type {batch_type!r} is still running; "
            f"this batch waited {waited:.0f}s for it and was refused, so that no two batches write at once"
        )


class LeaseLost(EtlError):
    """The batch could not renew its lease before it ended: another batch may run now, so this one stops."""


class BatchLease:
    """The lease of one batch on its (tenant, batch type): `async with lease.held(wait=60): ...`."""

    def __init__(self, store: AuditStore, tenant_id: str, batch_type: str, holder: str, ttl: float = DEFAULT_TTL):
        self.store, self.tenant_id, self.batch_type, self.holder = store, tenant_id, batch_type, holder
        self.ttl = ttl
        self.lost = False
        self._keeper: asyncio.Task[None] | None = None

    async def try_acquire(self) -> str | None:
        """Take the lease if it is free, expired or ours: None when taken, else the batch id that holds it."""
        try:
            return await self.store.write(self._take)
        except IntegrityError:  # another batch inserted the row between our read and our insert
            return await self._holder() or "another batch"

    def _take(self, session: Session) -> str | None:
        key = (col(EtlLease.tenant_id) == self.tenant_id, col(EtlLease.batch_type) == self.batch_type)
        row = session.execute(select(EtlLease).where(*key).with_for_update()).scalar_one_or_none()
        now = utcnow()
        if row is None:
            expires = now + timedelta(seconds=self.ttl)
            session.add(EtlLease(tenant_id=self.tenant_id, batch_type=self.batch_type, holder=self.holder,
                                 acquired_at=now, expires_at=expires))  # fmt: skip
            return None
        if row.holder != self.holder and _aware(row.expires_at) > now:
            return row.holder
        if row.holder != self.holder:
            logger.warning("batch %s takes the lease batch %s let expire", self.holder, row.holder)
            row.acquired_at = now
        row.holder, row.expires_at = self.holder, now + timedelta(seconds=self.ttl)
        return None

    async def acquire(self, wait: float) -> None:
        """Take the lease, polling up to `wait` seconds while another batch holds it; else `BatchOverlap`."""
        started = time.monotonic()
        while True:
            holder = await self.try_acquire()
            if holder is None:
                return
            waited = time.monotonic() - started
            if waited >= wait:
                raise BatchOverlap(self.tenant_id, self.batch_type, holder, waited)
            await asyncio.sleep(min(wait - waited, random.uniform(_POLL / 2, _POLL * 1.5)))

    async def renew(self) -> bool:
        """Push the lease's end `ttl` on; False if it is no longer ours (it expired and another batch took it)."""

        def push(session: Session) -> bool:
            row = session.get(EtlLease, (self.tenant_id, self.batch_type))
            if row is None or row.holder != self.holder:
                return False
            row.expires_at = utcnow() + timedelta(seconds=self.ttl)
            return True

        return await self.store.write(push)

    async def release(self) -> None:
        await release_lease(self.store, self.holder)

    async def _holder(self) -> str | None:
        async with self.store.session() as session:
            row = await session.get(EtlLease, (self.tenant_id, self.batch_type))
            return row.holder if row else None

    async def hold(self, wait: float) -> None:
        """Acquire (or `BatchOverlap`), then renew every `ttl / 3` until `end`. A renewal that finds the lease
        gone sets `lost` and cancels the task that holds it: another batch may be writing now."""
        await self.acquire(wait)
        self._keeper = asyncio.create_task(self._keep(asyncio.current_task()))

    async def end(self) -> None:
        """Stop renewing and release the lease, if this batch holds it (a refused batch releases nothing)."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await self.release()

    @contextlib.asynccontextmanager
    async def held(self, wait: float) -> AsyncIterator[BatchLease]:
        """`hold` for the block, `end` after it."""
        await self.hold(wait)
        try:
            yield self
        finally:
            await asyncio.shield(self.end())

    async def _keep(self, owner: asyncio.Task[object] | None) -> None:
        deadline = time.monotonic() + self.ttl
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if await self.renew():
                    deadline = time.monotonic() + self.ttl
                    continue
            except Exception as ex:  # the database is away: try again until the lease would have ended
                logger.warning("batch %s could not renew its lease: %s", self.holder, type(ex).__name__)
                if time.monotonic() < deadline:
                    continue
            self.lost = True
            logger.error("batch %s lost its lease on %s/%s", self.holder, self.tenant_id, self.batch_type)
            if owner is not None:
                owner.cancel()
            return


async def release_lease(store: AuditStore, holder: str) -> None:
    """Delete every lease `holder` holds (its batch ended, or a hook saw its process die)."""
    statement = delete(EtlLease).where(col(EtlLease.holder) == holder)
    await store.write(lambda session: session.execute(statement))


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; the audit tables hold UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
