"""Both demo APIs in one process on free loopback ports, and `DemoApis`, which runs that process for a test,
the benchmark or the demo and stops it by PID.

`python -m prefect_restful_etl.deployments.demo.apis [--crm-customers N] [--seed S]` prints one JSON line,
`{"crm": "http://127.0.0.1:PORT", "accounting": "http://127.0.0.1:PORT", "pid": PID}`, once both accept
connections. Secrets come from the environment (`DEMO_CRM_TOKEN` ...), never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from secrets import token_urlsafe
from typing import IO, Self

import httpx
import uvicorn
from fastapi import FastAPI

from prefect_restful_etl.deployments.demo.accounting import create_accounting_app
from prefect_restful_etl.deployments.demo.crm import CrmSecrets, create_crm_app

MODULE = "prefect_restful_etl.deployments.demo.apis"
HOST = "127.0.0.1"
CRM_ENV = {
    "token": "DEMO_CRM_TOKEN",
    "username": "DEMO_CRM_USERNAME",
    "password": "DEMO_CRM_PASSWORD",
    "api_key": "DEMO_CRM_API_KEY",
    "client_id": "DEMO_CRM_CLIENT_ID",
    "client_secret": "DEMO_CRM_CLIENT_SECRET",
}
ACCOUNTING_ENV = "DEMO_ACCOUNTING_API_KEY"
DEFAULT_ACCOUNTING_API_KEY = "demo-accounting-api-key"


class DemoApisError(RuntimeError):
    """The demo APIs process did not start (its stderr is in the message) or did not say where it listens."""


def crm_secrets_from_env(environ: Mapping[str, str]) -> CrmSecrets:
    """The CRM's secrets from `DEMO_CRM_*`, each falling back to the demo default."""
    defaults = CrmSecrets()
    return CrmSecrets(**{name: environ.get(var) or getattr(defaults, name) for name, var in CRM_ENV.items()})


def accounting_api_key_from_env(environ: Mapping[str, str]) -> str:
    return environ.get(ACCOUNTING_ENV) or DEFAULT_ACCOUNTING_API_KEY


# --- the process: two uvicorn servers on one loop --------------------------------------------------------------


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the runner.

    Each `uvicorn.Server` takes SIGTERM for itself and re-raises it on the way out, so with two servers on one
    loop the first would kill the process instead of letting it exit cleanly.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _loopback_socket() -> socket.socket:
    """Bound here, listened on by uvicorn: the port is ours before the server starts, so there is no race.

    `IPPROTO_TCP` explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it every
    response (headers and body written apart) waits 40 ms for the client's delayed ACK.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((HOST, 0))
    return sock


def _server(app: FastAPI) -> _Server:
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, log_config=None, lifespan="off", timeout_graceful_shutdown=5
    )
    return _Server(config)


def _stop_on_eof(fd: int, loop: asyncio.AbstractEventLoop, servers: list[_Server]) -> None:
    """Stop when the parent closes our stdin (it died or is done), so no orphan keeps the ports.

    `os.read` on the raw descriptor: a daemon thread blocked in a buffered read aborts the interpreter at exit.
    """
    while os.read(fd, 65536):
        pass
    loop.call_soon_threadsafe(_request_stop, servers)


def _request_stop(servers: Iterable[_Server]) -> None:
    for server in servers:
        server.should_exit = True


async def _until_started(servers: list[_Server], tasks: list[asyncio.Task[None]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks) or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def serve(crm: FastAPI, accounting: FastAPI, *, stop_on_stdin_eof: bool = False, timeout: float = 30.0) -> int:
    """Run both apps until SIGTERM or SIGINT (or stdin's end); print the ready line once both listen."""
    loop = asyncio.get_running_loop()
    servers, sockets = [_server(crm), _server(accounting)], [_loopback_socket(), _loopback_socket()]
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _request_stop, servers)
    if stop_on_stdin_eof:
        threading.Thread(target=_stop_on_eof, args=(sys.stdin.fileno(), loop, servers), daemon=True).start()
    tasks = [asyncio.create_task(s.serve(sockets=[sock])) for s, sock in zip(servers, sockets, strict=True)]
    started = await _until_started(servers, tasks, timeout)
    if started:
        urls = [f"http://{HOST}:{sock.getsockname()[1]}" for sock in sockets]
        print(json.dumps({"crm": urls[0], "accounting": urls[1], "pid": os.getpid()}), flush=True)
    else:
        _request_stop(servers)
    await asyncio.gather(*tasks)
    return 0 if started else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Run the demo CRM and accounting APIs on free loopback ports; print them as one JSON line.",
    )
    parser.add_argument("--crm-customers", type=int, default=200, help="how many CRM customers (default 200)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the generated CRM data (default 42)")
    parser.add_argument("--stop-on-stdin-eof", action="store_true", help="exit when stdin closes (for DemoApis)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    crm = create_crm_app(crm_secrets_from_env(os.environ), customers=args.crm_customers, seed=args.seed)
    accounting = create_accounting_app(accounting_api_key_from_env(os.environ))
    return asyncio.run(serve(crm, accounting, stop_on_stdin_eof=args.stop_on_stdin_eof))


# --- the handle: start the process, read where it listens, stop it ---------------------------------------------


class DemoApis:
    """The demo APIs in a subprocess with fresh secrets: `with DemoApis() as apis: ... apis.crm_url ...`."""

    def __init__(
        self, *, crm_customers: int = 200, seed: int = 42, ready_timeout: float = 30.0, stop_timeout: float = 10.0
    ) -> None:
        self.crm_customers, self.seed = crm_customers, seed
        self.ready_timeout, self.stop_timeout = ready_timeout, stop_timeout
        self.crm_token, self.crm_api_key = token_urlsafe(18), token_urlsafe(18)
        self.crm_username, self.crm_password = "demo-user", token_urlsafe(12)
        self.crm_client_id, self.crm_client_secret = "demo-client", token_urlsafe(18)
        self.accounting_api_key = token_urlsafe(18)
        self.crm_url = self.accounting_url = ""
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._control: httpx.Client | None = None  # kept: a new client costs more than the resets it serves

    def __repr__(self) -> str:  # never the secrets
        return f"DemoApis(crm_url={self.crm_url!r}, accounting_url={self.accounting_url!r}, pid={self.pid})"

    def environment(self) -> dict[str, str]:
        """The variables the process reads its secrets from."""
        crm = {var: getattr(self, f"crm_{name}") for name, var in CRM_ENV.items()}
        return {**crm, ACCOUNTING_ENV: self.accounting_api_key}

    def start(self) -> Self:
        command = [
            sys.executable,
            "-m",
            MODULE,
            "--crm-customers",
            str(self.crm_customers),
            "--seed",
            str(self.seed),
            "--stop-on-stdin-eof",
        ]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, **self.environment()},
        )
        self.pid = self._process.pid
        try:
            ready = json.loads(self._ready_line())
        except BaseException:
            self.stop()
            raise
        self.crm_url, self.accounting_url = ready["crm"], ready["accounting"]
        return self

    def _ready_line(self) -> str:
        """The process's first stdout line, polled until `ready_timeout`; a dead process is an error at once."""
        assert self._process is not None and self._process.stdout is not None
        lines: queue.Queue[bytes] = queue.Queue()
        stdout = self._process.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.05)
                if line.strip():
                    return line.decode()
                raise DemoApisError(f"demo APIs exited before they were ready:\n{self._stderr_tail()}")
        raise DemoApisError(f"demo APIs not ready after {self.ready_timeout}s:\n{self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-4000:].decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Send `sig` to the process by its PID, wait, kill it if it lingers; its exit code (None if not running)."""
        process, self._process = self._process, None
        if self._control is not None:
            self._control.close()
            self._control = None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(self.stop_timeout)
        for stream in (process.stdin, process.stdout, self._stderr):
            if stream is not None:
                stream.close()
        self._stderr = None
        return process.returncode

    def reset(self) -> None:
        """Back to a clean slate: CRM data as generated, accounting empty, no faults, stats at zero."""
        self._control = self._control or httpx.Client(timeout=10)
        for base in (self.crm_url, self.accounting_url):
            for method, path in (("POST", "reset"), ("DELETE", "faults"), ("POST", "reset-stats")):
                self._control.request(method, f"{base}/_control/{path}").raise_for_status()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    raise SystemExit(main())
