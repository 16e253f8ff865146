"""Many tenants on one worker: what a batch costs beyond its own work, and whether concurrency costs throughput.

    python -m benchmarks.bench_tenants [--overhead 10] [--tenants 20] [--records 2000] [--in-process]

A private `prefect server` (SQLite) and `restful-etl serve` (every batch type, one process; a process per flow run,
or with `--in-process` every run a task of that process) run on loopback; each tenant has its own demo API process.
The runs are created through Prefect's REST API, as a SaaS would.

- overhead per batch: wall time from the REST call creating a run to the run's end (Prefect's end_time), less
  the batch's own seconds (its audit row), for batches of 10 records one after another; median and spread.
- CPU per batch outside its jobs: the serving process and the runs' processes (their CPU, read from /proc),
  and the Prefect server's, divided by the batches. The batch's own jobs are in the first figure too (a batch of
  10 records costs little of its own): it bounds what is not theirs from above.
- 20 tenants at once against the same 20 batches one after another: records per second in total.

A measurement, not a test: nothing here asserts, and CI does not run it. The machine's load shows in every
figure: compare the figures of one sitting, and quote `uptime` with them.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from prefect_restful_etl.deployments.demo.apis import DemoApis

from tests.fixtures.servers.prefect import PrefectServer
from tests.prefect_rest import RetryWhenBusy

DEPLOYMENT = "crm-to-accounting/crm-to-accounting-full-resync"
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """A process's CPU seconds with those of its waited-for children (utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / _TICKS


def instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Bench:
    def __init__(self, server: PrefectServer, home: Path, *, in_process: bool = False) -> None:
        self.server, self.home, self.in_process = server, home, in_process
        self.rest = httpx.Client(base_url=server.api_url, timeout=120, transport=RetryWhenBusy(attempts=30))
        self.deployment_id = ""
        self.serving: subprocess.Popen[bytes] | None = None

    @contextmanager
    def served(self) -> Iterator[None]:
        env = {**os.environ, **self.server.client_environment(), "RESTFUL_ETL_HOME": str(self.home)}
        with (self.home / "serve.log").open("wb") as log:
            self.serving = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect_restful_etl.deployments.cli.app",
                    "serve",
                    *(["--in-process"] if self.in_process else []),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self.deployment_id = self._until(self._deployment, "the deployment served", 120)
            yield
        finally:
            os.killpg(self.serving.pid, 15)
            self.serving.wait(60)

    def _deployment(self) -> str | None:
        response = self.rest.get(f"/deployments/name/{DEPLOYMENT}")
        return str(response.json()["id"]) if response.status_code == 200 else None

    @staticmethod
    def _until(condition: Any, what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                raise SystemExit(f"not within {timeout}s: {what}")
            time.sleep(0.1)
        return value

    def create(self, tenant: str, apis: DemoApis) -> tuple[str, float]:
        """Create a run through the REST API; its id and the moment the call began."""
        parameters = {
            "tenant_id": tenant,
            "credentials": {"crm": {"token": apis.crm_token}, "accounting": {"api_key": apis.accounting_api_key}},
            "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
        }
        began = time.time()
        response = self.rest.post(f"/deployments/{self.deployment_id}/create_flow_run", json={"parameters": parameters})
        return str(response.raise_for_status().json()["id"]), began

    def finished(self, run_ids: list[str], timeout: float = 1800) -> dict[str, dict[str, Any]]:
        """Poll until every run has ended; their flow runs."""
        ended: dict[str, dict[str, Any]] = {}

        def all_ended() -> bool:
            for run_id in set(run_ids) - set(ended):
                run = self.rest.get(f"/flow_runs/{run_id}").json()
                if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    ended[run_id] = run
            return len(ended) == len(run_ids)

        self._until(all_ended, f"{len(run_ids)} runs ended", timeout)
        return ended

    def own_seconds(self, run_id: str) -> tuple[float, int]:
        """The batch's own seconds and records, from its audit row."""
        with sqlite3.connect(self.home / "audit.db") as db:
            started, ended, extracted = db.execute(
                "SELECT started_at, ended_at, extracted FROM etl_batch WHERE batch_id = ?", (run_id,)
            ).fetchone()
        return instant(ended) - instant(started), int(extracted)


def overhead(bench: Bench, apis: DemoApis, count: int) -> None:
    assert bench.serving is not None
    overheads, own, served_cpu, server_cpu = [], [], 0.0, 0.0
    for number in range(count + 1):  # the first warms the server and the serving process up: not counted
        apis.reset()
        cpu_before = (cpu_seconds(bench.serving.pid), cpu_seconds(bench.server.pid))
        run_id, began = bench.create("overhead", apis)
        run = bench.finished([run_id])[run_id]
        if number == 0:
            continue
        served_cpu += cpu_seconds(bench.serving.pid) - cpu_before[0]
        server_cpu += cpu_seconds(bench.server.pid) - cpu_before[1]
        seconds, _ = bench.own_seconds(run_id)
        own.append(seconds)
        overheads.append(instant(run["end_time"]) - began - seconds)
    print(
        f"overhead per batch: median {statistics.median(overheads):.2f}s (min {min(overheads):.2f}, max"
        f" {max(overheads):.2f}; {count} batches of 10 records, own work median {statistics.median(own):.2f}s)"
    )
    print(
        f"CPU per batch: serving process and its runs {served_cpu / count:.2f}s,"
        f" Prefect server {server_cpu / count:.2f}s (the batch's own wall time {statistics.median(own):.2f}s)"
    )


def throughput(bench: Bench, tenants: list[DemoApis]) -> None:
    for how in ("one after another", "all at once"):
        for apis in tenants:
            apis.reset()
        began = time.time()
        if how == "all at once":
            ids = [bench.create(f"tenant-{n}", apis)[0] for n, apis in enumerate(tenants)]
            runs = bench.finished(ids)
        else:
            runs = {}
            for n, apis in enumerate(tenants):
                run_id = bench.create(f"tenant-{n}", apis)[0]
                runs.update(bench.finished([run_id]))
        wall = max(instant(run["end_time"]) for run in runs.values()) - began
        records = sum(bench.own_seconds(run_id)[1] for run_id in runs)
        states = sorted({run["state"]["type"] for run in runs.values()})
        print(
            f"{len(tenants)} tenants {how}: {records} records in {wall:.1f}s = {records / wall:,.0f} rec/s"
            f" (states: {', '.join(states)})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_tenants", description=__doc__.splitlines()[0])
    parser.add_argument("--overhead", type=int, default=10, help="batches of 10 records one after another")
    parser.add_argument("--tenants", type=int, default=20, help="tenants (each its own demo API process)")
    parser.add_argument("--records", type=int, default=2000, help="CRM customers per tenant")
    parser.add_argument(
        "--in-process", action="store_true", help="serve with `restful-etl serve --in-process` (runs as tasks)"
    )
    args = parser.parse_args(argv)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-tenants-") as home:
        server = stack.enter_context(PrefectServer())
        bench = Bench(server, Path(home), in_process=args.in_process)
        stack.enter_context(bench.served())
        print(f"machine: {subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()}")
        print(f"serving: restful-etl serve{' --in-process' if args.in_process else ''}")
        overhead(bench, stack.enter_context(DemoApis(crm_customers=10)), args.overhead)
        if args.tenants:
            tenants = [stack.enter_context(DemoApis(crm_customers=args.records)) for _ in range(args.tenants)]
            throughput(bench, tenants)
        print(f"machine: {subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()}")


if __name__ == "__main__":
    main()
