"""The audit database: batch and job rows, error events, screens and watermarks, over async SQLAlchemy.

SQLite (a file) by default; PostgreSQL or any async-capable SQLAlchemy URL in production.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from prefect_restful_etl.tasks.engine.audit.tables import (
    COUNT_FIELDS,
    EtlBatch,
    EtlErrorEvent,
    EtlJob,
    EtlScreen,
    EtlWatermark,
    utcnow,
)

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}


def async_url(url: str) -> str:
    """`sqlite:///audit.db` -> `sqlite+aiosqlite:///audit.db`; a URL with a driver is kept as it is."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False) if driver else url


class AuditStore:
    """Reads and writes the audit tables; one per process and database URL (see `open`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, url: str) -> AuditStore:
        """Connect, creating the tables (and the SQLite file's folder) when they are missing."""
        parsed = make_url(async_url(url))
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, pool_pre_ping=True)
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        async with engine.connect() as conn:
            current = await conn.run_sync(_schema_is_current)
        if not current:
            async with engine.begin() as conn:
                await _lock_schema(conn)
                await conn.run_sync(SQLModel.metadata.create_all)
                await conn.run_sync(_add_missing_counts)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    def session(self) -> AsyncSession:
        return AsyncSession(self.engine, expire_on_commit=False)

    async def add(self, *rows: SQLModel) -> None:
        async with self.session() as session:
            session.add_all(rows)
            await session.commit()

    async def merge(self, row: SQLModel) -> None:
        async with self.session() as session:
            await session.merge(row)
            await session.commit()

    async def get_batch(self, batch_id: str) -> EtlBatch | None:
        async with self.session() as session:
            return await session.get(EtlBatch, batch_id)

    async def update_batch(self, batch_id: str, **values: Any) -> None:
        await self._update(EtlBatch, batch_id, values)

    async def update_job(self, job_id: str, **values: Any) -> None:
        await self._update(EtlJob, job_id, values)

    async def _update(self, table: type[SQLModel], key: str, values: dict[str, Any]) -> None:
        async with self.session() as session:
            row = await session.get(table, key)
            if row is None:
                raise KeyError(f"no {table.__tablename__} row {key}")
            for name, value in values.items():
                setattr(row, name, value)
            await session.commit()

    async def jobs(self, batch_id: str) -> Sequence[EtlJob]:
        async with self.session() as session:
            result = await session.exec(
                select(EtlJob).where(EtlJob.batch_id == batch_id).order_by(col(EtlJob.started_at))
            )
            return result.all()

    async def batches(self, tenant_id: str, batch_type: str | None = None, limit: int = 20) -> Sequence[EtlBatch]:
        query = select(EtlBatch).where(EtlBatch.tenant_id == tenant_id)
        if batch_type:
            query = query.where(EtlBatch.batch_type == batch_type)
        async with self.session() as session:
            result = await session.exec(query.order_by(col(EtlBatch.started_at).desc()).limit(limit))
            return result.all()

    async def add_error_events(self, events: Iterable[EtlErrorEvent]) -> None:
        events = list(events)
        if events:
            await self.add(*events)

    async def error_events(self, batch_id: str, limit: int | None = None) -> Sequence[EtlErrorEvent]:
        query = select(EtlErrorEvent).where(EtlErrorEvent.batch_id == batch_id).order_by(col(EtlErrorEvent.id))
        async with self.session() as session:
            result = await session.exec(query.limit(limit) if limit else query)
            return result.all()

    async def get_watermark(self, tenant_id: str, batch_type: str, job: str) -> EtlWatermark | None:
        async with self.session() as session:
            return await session.get(EtlWatermark, (tenant_id, batch_type, job))

    async def set_watermark(self, watermark: EtlWatermark) -> None:
        watermark.updated_at = utcnow()
        await self.merge(watermark)

    async def clear_watermark(self, tenant_id: str, batch_type: str, job: str) -> None:
        async with self.session() as session:
            row = await session.get(EtlWatermark, (tenant_id, batch_type, job))
            if row is not None:
                await session.delete(row)
                await session.commit()

    async def sync_screens(self, batch_type: str, rows: Iterable[EtlScreen]) -> None:
        """Make the screen dimension of `batch_type` the given rows: upsert them by job and screen name, and
        delete the rows of screens (or jobs) the configuration no longer has, whose processing orders
        would otherwise collide with the new ones. Error events keep their screen's name and severity."""
        wanted = {(row.job, row.name): row for row in rows}
        async with self.session() as session:
            existing = (await session.exec(select(EtlScreen).where(EtlScreen.batch_type == batch_type))).all()
            for current in existing:
                row = wanted.pop((current.job, current.name), None)
                if row is None:
                    await session.delete(current)
                    continue
                for name in ("type", "category", "severity", "action", "processing_order"):
                    setattr(current, name, getattr(row, name))
            session.add_all(wanted.values())
            await session.commit()


def _schema_is_current(connection: Connection) -> bool:
    inspector = inspect(connection)
    if not set(SQLModel.metadata.tables) <= set(inspector.get_table_names()):
        return False
    return all(_missing_counts(inspector, table) == [] for table in (EtlBatch.__tablename__, EtlJob.__tablename__))


def _missing_counts(inspector: Any, table: str) -> list[str]:
    present = {column["name"] for column in inspector.get_columns(table)}
    return [name for name in COUNT_FIELDS if name not in present]


# Any constant will do: the key of the one advisory lock this schema takes on PostgreSQL.
_SCHEMA_LOCK = 0x7265_7374_6574_6C  # "restetl"


async def _lock_schema(conn: AsyncConnection) -> None:
    """Hold the database's write lock until the tables are made: `create_all` checks which are missing, then
    creates them, and two batches opening an empty database at once would both create them (one fails).
    Taken only when something is missing, so opening a current database never waits for a writer."""
    backend = conn.dialect.name
    if backend == "postgresql":  # DDL is transactional there: the lock ends with the transaction
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
    elif backend == "sqlite":  # the driver begins no transaction before DDL; busy_timeout waits for the lock
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


def _add_missing_counts(connection: Connection) -> None:
    """Add the counts a database created by an earlier release lacks (`filtered`, `duplicates`), 0 in the rows it holds:
    `create_all` makes missing tables, never missing columns, and every insert names each count."""
    inspector = inspect(connection)
    for table in (EtlBatch.__tablename__, EtlJob.__tablename__):
        for name in _missing_counts(inspector, table):
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0"))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets a reader (the CLI, a test) look while a batch writes; busy_timeout rides out short locks
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def elapsed(started: datetime, ended: datetime | None) -> float | None:
    if ended is None:
        return None
    return (ended - started).total_seconds()
