"""The private PostgreSQL server: the postmaster's PID, loopback only, a password when asked, stopped by PID."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import asyncpg
import pytest

from prefect_restful_etl.deployments.postgres_server import PostgresServer, PostgresServerNotFound, find_binaries

pytestmark = pytest.mark.integration


def test_the_pid_is_the_postmaster_listening_on_loopback_only(postgres_server: PostgresServer) -> None:
    assert postgres_server.url == f"postgresql://etl@127.0.0.1:{postgres_server.port}/postgres"
    command = Path(f"/proc/{postgres_server.pid}/cmdline").read_bytes().split(b"\0")
    assert Path(command[0].decode()).name == "postgres"
    assert b"listen_addresses=127.0.0.1" in command and str(postgres_server.port).encode() in command
    with socket.create_connection(("127.0.0.1", postgres_server.port), timeout=2):
        pass


async def test_each_new_database_starts_empty(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("test_server_empty")
    connection = await asyncpg.connect(url)
    try:
        tables = await connection.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert (await connection.fetchval("SELECT current_database()"), tables) == ("test_server_empty", 0)
    finally:
        await connection.close()
    with pytest.raises(ValueError, match="plain database name"):
        postgres_server.create_database('x"; DROP DATABASE postgres; --')


async def test_a_password_server_refuses_a_wrong_password(private_postgres_server: PostgresServer) -> None:
    server = private_postgres_server
    assert server.password and server.url.startswith(f"postgresql://etl:{server.password}@127.0.0.1:")
    connection = await asyncpg.connect(server.url)
    await connection.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(server.url.replace(server.password, "wrong"))


def test_stop_ends_the_process_by_pid_and_removes_its_files(private_postgres_server: PostgresServer) -> None:
    pid = private_postgres_server.pid
    data = Path(os.readlink(f"/proc/{pid}/cwd"))  # the postmaster works in its data directory
    assert data.name == "data" and data.is_dir()
    private_postgres_server.stop()
    assert not data.parent.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_missing_binaries_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("prefect_restful_etl.deployments.postgres_server._DEBIAN_BINARIES", tmp_path)
    with pytest.raises(PostgresServerNotFound, match="apt-get install postgresql"):
        find_binaries()
    for version in ("9.6", "15", "13"):
        (tmp_path / version / "bin").mkdir(parents=True)
        for name in ("initdb", "postgres"):
            (tmp_path / version / "bin" / name).touch()
    assert find_binaries() == (str(tmp_path / "15/bin/initdb"), str(tmp_path / "15/bin/postgres"))
