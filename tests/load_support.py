"""Helpers for load tests against the demo accounting API: jobs, customers, the API's state and its controls."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from engine_support import batch_context
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.load.job import LoadJob, run_load
from prefect_restful_etl.tasks.engine.report import JobReport

MARCH, APRIL, MAY = (datetime(2026, m, 1, tzinfo=UTC) for m in (3, 4, 5))
BASE_JOB: dict[str, Any] = {
    "kind": "load",
    "name": "Load accounting customers",
    "source": "Shape",
    "api": "accounting",
    "endpoint": {"path": "/customers", "records_path": "data"},
    "natural_key": ["external_id"],
    "compare": ["name", "email", "country"],
    "concurrency": 6,
}
TYPE2 = {"scd_type": 2, "update_method": "PATCH"}


def job(**changes: Any) -> LoadJob:
    return LoadJob.model_validate(BASE_JOB | changes)


def customer(n: int, **changes: Any) -> dict[str, Any]:
    return {"external_id": str(n), "name": f"Customer {n}", "email": f"c{n}@example.com", "country": "GB", **changes}


CUSTOMERS = [customer(n) for n in range(1, 41)]


def changed(records: list[dict[str, Any]], numbers: set[int], **changes: Any) -> list[dict[str, Any]]:
    return [r | changes if int(r["external_id"]) in numbers else r for r in records]


class Accounting:
    """The demo accounting API for one test: run the load engine against it, read its state and stats."""

    def __init__(self, apis: DemoApis, tmp_path: Path, tenant: str) -> None:
        self.apis, self.tmp_path, self.tenant = apis, tmp_path, tenant
        self.api = ApiConfig.model_validate(
            {
                "name": "accounting",
                "base_url": apis.accounting_url,
                "auth": {"type": "api_key", "name": "X-API-Key"},
                "paginator": {"type": "page_number", "page_size": 15, "total_path": "total"},
                "max_attempts": 2,
                "backoff_base": 0,
            }
        )
        self.control = httpx.Client(base_url=apis.accounting_url, timeout=10)

    async def load(
        self,
        load_job: LoadJob,
        records: list[dict[str, Any]],
        *,
        at: datetime = MARCH,
        full_refresh: bool = False,
        dry_run: bool = False,
    ) -> tuple[JobReport, list[Any]]:
        apis = {"accounting": (self.api, Credentials(api_key=SecretStr(self.apis.accounting_api_key)))}
        async with batch_context(self.tmp_path, apis, tenant_id=self.tenant, full_refresh=full_refresh) as ctx:
            ctx.effective_at, ctx.dry_run = at, dry_run
            source = ctx.stage_key("shape")
            await ctx.stage.append(source, records)
            report = JobReport(job=load_job.name, kind="load", job_id=ctx.batch_id)
            await run_load(load_job, ctx, report, ErrorSink(ctx, load_job.name, report.job_id), source=source)
            return report, list(await ctx.audit.error_events(ctx.batch_id))

    def rows(self) -> list[dict[str, Any]]:
        customers: list[dict[str, Any]] = self.control.get("/_control/dump").raise_for_status().json()["customers"]
        return customers

    def writes(self) -> int:
        return sum(self.control.get("/_control/stats").raise_for_status().json()["writes"].values())

    def requests(self) -> dict[str, int]:
        counted: dict[str, int] = self.control.get("/_control/stats").raise_for_status().json()["requests"]
        return counted

    def statuses(self) -> dict[str, int]:
        answered: dict[str, int] = self.control.get("/_control/stats").raise_for_status().json()["statuses"]
        return answered

    def insert(self, row: dict[str, Any]) -> None:
        """A row created by someone else, as the API's own client would (its id is the API's)."""
        headers = {"X-API-Key": self.apis.accounting_api_key}
        self.control.post("/customers", json=row, headers=headers).raise_for_status()

    def idempotent_replays(self) -> int:
        return int(self.control.get("/_control/idempotency").raise_for_status().json()["replays"])

    def represent(self, mode: str) -> None:
        """`own`: the API stores every value it is sent in its own representation; `as_sent`: verbatim."""
        self.control.post("/_control/representation", json={"mode": mode}).raise_for_status()

    def fault(self, **spec: Any) -> None:
        self.control.post("/_control/faults", json=spec).raise_for_status()

    def clear_faults(self) -> None:
        self.control.delete("/_control/faults").raise_for_status()

    def wipe(self) -> None:
        self.control.post("/_control/reset").raise_for_status()


def by_key(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    keyed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        keyed[r["external_id"]].append(r)
    return {k: sorted(v, key=lambda r: r.get("version", 0)) for k, v in keyed.items()}


def assert_history(rows: list[dict[str, Any]], gone: frozenset[str] = frozenset()) -> dict[str, list[dict[str, Any]]]:
    """Type 2's promise, key by key: versions 1..n, exactly one current (the last) for a live key and none for a
    key in `gone` (expired as missing), intervals that never overlap."""
    keyed = by_key(rows)
    for key, versions in keyed.items():
        assert [v["version"] for v in versions] == list(range(1, len(versions) + 1)), key
        assert sum(v["is_current"] for v in versions) == (0 if key in gone else 1), key
        for older, newer in itertools.pairwise(versions):
            assert older["is_current"] is False and older["valid_to"] is not None, key
            assert older["valid_from"] < older["valid_to"] <= newer["valid_from"], key
        last = versions[-1]
        assert (last.get("valid_to") is None) == last["is_current"], key  # a null may be left out
    return keyed


def state(rows: list[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """The destination without its own ids (a rerun numbers rows differently): what must converge."""
    return {
        k: [tuple(sorted((f, v) for f, v in r.items() if f != "id")) for r in versions]
        for k, versions in by_key(rows).items()
    }


def current(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["external_id"]: r for r in rows if r.get("is_current", True)}
