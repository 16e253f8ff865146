"""How the audit store writes: each write is one short transaction that never awaits while it holds a lock.

SQLite has one write lock per database file. Through an async driver, a transaction holds it across every
round trip to the event loop (BEGIN, each statement, COMMIT); with twenty batches busy on one loop each trip
waits for the others' slices of work, and the writers queued behind the lock run out of `busy_timeout`
(`database is locked`). So on SQLite a write runs whole, synchronously, in one thread of the process (one
writer per process, in order of arrival), from `BEGIN IMMEDIATE` (which takes the lock at once, so a writer
waits at its start, never half way) to COMMIT: the lock is held for the statements' own time only.
PostgreSQL locks rows, not the database, so its writes go through the async driver as they are.

A write is a plain function of a SQLAlchemy `Session`; `upsert` is the insert-or-update both databases do in
one statement, so two batches writing the same row at once both succeed (the later one wins).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

T = TypeVar("T")
Work = Callable[[Session], T]

SQLITE_BUSY_TIMEOUT_MS = 30_000  # another process's writer: its transactions are short, so this is a long wait


class Writer(Protocol):
    """Runs one write (a function of a Session) as one committed transaction."""

    async def run(self, work: Work[T]) -> T: ...

    async def close(self) -> None: ...


class AsyncWriter:
    """Writes through the async engine (PostgreSQL): row locks, so awaiting inside a transaction is harmless."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, work: Work[T]) -> T:
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            result = await session.run_sync(work)
            await session.commit()
            return result

    async def close(self) -> None:
        return None  # the store disposes the engine


class _WriterThread:
    """The process's one SQLite writer thread (every file, every event loop): writes queue here, never at the
    lock. Made again in a forked child, which inherits the executor but not its thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._executor: ThreadPoolExecutor | None = None

    def __call__(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restful-etl-audit-sqlite")
                self._pid = os.getpid()
            return self._executor


_sqlite_thread = _WriterThread()


class SqliteWriter:
    """Writes to a SQLite file synchronously in the process's writer thread, each from BEGIN IMMEDIATE to COMMIT."""

    def __init__(self, url: URL) -> None:
        self._engine: Engine = create_engine(url.set(drivername="sqlite+pysqlite"))
        event.listen(self._engine, "connect", _sqlite_writer_connection)
        event.listen(self._engine, "begin", _begin_immediate)

    async def run(self, work: Work[T]) -> T:
        return await asyncio.wrap_future(_sqlite_thread().submit(self._transaction, work))

    def _transaction(self, work: Work[T]) -> T:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            return work(session)

    async def close(self) -> None:
        # In the writer thread, after the writes already queued: none of them may find its engine gone.
        await asyncio.wrap_future(_sqlite_thread().submit(self._engine.dispose))


def sqlite_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """WAL lets readers (the CLI, a test) look while a batch writes. busy_timeout comes first: switching a new
    file to WAL needs its lock too, and another process may be holding it."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_writer_connection(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling off: it would BEGIN (deferred) only before the first INSERT,
    # after the reads, and a deferred transaction that meets a newer write when it upgrades fails at once.
    dbapi_connection.isolation_level = None
    sqlite_pragmas(dbapi_connection)


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def upsert(session: Session, row: SQLModel, keys: Sequence[str]) -> None:
    """Insert `row`, or update the row with its `keys` in place: one statement on SQLite and PostgreSQL, so a
    concurrent writer of the same row never makes it fail. A primary key left None (an autoincrement id) is
    the database's to give."""
    table = type(row).__table__  # type: ignore[attr-defined]
    values = {column.name: getattr(row, column.name) for column in table.columns}
    values = {name: value for name, value in values.items() if value is not None or not table.c[name].primary_key}
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:  # another database: a read then a write, safe only while one writer at a time touches the row
        session.merge(row)
        return
    statement = insert(table).values(values)
    changes = {name: statement.excluded[name] for name in values if name not in keys}
    session.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changes))
