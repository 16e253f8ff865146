"""A private PostgreSQL server on a free loopback port, for tests and benchmarks; stopped by its PID.

`initdb` makes a throwaway cluster in a temporary directory (trust, or a password for TCP when one is given),
then the `postgres` binary itself runs in the foreground, so the PID we hold is the postmaster's. It listens
on 127.0.0.1 and a Unix socket in that directory only, and syncs nothing to disk. As root it runs as the
`postgres` system user (PostgreSQL refuses root), which Debian's package creates.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from prefect_restful_etl.deployments.redis_server import free_port

SUPERUSER = "etl"
_SYSTEM_USER = "postgres"  # who runs the server when we are root
_DEBIAN_BINARIES = Path("/usr/lib/postgresql")


class PostgresServerNotFound(FileNotFoundError):
    """No `initdb` and `postgres` on PATH nor under /usr/lib/postgresql/*/bin (Debian: `apt-get install postgresql`)."""


class PostgresServerError(RuntimeError):
    """initdb failed, or postgres exited or did not accept connections before the deadline."""


def find_binaries() -> tuple[str, str]:
    """(`initdb`, `postgres`): from PATH, else from the newest /usr/lib/postgresql/<version>/bin."""
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb and postgres:
        return initdb, postgres
    versions = sorted(
        (path for path in _DEBIAN_BINARIES.glob("*/bin") if (path / "initdb").is_file() and (path / "postgres").is_file()),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
    )
    if not versions:
        raise PostgresServerNotFound(
            "initdb and postgres are neither on PATH nor under /usr/lib/postgresql/*/bin "
            "(Debian: apt-get install postgresql)"
        )
    return str(versions[-1] / "initdb"), str(versions[-1] / "postgres")


class PostgresServer:
    """Start with `start()` (or `with PostgresServer() as server:`), then use `server.url`; `stop()` ends it.

    `password` makes TCP connections authenticate (SCRAM), and `url` then carries it: for tests that prove a
    password never shows. Without it every connection is trusted.
    """

    def __init__(self, *, password: str | None = None, binaries: tuple[str, str] | None = None) -> None:
        self.initdb, self.postgres = binaries or find_binaries()
        self.password = password
        self.user = SUPERUSER
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._account = _system_account() if os.geteuid() == 0 else None  # (uid, gid) to run as, when root

    @property
    def pid(self) -> int:
        if self._process is None:
            raise PostgresServerError("postgres is not running")
        return self._process.pid

    @property
    def url(self) -> str:
        """`postgresql://etl[:password]@127.0.0.1:<port>/postgres`."""
        return self.database_url("postgres")

    def database_url(self, database: str) -> str:
        auth = f"{self.user}:{quote(self.password, safe='')}" if self.password else self.user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """initdb, then start and wait until it accepts connections; a port taken in between costs one more try."""
        self._dir = tempfile.TemporaryDirectory(prefix="restful-etl-postgres-")
        try:
            self._initdb(timeout)
            last_error: PostgresServerError | None = None
            for _attempt in range(3):
                try:
                    self._spawn(timeout)
                    return self
                except PostgresServerError as ex:
                    last_error = ex
                    self._end_process()
            assert last_error is not None
            raise last_error
        except BaseException:
            self._dir.cleanup()
            self._dir = None
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGINT (fast shutdown) by PID, wait, kill if it lingers; remove the temporary directory."""
        self._end_process(timeout)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def create_database(self, name: str) -> str:
        """`CREATE DATABASE name`, empty; its URL. Callable from sync code, inside a running event loop or not."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"not a plain database name: {name!r}")

        async def create() -> None:
            import asyncpg

            connection = await asyncpg.connect(self.url, timeout=10)
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            finally:
                await connection.close()

        errors: list[BaseException] = []
        worker = threading.Thread(target=_run_collecting, args=(create, errors), name="create-database")
        worker.start()
        worker.join()
        if errors:
            raise errors[0]
        return self.database_url(name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def _data(self) -> Path:
        assert self._dir is not None
        return Path(self._dir.name) / "data"

    def _initdb(self, timeout: float) -> None:
        assert self._dir is not None
        root = Path(self._dir.name)
        args = [self.initdb, "-D", str(self._data), "-U", self.user, "-E", "UTF8", "--locale=C", "--no-sync",
                "--auth-local=trust"]  # fmt: skip
        pwfile = root / "pwfile"
        if self.password:
            descriptor = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(self.password + "\n")
            args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            args += ["--auth-host=trust"]
        if self._account:
            for path in (root, pwfile):
                if path.exists():
                    os.chown(path, *self._account)
        log = root / "initdb.log"
        with log.open("wb") as out:
            done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=root,
                                  timeout=timeout, check=False, **self._as_account())  # fmt: skip
        pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise PostgresServerError(f"initdb exited with {done.returncode}: {_tail(log)}")

    def _spawn(self, timeout: float) -> None:
        assert self._dir is not None
        self.port = free_port()
        log = Path(self._dir.name) / f"postgres-{self.port}.log"
        args = [
            self.postgres,
            "-D", str(self._data),
            "-p", str(self.port),
            "-k", self._dir.name,
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip
        with log.open("wb") as out:  # the child keeps its own descriptor
            self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             cwd=self._dir.name, **self._as_account())  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PostgresServerError(f"postgres exited with {self._process.returncode}: {_tail(log)}")
            if _accepts_connections(self.port, self.user):
                return
            time.sleep(0.05)  # polling interval, not a wait for readiness: the deadline bounds the loop
        raise PostgresServerError(f"postgres did not accept connections within {timeout} s: {_tail(log)}")

    def _as_account(self) -> dict[str, Any]:
        """Popen's arguments that run the child as the system account (no root groups kept); none when not root."""
        if self._account is None:
            return {}
        uid, gid = self._account
        return {"user": uid, "group": gid, "extra_groups": []}

    def _end_process(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)  # "fast" shutdown: roll back open transactions, close clients
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def _run_collecting(make: Callable[[], Coroutine[Any, Any, None]], errors: list[BaseException]) -> None:
    try:
        asyncio.run(make())
    except BaseException as ex:  # handed to the calling thread
        errors.append(ex)


def _accepts_connections(port: int, user: str) -> bool:
    """True once the server answers a protocol 3.0 startup message with an authentication request ('R').

    While it starts up (or recovers) it answers with an error ('E', "the database system is starting up").
    """
    body = struct.pack("!i", 196608) + b"user\0" + user.encode() + b"\0database\0postgres\0\0"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(struct.pack("!i", len(body) + 4) + body)
            reply = sock.recv(1)
            if reply == b"R":
                sock.sendall(b"X\0\0\0\4")  # Terminate, so the server logs no broken connection
    except OSError:
        return False
    return reply == b"R"


def _system_account() -> tuple[int, int]:
    try:
        account = pwd.getpwnam(_SYSTEM_USER)
    except KeyError as ex:
        raise PostgresServerError(
            f"PostgreSQL will not run as root, and there is no {_SYSTEM_USER!r} system user to run it as "
            "(Debian's postgresql package creates it)"
        ) from ex
    return account.pw_uid, account.pw_gid


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


__all__ = ["PostgresServer", "PostgresServerError", "PostgresServerNotFound", "find_binaries"]
