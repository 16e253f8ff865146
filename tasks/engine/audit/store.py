"""The audit database: batch and job rows, error events, screens and watermarks, over async SQLAlchemy.

SQLite (a file) by default; PostgreSQL or any async-capable SQLAlchemy URL in production. Many batches
write at once (one process may run many): how a write stays short and safe is `transactions`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session
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
from prefect_restful_etl.tasks.engine.audit.transactions import (
    AsyncWriter,
    SqliteWriter,
    T,
    Work,
    Writer,
    sqlite_pragmas,
    upsert,
)

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}


def async_url(url: str) -> str:
    """`sqlite:///audit.db` -> `sqlite+aiosqlite:///audit.db`; a URL with a driver is kept as it is."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False) if driver else url


class AuditStore:
    """Reads and writes the audit tables; one per batch and database URL (see `open`).

    Reads go through the async engine; every write is one short transaction run by the store's writer
    (`transactions`): on SQLite in the process's one writer thread, never awaiting while it holds the lock.
    """

    def __init__(self, engine: AsyncEngine, writer: Writer | None = None) -> None:
        self.engine = engine
        self._writer = writer or AsyncWriter(engine)

    @classmethod
    async def open(cls, url: str) -> AuditStore:
        """Connect, creating the tables (and the SQLite file's folder) when they are missing."""
        parsed = make_url(async_url(url))
        sqlite = parsed.get_backend_name() == "sqlite"
        on_disk = sqlite and parsed.database not in (None, "", ":memory:")
        if on_disk:
            Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, pool_pre_ping=True)
        if sqlite:
            event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        store = cls(engine, SqliteWriter(parsed) if on_disk else None)
        try:
            async with engine.connect() as conn:
                current = await conn.run_sync(_schema_is_current)
            if not current:
                await store._writer.run(_create_schema)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        await self._writer.close()
        await self.engine.dispose()

    def session(self) -> AsyncSession:
        """A session for reading (a query the store has no method for); write through the store's methods."""
        return AsyncSession(self.engine, expire_on_commit=False)

    async def write(self, work: Work[T]) -> T:
        """Run `work(session)` as one transaction of its own (see `transactions`); it must not block for long."""
        return await self._writer.run(work)

    async def add(self, *rows: SQLModel) -> None:
        await self.write(lambda session: session.add_all(rows))

    async def merge(self, row: SQLModel) -> None:
        """Insert `row`, or overwrite the row with its primary key."""
        keys = [column.name for column in type(row).__table__.primary_key]  # type: ignore[attr-defined]
        await self.write(lambda session: upsert(session, row, keys))

    async def get_batch(self, batch_id: str) -> EtlBatch | None:
        async with self.session() as session:
            return await session.get(EtlBatch, batch_id)

    async def update_batch(self, batch_id: str, **values: Any) -> None:
        await self._update(EtlBatch, batch_id, values)

    async def update_job(self, job_id: str, **values: Any) -> None:
        await self._update(EtlJob, job_id, values)

    async def _update(self, table: type[SQLModel], key: str, values: dict[str, Any]) -> None:
        def update_row(session: Session) -> None:
            row = session.get(table, key)
            if row is None:
                raise KeyError(f"no {table.__tablename__} row {key}")
            for name, value in values.items():
                setattr(row, name, value)

        await self.write(update_row)

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
        row = delete(EtlWatermark).where(
            col(EtlWatermark.tenant_id) == tenant_id,
            col(EtlWatermark.batch_type) == batch_type,
            col(EtlWatermark.job) == job,
        )
        await self.write(lambda session: session.execute(row))

    async def sync_screens(self, batch_type: str, rows: Iterable[EtlScreen]) -> None:
        """Make the screen dimension of `batch_type` the given rows: upsert them by job and screen name, and
        delete the rows of screens (or jobs) the configuration no longer has, whose processing orders
        would otherwise collide with the new ones. Error events keep their screen's name and severity.

        Every batch of the batch type calls this as it starts, many at once: a dimension already as given is
        only read, and the writes are upserts, so batches starting together never collide on a row."""
        wanted = {(row.job, row.name): row for row in rows}
        async with self.session() as session:
            existing = (await session.exec(select(EtlScreen).where(EtlScreen.batch_type == batch_type))).all()
        if {(row.job, row.name): _screen_fields(row) for row in existing} == {
            key: _screen_fields(row) for key, row in wanted.items()
        }:
            return
        await self.write(lambda session: _replace_screens(session, batch_type, wanted))


_SCREEN_FIELDS = ("type", "category", "severity", "action", "processing_order")


def _screen_fields(row: EtlScreen) -> tuple[Any, ...]:
    return tuple(getattr(row, name) for name in _SCREEN_FIELDS)


def _replace_screens(session: Session, batch_type: str, wanted: dict[tuple[str, str], EtlScreen]) -> None:
    existing = session.execute(select(EtlScreen).where(EtlScreen.batch_type == batch_type)).scalars()
    gone = [row.id for row in existing if (row.job, row.name) not in wanted]
    if gone:  # a statement, not ORM deletes: a concurrent writer may have deleted them first
        session.execute(delete(EtlScreen).where(col(EtlScreen.id).in_(gone)))
    for key in sorted(wanted):  # one order for every writer: two transactions never wait on each other's rows
        row = wanted[key]
        upsert(session, EtlScreen(batch_type=batch_type, **row.model_dump(exclude={"id", "batch_type"})), _SCREEN_KEY)


_SCREEN_KEY = ("batch_type", "job", "name")


def _create_schema(session: Session) -> None:
    """The tables and count columns that are missing, made under the database's write lock: `create_all`
    checks which tables are missing, then creates them, and two batches opening an empty database at once
    would both create them (one fails). Taken only when something is missing, so opening a current database
    never waits for a writer."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":  # DDL is transactional there: the lock ends with the transaction
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
    # (SQLite: the writer's BEGIN IMMEDIATE holds the file's write lock already.)
    if not _schema_is_current(connection):
        SQLModel.metadata.create_all(connection)
        _add_missing_counts(connection)


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


def _add_missing_counts(connection: Connection) -> None:
    """Add the counts a database created by an earlier release lacks (`filtered`, `duplicates`), 0 in the rows it holds:
    `create_all` makes missing tables, never missing columns, and every insert names each count."""
    inspector = inspect(connection)
    for table in (EtlBatch.__tablename__, EtlJob.__tablename__):
        for name in _missing_counts(inspector, table):
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0"))


def elapsed(started: datetime, ended: datetime | None) -> float | None:
    if ended is None:
        return None
    return (ended - started).total_seconds()
