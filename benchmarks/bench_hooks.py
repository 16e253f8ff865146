"""Benchmark of real-time hooks, next to the polling they complement (not a test; run from the repository root):

    python -m benchmarks.bench_hooks [--events 2000] [--concurrency 16] [--changes 40] [--rounds 3]

On loopback, with a private redis-server (the intake's stage), a private `prefect server`, `restful-etl serve`
(the batch types and the hooks deployment, runner polling every second) and the demo APIs:

1. intake: `--events` signed hooks POSTed by `--concurrency` clients to the receiver (`restful-etl hooks
   serve`: signature, dedupe, stored on Redis before its 202), next to the same requests answered 202 by a bare
   Starlette app on uvicorn (no check, no storage): events per second accepted;
2. hook latency: `--changes` CRM customers changed one by one (the demo CRM sends a signed hook for each), each
   timed from its change to the record in the accounting API: median and p95;
3. polling: the same number of changes moved by an incremental run of the batch type's deployment created
   right after them (what an hourly schedule would start up to an hour later), `--rounds` times, timed likewise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, generate_key, seal

from tests.fixtures.servers.prefect import PrefectServer
from tests.fixtures.servers.redis import RedisServer
from tests.hooks_support import ReceiverProcess, customer, hook, hooks_config, tenant_secret
from tests.prefect_rest import RetryWhenBusy

TENANT = "bench"


def _post_all(url: str, hooks: list[tuple[bytes, dict[str, str]]], concurrency: int) -> tuple[float, list[int]]:
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            codes = list(pool.map(lambda h: client.post(url, content=h[0], headers=h[1]).status_code, hooks))
        return time.perf_counter() - started, codes


def bare_receiver() -> tuple[uvicorn.Server, str]:
    """The reference: 202 for any POST, nothing checked or stored, on uvicorn like the receiver."""

    async def accept(request: Any) -> Response:
        await request.body()
        return Response(b'{"status": "accepted"}', 202, media_type="application/json")

    app = Starlette(routes=[Route("/hooks/{rest:path}", accept, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


class Landing:
    """Polls the accounting API every 50 ms and notes when each external id first shows `email`."""

    def __init__(self, apis: DemoApis) -> None:
        self.apis, self.seen, self.wanted = apis, {}, {}  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def expect(self, external_id: str, email: str) -> None:
        self.wanted[external_id] = email
        self.seen.pop(external_id, None)

    def _poll(self) -> None:
        headers = {"X-API-Key": self.apis.accounting_api_key}
        with httpx.Client(timeout=10, headers=headers) as client:
            while not self._stop.is_set():
                body = client.get(f"{self.apis.accounting_url}/customers", params={"per_page": 1000}).json()
                now = time.monotonic()
                for row in body["data"]:
                    key = str(row.get("external_id"))
                    if key in self.wanted and row.get("email") == self.wanted[key] and key not in self.seen:
                        self.seen[key] = now
                time.sleep(0.05)

    def wait(self, keys: list[str], timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(k in self.seen for k in keys):
            if time.monotonic() > deadline:
                raise SystemExit(f"{sum(k not in self.seen for k in keys)} of {len(keys)} changes never landed")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


def _serve(env: dict[str, str], log: Path, in_process: bool = False) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect_restful_etl.deployments.cli.app",
                "serve",
                *(["--in-process"] * in_process),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _until(condition: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"not within {timeout}s: {what}")
        time.sleep(0.2)
    return value


def _run_batch(rest: httpx.Client, deployment_id: str, parameters: dict[str, Any]) -> str:
    run = rest.post(f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters, "tags": []})
    run_id = str(run.raise_for_status().json()["id"])
    _until(lambda: rest.get(f"/flow_runs/{run_id}").json()["state"]["type"] == "COMPLETED", "the batch completed")
    return run_id


def _pushed(args: Any, crm: httpx.Client, receiver: ReceiverProcess, landing: Landing, tag: str) -> list[float]:
    """`--changes` CRM changes, one every 0.25 s, each pushed by the CRM to the receiver: seconds until each landed."""
    url = f"{receiver.url}/hooks/crm-to-accounting/{TENANT}"
    crm.post("/_control/hooks", json={"url": url, "secret": tenant_secret(TENANT)}).raise_for_status()
    changed: dict[str, float] = {}
    try:
        for n in range(args.changes):
            ident, email = str(1 + n % 150), f"{tag}-{n}@bench.example"
            landing.expect(ident, email)
            changed[ident] = time.monotonic()
            crm.patch(f"/customers/{ident}", json={"email": email}).raise_for_status()
            time.sleep(0.25)
        landing.wait(list(changed))
    finally:
        crm.delete("/_control/hooks")
    return [landing.seen[k] - t for k, t in changed.items()]


def _figures(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"{name}: change -> accounting API, median {statistics.median(ordered):.2f} s, p95 {p95:.2f} s, "
        f"min {ordered[0]:.2f} s, max {ordered[-1]:.2f} s ({len(ordered)} changes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--serve-in-process",
        action="store_true",
        help="serve the deployments with `restful-etl serve --in-process` (each micro-batch a task, not a process)",
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    with RedisServer() as redis, PrefectServer() as prefect, DemoApis(crm_customers=200) as apis:
        key = generate_key()
        env = {
            **os.environ,
            **prefect.client_environment(),
            "RESTFUL_ETL_HOME": str(home),
            "RESTFUL_ETL_AUDIT_URL": f"sqlite:///{home / 'audit.db'}",
            "RESTFUL_ETL_STAGE_URL": f"redis://127.0.0.1:{redis.port}/0",
            SEAL_KEY_ENV: key,
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        }
        served = _serve(env, home / "serve.log", args.serve_in_process)
        rest = httpx.Client(base_url=prefect.api_url, timeout=30, transport=RetryWhenBusy(attempts=30))
        try:
            deployment = _until(
                lambda: (
                    (r := rest.get("/deployments/name/crm-to-accounting/crm-to-accounting")).status_code == 200
                    and rest.get("/deployments/name/restful-etl-hooks/hooks").status_code == 200
                    and r.json()
                ),
                "the deployments served",
            )
            # the intake is measured on a receiver of its own whose hooks wait (no micro-batch shares the CPU)
            held = hooks_config(apis, key, ["intake"], receiver="intake", debounce_seconds=3600, max_events=10**9)
            intake = ReceiverProcess(held, home, env, name="intake").start()
            receiver = ReceiverProcess(hooks_config(apis, key, [TENANT]), home, env).start()
            # the same hooks with micro-batches run in the receiver's process: no runner poll, no process per run
            here = hooks_config(apis, key, [TENANT], receiver="here")
            in_process = ReceiverProcess(here, home, env, "here", "--in-process").start()
            try:
                _bench(
                    args,
                    apis,
                    intake,
                    {"hooks": receiver, "hooks, in process": in_process},
                    rest,
                    deployment["id"],
                    key,
                )
            finally:
                for process in (intake, receiver, in_process):
                    process.stop()
        finally:
            rest.close()
            os.killpg(served.pid, 15)
            served.wait(30)


def _bench(
    args: Any,
    apis: DemoApis,
    intake: ReceiverProcess,
    receivers: dict[str, ReceiverProcess],
    rest: httpx.Client,
    deployment: str,
    key: str,
) -> None:
    credentials = {"crm": {"token": apis.crm_token}, "accounting": {"api_key": apis.accounting_api_key}}
    parameters = {
        "tenant_id": TENANT,
        "sealed_credentials": seal(
            credentials,
            tenant_id=TENANT,
            hosts={"crm": [apis.crm_url], "accounting": [apis.accounting_url]},
            key=key,
        ),
        "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
    }
    _run_batch(rest, deployment, {**parameters, "full_refresh": True})  # the destination in step, a watermark

    # 1. intake throughput, product and bare reference side by side
    hooks = [hook(customer(100_000 + n), "intake") for n in range(args.events)]
    seconds, codes = _post_all(f"{intake.url}/hooks/crm-to-accounting/intake", hooks, args.concurrency)
    intake.stop()
    bare, bare_url = bare_receiver()
    bare_seconds, bare_codes = _post_all(f"{bare_url}/hooks/crm-to-accounting/intake", hooks, args.concurrency)
    bare.should_exit = True
    assert set(codes) == {202} and set(bare_codes) == {202}, (set(codes), set(bare_codes))
    print(f"   receiver: {args.events} hooks in {seconds:.2f}s = {args.events / seconds:,.0f} events/s accepted")
    print(f"bare uvicorn: {args.events} hooks in {bare_seconds:.2f}s = {args.events / bare_seconds:,.0f} events/s")
    print(f"ratio receiver / bare: {bare_seconds / seconds:.2f} (concurrency {args.concurrency})")

    landing = Landing(apis)
    crm = httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}, timeout=10)
    try:
        # 2. hooks: the CRM pushes each change; one change every 0.25 s, as a live source would
        for name, receiver in receivers.items():
            print(
                _figures(
                    f"{name:<18}", _pushed(args, crm, receiver, landing, name.split(",")[-1].strip().replace(" ", "-"))
                )
            )

        # 3. polling: the same number of changes, then an incremental run created at once
        polled: list[float] = []
        for round_ in range(args.rounds):
            changed = {}
            for n in range(args.changes):
                ident = str(1 + n % 150)
                email = f"polled-{round_}-{n}@bench.example"
                landing.expect(ident, email)
                changed[ident] = time.monotonic()
                crm.patch(f"/customers/{ident}", json={"email": email}).raise_for_status()
            _run_batch(rest, deployment, parameters)
            landing.wait(list(changed))
            polled += [landing.seen[k] - t for k, t in changed.items()]
        print(_figures(f"{'polling':<18}", polled) + ": an incremental run created right after the changes")
        print("(a scheduled run starts on its interval: an hourly one adds up to an hour to every change)")
    finally:
        crm.close()
        landing.stop()


if __name__ == "__main__":
    main()
