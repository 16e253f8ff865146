"""Many tenants on one worker: what a batch costs beyond its own work, and whether concurrency costs throughput.

    python -m benchmarks.bench_tenants [--overhead 10] [--tenants 20] [--records 2000] [--in-process] [--limit N]

A private `prefect server` (SQLite) and `restful-etl serve` (every batch type, one process; a process per flow run,
or with `--in-process` every run a task of that process) run on loopback; each tenant has its own demo API process.
The runs are created through Prefect's REST API, as a SaaS would.

- overhead per batch: wall time from the REST call creating a run to the run's end (Prefect's end_time), less
  the batch's own seconds (its audit row), for batches of 10 records one after another; median and spread.
- CPU per batch outside its jobs: the serving process and the runs' processes (their CPU, read from /proc),
  and the Prefect server's, divided by the batches. The batch's own jobs are in the first figure too (a batch of
  10 records costs little of its own): it bounds what is not theirs from above.
- what a batch costs the Prefect server, counted through its REST API once the events have settled: events
  (`POST /events/filter` on any resource or related resource `prefect.flow-run.<id>`: the flow run's, its task
  runs', ours and the artifact collections'), logs (`POST /logs/filter` by flow run), artifact writes (the
  artifacts `POST /artifacts/filter` finds for the flow run, and the progress artifact's updates, which Prefect
  keeps no row or event of: one per `restful-etl.job.progress` event, one per job's end and one at the batch's
  end, as `tasks/status.py` and `flows/publish.py` write them) and state changes (`GET /flow_run_states/`, and
  `GET /task_run_states/` for each task run `POST /task_runs/filter` finds); the median per batch, for the
  10-record batches and for the larger ones, so one sees whether it grows with records (progress is bounded by
  `RESTFUL_ETL_PROGRESS_SECONDS`).
- N tenants at once against the same N batches one after another: records per second in total, CPU per batch,
  and for all at once whether every batch completed and the wall time from the first create call to the last end.

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
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from prefect_restful_etl.deployments.demo.apis import DemoApis

from tests.fixtures.servers.prefect import PrefectServer
from tests.prefect_rest import RetryWhenBusy

DEPLOYMENT = "crm-to-accounting/crm-to-accounting-full-resync"
_TICKS = os.sysconf("SC_CLK_TCK")
ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
PAGE = 200  # Prefect's default (and usual most) objects per filter call


@dataclass(frozen=True)
class ServerCost:
    """What one batch left on the Prefect server."""

    events: int
    ours: int  # restful-etl.* events among them
    progress: int  # restful-etl.job.progress events
    jobs: int  # restful-etl.job.finished events: each also updates the progress artifact
    ended: int  # restful-etl.batch.finished events: the progress artifact's last update comes just before
    logs: int
    artifacts: int  # artifacts created for the flow run
    flow_states: int
    task_states: int
    task_runs: int

    @property
    def updates(self) -> int:
        """The progress artifact's updates: one per progress event, per job's end and at the batch's end."""
        return self.progress + self.jobs + self.ended

    @property
    def artifact_writes(self) -> int:
        return self.artifacts + self.updates

    @property
    def states(self) -> int:
        return self.flow_states + self.task_states


def cpu_seconds(pid: int) -> float:
    """A process's CPU seconds with those of its waited-for children (utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / _TICKS


def instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Bench:
    def __init__(
        self, server: PrefectServer, home: Path, *, in_process: bool = False, limit: int | None = None
    ) -> None:
        self.server, self.home, self.in_process, self.limit = server, home, in_process, limit
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
                    *(["--limit", str(self.limit)] if self.limit else []),
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
    def _until(condition: Any, what: str, timeout: float, pause: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                raise SystemExit(f"not within {timeout}s: {what}")
            time.sleep(pause)
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
        """Poll until every run has ended (one filter call per poll, so polling many runs costs the server
        little); their flow runs."""
        ended: dict[str, dict[str, Any]] = {}

        def all_ended() -> bool:
            waiting = sorted(set(run_ids) - set(ended))
            for start in range(0, len(waiting), PAGE):
                chunk = waiting[start : start + PAGE]
                body = {"flow_runs": {"id": {"any_": chunk}}, "limit": len(chunk)}
                for run in self.rest.post("/flow_runs/filter", json=body).raise_for_status().json():
                    if run["state"] and run["state"]["type"] in ENDED:
                        ended[str(run["id"])] = run
            return len(ended) == len(run_ids)

        self._until(all_ended, f"{len(run_ids)} runs ended", timeout, pause=0.1 if len(run_ids) == 1 else 0.5)
        return ended

    def _events(self, run_ids: list[str]) -> tuple[int, list[dict[str, Any]]]:
        """The events naming any of these flow runs as their resource or a related one: the total, and the
        events themselves (every page)."""
        body = {"filter": {"any_resource": {"id": [f"prefect.flow-run.{run_id}" for run_id in run_ids]}}, "limit": 50}
        page = self.rest.post("/events/filter", json=body).raise_for_status().json()
        total, events = int(page["total"]), list(page["events"])
        while page.get("next_page"):
            page = self.rest.get(page["next_page"]).raise_for_status().json()
            events.extend(page["events"])
        return total, events

    def settle(self, run_ids: list[str], quiet: float = 6.0, timeout: float = 120) -> None:
        """Wait until the server has stored these runs' events and logs: the count unchanged over `quiet`
        seconds (Prefect's event persister writes every 5 s or 20 events, the log worker every 2 s)."""
        deadline, last = time.monotonic() + timeout, -1
        while (count := self._events(run_ids)[0]) != last and time.monotonic() < deadline:
            last = count
            time.sleep(quiet)

    def _all(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            page = self.rest.post(path, json={**body, "limit": PAGE, "offset": len(found)}).raise_for_status().json()
            found.extend(page)
            if len(page) < PAGE:
                return found

    def server_cost(self, run_id: str) -> ServerCost:
        """What one batch left on the Prefect server, read through its REST API."""
        total, events = self._events([run_id])
        names = Counter(str(event["event"]) for event in events)
        logs = self._all("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}})
        artifacts = self._all("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        flow_states = self.rest.get("/flow_run_states/", params={"flow_run_id": run_id}).raise_for_status().json()
        task_runs = self._all("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [run_id]}}})
        task_states = sum(
            len(self.rest.get("/task_run_states/", params={"task_run_id": task["id"]}).raise_for_status().json())
            for task in task_runs
        )
        return ServerCost(
            events=total,
            ours=sum(count for name, count in names.items() if name.startswith("restful-etl.")),
            progress=names["restful-etl.job.progress"],
            jobs=names["restful-etl.job.finished"],
            ended=names["restful-etl.batch.finished"],
            logs=len(logs),
            artifacts=len(artifacts),
            flow_states=len(flow_states),
            task_states=task_states,
            task_runs=len(task_runs),
        )

    def own_seconds(self, run_id: str) -> tuple[float, int]:
        """The batch's own seconds and records, from its audit row."""
        with sqlite3.connect(self.home / "audit.db") as db:
            started, ended, extracted = db.execute(
                "SELECT started_at, ended_at, extracted FROM etl_batch WHERE batch_id = ?", (run_id,)
            ).fetchone()
        return instant(ended) - instant(started), int(extracted)


def server_costs(bench: Bench, run_ids: list[str], what: str) -> None:
    """Print what these batches cost the Prefect server, per batch (medians; the most in one batch for events)."""
    bench.settle(run_ids)
    costs = [bench.server_cost(run_id) for run_id in run_ids]

    def median(name: str) -> str:
        return f"{statistics.median(getattr(cost, name) for cost in costs):g}"

    def most(name: str) -> int:
        return max(int(getattr(cost, name)) for cost in costs)

    print(
        f"Prefect server per batch ({what}, median of {len(costs)}): {median('events')} events, {median('logs')} logs,"
        f" {median('artifact_writes')} artifact writes, {median('states')} state changes (flow"
        f" {median('flow_states')}, tasks {median('task_states')})"
    )
    print(
        f"  events: {median('ours')} restful-etl's of which {median('progress')} progress (most {most('progress')}),"
        f" the rest Prefect's (most events in one batch {most('events')}); artifact writes: {median('artifacts')}"
        f" created, {median('updates')} progress updates;"
        f" {median('task_runs')} task runs"
    )


def overhead(bench: Bench, apis: DemoApis, count: int) -> None:
    assert bench.serving is not None
    overheads, own, served_cpu, server_cpu, run_ids = [], [], 0.0, 0.0, []
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
        run_ids.append(run_id)
    print(
        f"overhead per batch: median {statistics.median(overheads):.2f}s (min {min(overheads):.2f}, max"
        f" {max(overheads):.2f}; {count} batches of 10 records, own work median {statistics.median(own):.2f}s)"
    )
    print(
        f"CPU per batch: serving process and its runs {served_cpu / count:.2f}s,"
        f" Prefect server {server_cpu / count:.2f}s (the batch's own wall time {statistics.median(own):.2f}s)"
    )
    server_costs(bench, run_ids, f"{apis.crm_customers} records")


def throughput(bench: Bench, tenants: list[DemoApis]) -> None:
    assert bench.serving is not None
    phases: dict[str, list[str]] = {}
    together = ""
    for how in ("one after another", "all at once"):
        for apis in tenants:
            apis.reset()
        cpu_before = (cpu_seconds(bench.serving.pid), cpu_seconds(bench.server.pid))
        began = time.time()
        if how == "all at once":
            created = [bench.create(f"tenant-{n}", apis) for n, apis in enumerate(tenants)]
            creating = time.time() - began
            began = created[0][1]
            runs = bench.finished([run_id for run_id, _ in created])
        else:
            runs = {}
            for n, apis in enumerate(tenants):
                run_id = bench.create(f"tenant-{n}", apis)[0]
                runs.update(bench.finished([run_id]))
        served_cpu = (cpu_seconds(bench.serving.pid) - cpu_before[0]) / len(tenants)
        server_cpu = (cpu_seconds(bench.server.pid) - cpu_before[1]) / len(tenants)
        wall = max(instant(run["end_time"]) for run in runs.values()) - began
        records = sum(bench.own_seconds(run_id)[1] for run_id in runs)
        states = Counter(str(run["state"]["type"]) for run in runs.values())
        print(
            f"{len(tenants)} tenants {how}: {records} records in {wall:.1f}s = {records / wall:,.0f} rec/s"
            f" (states: {', '.join(sorted(states))}); CPU per batch: serving {served_cpu:.2f}s,"
            f" Prefect server {server_cpu:.2f}s"
        )
        phases[how] = list(runs)
        if how == "all at once":
            completed = states["COMPLETED"]
            together = (
                f"all at once: {'every batch' if completed == len(tenants) else 'NOT every batch'} completed"
                f" ({completed} of {len(tenants)} COMPLETED"
                + "".join(f", {count} {state}" for state, count in sorted(states.items()) if state != "COMPLETED")
                + f"), {wall:.1f}s from the first create call to the last end (creating the {len(tenants)} runs"
                f" took {creating:.1f}s)"
            )
    records_each = tenants[0].crm_customers
    for how, run_ids in phases.items():
        server_costs(bench, run_ids, f"{records_each} records, {how}")
    print(together)


def start_tenants(stack: ExitStack, count: int, records: int) -> list[DemoApis]:
    """One demo API process per tenant, started four at a time; each stopped by its PID when the stack closes."""
    tenants = [DemoApis(crm_customers=records, ready_timeout=180) for _ in range(count)]
    for apis in tenants:
        stack.callback(apis.stop)
    start: Callable[[DemoApis], DemoApis] = DemoApis.start
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(start, tenants))
    return tenants


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_tenants", description=__doc__.splitlines()[0])
    parser.add_argument("--overhead", type=int, default=10, help="batches of 10 records one after another")
    parser.add_argument("--tenants", type=int, default=20, help="tenants (each its own demo API process)")
    parser.add_argument("--records", type=int, default=2000, help="CRM customers per tenant")
    parser.add_argument(
        "--in-process", action="store_true", help="serve with `restful-etl serve --in-process` (runs as tasks)"
    )
    parser.add_argument("--limit", type=int, help="runs at once, passed to `restful-etl serve --limit`")
    args = parser.parse_args(argv)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-tenants-") as home:
        server = stack.enter_context(PrefectServer())
        bench = Bench(server, Path(home), in_process=args.in_process, limit=args.limit)
        stack.enter_context(bench.served())
        print(f"machine: {uptime()}")
        limit = f" --limit {args.limit}" if args.limit else ""
        print(f"serving: restful-etl serve{' --in-process' if args.in_process else ''}{limit}")
        overhead(bench, stack.enter_context(DemoApis(crm_customers=10)), args.overhead)
        print(f"machine: {uptime()}")
        if args.tenants:
            throughput(bench, start_tenants(stack, args.tenants, args.records))
        print(f"machine: {uptime()}")


if __name__ == "__main__":
    main()
