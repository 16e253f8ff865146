"""A private redis-server process on a free loopback port, for tests and benchmarks; stopped by its PID.

It keeps nothing on disk (`--save "" --appendonly no`) and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote


class RedisServerNotFound(FileNotFoundError):
    """No `redis-server` executable on PATH (Debian: `apt-get install redis-server`)."""


class RedisServerError(RuntimeError):
    """redis-server exited or did not answer PING before the deadline."""


class RedisServer:
    """Start with `start()` (or `with RedisServer() as server:`), then use `server.url`; `stop()` ends it.

    `password` sets `requirepass`, and `url` then carries it: for tests that prove a password never shows.
    """

    def __init__(self, *, password: str | None = None, executable: str | None = None) -> None:
        found = executable or shutil.which("redis-server")
        if not found:
            raise RedisServerNotFound("redis-server is not on PATH (Debian: apt-get install redis-server)")
        self.executable = found
        self.password = password
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RedisServerError("redis-server is not running")
        return self._process.pid

    @property
    def url(self) -> str:
        """`redis://[:password@]127.0.0.1:<port>/0`."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start and wait for PING; a port taken between choosing and binding it costs one more try."""
        self._dir = tempfile.TemporaryDirectory(prefix="restful-etl-redis-")
        last_error: RedisServerError | None = None
        for _attempt in range(3):
            try:
                self._spawn(timeout)
                return self
            except RedisServerError as ex:
                last_error = ex
                self._end_process()
        self._dir.cleanup()
        self._dir = None
        assert last_error is not None
        raise last_error

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate by PID, wait, kill if it lingers; remove the temporary directory."""
        self._end_process(timeout)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, timeout: float) -> None:
        assert self._dir is not None
        self.port = free_port()
        log = Path(self._dir.name) / f"redis-{self.port}.log"
        args = [
            self.executable,
            "--save", "",
            "--appendonly", "no",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--protected-mode", "yes",
            "--dir", self._dir.name,
            "--daemonize", "no",
            "--logfile", str(log),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RedisServerError(f"redis-server exited with {self._process.returncode}: {_tail(log)}")
            if _answers_ping(self.port):
                return
            time.sleep(0.02)  # polling interval, not a wait for readiness: the deadline bounds the loop
        raise RedisServerError(f"redis-server did not answer PING within {timeout} s: {_tail(log)}")

    def _end_process(self, timeout: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def free_port() -> int:
    """A port the kernel had free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    """True once the server replies to PING; `-NOAUTH` (a password is set) is an answer too."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


__all__ = ["RedisServer", "RedisServerError", "RedisServerNotFound", "free_port"]
