"""A private `prefect server` on a free loopback port with its own PREFECT_HOME; stopped by its process group.

For integration tests and local development against a real server (UI, REST API, events websocket).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from prefect_restful_etl.deployments.redis_server import free_port


class PrefectServerError(RuntimeError):
    """The server exited or did not answer /api/health before the deadline."""


class PrefectServer:
    """`with PrefectServer() as server:` then point clients at `server.api_url` (see `client_environment`)."""

    def __init__(self, home: Path | None = None) -> None:
        self._tmp = None if home else tempfile.TemporaryDirectory(prefix="restful-etl-prefect-")
        self.home = home or Path(self._tmp.name)  # type: ignore[union-attr]
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.home / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise PrefectServerError("the server is not running")
        return self._process.pid

    @property
    def database(self) -> Path:
        return self.home / "prefect.db"

    def client_environment(self) -> dict[str, str]:
        """Variables for a process (a worker, `flow.serve()`, the CLI) that talks to this server."""
        return {
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }

    def start(self, timeout: float = 90.0) -> PrefectServer:
        self.port = free_port()
        env = os.environ | self.client_environment()
        env.pop("PREFECT_API_URL")
        env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
        env["PREFECT_SERVER_API_PORT"] = str(self.port)
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{self.database}"
        with self._log.open("wb") as log:
            # its own session, so stop() can end the server and any child it spawned by process group
            self._process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise PrefectServerError(f"prefect server exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise PrefectServerError(f"prefect server did not answer within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
