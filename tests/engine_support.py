"""Helpers for engine tests: a batch context on a memory stage and a temporary SQLite audit database (or the
audit database a test names, e.g. its `audit_url`)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch
from prefect_restful_etl.tasks.engine.context import BatchContext
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage


@asynccontextmanager
async def batch_context(
    tmp_path: Path,
    apis: dict[str, tuple[ApiConfig, Credentials | None]],
    *,
    tenant_id: str = "t1",
    full_refresh: bool = False,
    audit_url: str | None = None,
) -> AsyncIterator[BatchContext]:
    audit = await AuditStore.open(audit_url or f"sqlite:///{tmp_path / 'audit.db'}")
    clients = {name: RestClient(api, creds) for name, (api, creds) in apis.items()}
    ctx = BatchContext(
        tenant_id=tenant_id,
        batch_id=str(uuid.uuid4()),
        batch_type="test-batch",
        stage=MemoryStage(),
        audit=audit,
        clients=clients,
        full_refresh=full_refresh,
        secrets=[s for _, c in apis.values() if c for s in c.secret_values()],
    )
    await audit.add(EtlBatch(batch_id=ctx.batch_id, tenant_id=tenant_id, batch_type="test-batch"))
    try:
        yield ctx
    finally:
        await ctx.stage.drop_batch(tenant_id, ctx.batch_id)
        for client in clients.values():
            await client.__aexit__(None, None, None)
        await audit.close()
