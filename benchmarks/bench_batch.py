"""Measure a full batch against the demo APIs: the product's extract, transform (steps, lookups, screens) and
SCD type 2 load of N CRM customers, next to a bare httpx copy of the same records with the same concurrency.

    python -m benchmarks.bench_batch --records 20000 [--concurrency 8]

The product runs through the engine directly (the runners the Prefect tasks wrap, without Prefect's task
and flow overhead), on a memory stage and a throwaway SQLite audit database, with the `crm-to-accounting`
batch type's own extract and transform jobs and its load job turned into SCD type 2. It runs twice: the
first batch inserts every customer; the second, a rerun, pulls the destination, diffs and writes nothing.
The bare copy pages through the same CRM endpoint and POSTs each record as soon as its page arrives.
A measurement, not a test: nothing here asserts, and CI does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch
from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.extract.job import ExtractJob, run_extract
from prefect_restful_etl.tasks.engine.http.client import RateLimiter, RestClient
from prefect_restful_etl.tasks.engine.jobtypes import BatchType
from prefect_restful_etl.tasks.engine.load.job import LoadJob, run_load
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage
from prefect_restful_etl.tasks.engine.transform.job import TransformJob, run_transform

_MODULE = "benchmarks.bench_batch"


def scd2_batch_type(apis: DemoApis, concurrency: int) -> BatchType:
    """`crm-to-accounting` on the demo's ports, its load as SCD type 2 with `concurrency` writes in flight."""
    raw = CRM_TO_ACCOUNTING.model_dump(mode="json")
    raw["apis"]["crm"]["base_url"], raw["apis"]["accounting"]["base_url"] = apis.crm_url, apis.accounting_url
    for api in raw["apis"].values():
        api["concurrency"] = concurrency  # the client's connection pool is twice this
    load = raw["jobs"][-1]
    load.update(scd_type=2, history=None, update_method="PATCH", concurrency=concurrency)
    return BatchType.model_validate(raw)


async def product(apis: DemoApis, batch_type: BatchType, workdir: Path) -> dict[str, Any]:
    """One batch through the engine's runners; seconds per job and the counts that matter."""
    credentials = {
        "crm": Credentials(token=SecretStr(apis.crm_token)),
        "accounting": Credentials(api_key=SecretStr(apis.accounting_api_key)),
    }
    clients = {
        name: RestClient(api, credentials[name], rate_limiter=RateLimiter(api.rate_limit))
        for name, api in batch_type.apis.items()
    }
    audit = await AuditStore.open(f"sqlite:///{workdir / 'audit.db'}")
    ctx = BatchContext(
        tenant_id="bench",
        batch_id=str(uuid.uuid4()),
        batch_type=batch_type.name,
        stage=MemoryStage(),
        audit=audit,
        clients=clients,
        full_refresh=True,
    )
    await audit.add(EtlBatch(batch_id=ctx.batch_id, tenant_id="bench", batch_type=batch_type.name))
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    started = time.perf_counter()
    try:
        for job in batch_type.jobs:
            began = time.perf_counter()
            report = await _run(job, batch_type, ctx)
            seconds[job.kind] = time.perf_counter() - began
            counts.update(report.counts)
    finally:
        await ctx.stage.drop_batch(ctx.tenant_id, ctx.batch_id)
        for client in clients.values():
            await client.aclose()
        await audit.close()
    return {"seconds": time.perf_counter() - started, "jobs": seconds, "counts": counts}


async def _run(job: ExtractJob | TransformJob | LoadJob, batch_type: BatchType, ctx: BatchContext) -> JobReport:
    report = JobReport(job=job.name, kind=job.kind, job_id=str(uuid.uuid4()))
    errors = ErrorSink(ctx, job.name, report.job_id)
    if isinstance(job, ExtractJob):
        return await run_extract(job, ctx, report, errors)
    source = ctx.stage_key(batch_type.job(job.source).slug)
    if isinstance(job, TransformJob):
        return await run_transform(job, ctx, report, errors, source=source, key_fields=batch_type.natural_key_of(job))
    return await run_load(job, ctx, report, errors, source=source)


def bare_record(customer: dict[str, Any]) -> dict[str, Any]:
    """The least a copy must do for the accounting API to take a CRM customer."""
    return {
        "external_id": str(customer["id"]),
        "name": customer["company"],
        "email": customer["email"],
        "country": customer["country"],
        "phone": customer["phone"],
        "lifetime_value": str(customer["lifetime_value"]),
        "status": customer.get("status") or "active",
    }


async def bare_copy(apis: DemoApis, concurrency: int, page_size: int) -> dict[str, Any]:
    """Page through the CRM and POST every customer, at most `concurrency` POSTs in flight."""
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    crm = httpx.AsyncClient(
        base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}, limits=limits, timeout=30
    )
    accounting = httpx.AsyncClient(
        base_url=apis.accounting_url, headers={"X-API-Key": apis.accounting_api_key}, limits=limits, timeout=30
    )
    gate = asyncio.Semaphore(concurrency)

    async def post(record: dict[str, Any]) -> None:
        async with gate:
            (await accounting.post("/customers", json=bare_record(record))).raise_for_status()

    started = time.perf_counter()
    copied = 0
    async with crm, accounting, asyncio.TaskGroup() as group:
        page = 1
        while True:
            body = (await crm.get("/customers", params={"page": page, "per_page": page_size})).raise_for_status().json()
            for record in body["data"]:
                group.create_task(post(record))
            copied += len(body["data"])
            if page * page_size >= body["total"] or not body["data"]:
                break
            page += 1
    return {"seconds": time.perf_counter() - started, "records": copied}


def _reset_accounting(apis: DemoApis) -> None:
    httpx.post(f"{apis.accounting_url}/_control/reset", timeout=30).raise_for_status()


async def measure(apis: DemoApis, records: int, concurrency: int, rounds: int) -> None:
    """`rounds` alternations of product and bare copy; the best of each, so that a busy neighbour on a shared
    machine shows as spread between rounds rather than as a false ratio."""
    batch_type = scd2_batch_type(apis, concurrency)
    page_size = batch_type.apis["crm"].paginator.model_dump().get("page_size") or 200
    firsts, reruns, bares = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as workdir:
        for _ in range(rounds):
            _reset_accounting(apis)
            firsts.append(await product(apis, batch_type, Path(workdir)))
            reruns.append(await product(apis, batch_type, Path(workdir)))
            _reset_accounting(apis)
            bares.append(await bare_copy(apis, concurrency, page_size))
    first, rerun, bare = (min(runs, key=lambda r: r["seconds"]) for runs in (firsts, reruns, bares))

    def rate(seconds: float) -> float:
        return records / seconds

    print(
        f"{records} CRM customers -> demo accounting API, {concurrency} writes in flight, CRM pages of "
        f"{page_size}, best of {rounds} round(s)"
    )
    for label, run in (("product: batch, SCD2 insert", first), ("product: rerun, no changes", rerun)):
        jobs = "  ".join(f"{kind} {s:.2f}s" for kind, s in run["jobs"].items())
        c = run["counts"]
        print(
            f"{label:<30} {run['seconds']:7.2f}s {rate(run['seconds']):9,.0f} rec/s   ({jobs}; inserted "
            f"{c.get('inserted', 0)}, unchanged {c.get('unchanged', 0)}, rejected {c.get('rejected', 0)})"
        )
    print(
        f"{'bare httpx: GET pages + POST':<30} {bare['seconds']:7.2f}s {rate(bare['seconds']):9,.0f} rec/s   "
        f"({bare['records']} records)"
    )
    print(f"ratio product/bare (first batch): {rate(first['seconds']) / rate(bare['seconds']):.2f}")
    spread = [f"{rate(f['seconds']):,.0f}/{rate(b['seconds']):,.0f}" for f, b in zip(firsts, bares, strict=False)]
    print(f"each round, product/bare rec/s: {'  '.join(spread)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="CRM customers to move (default 20000)")
    parser.add_argument("--concurrency", type=int, default=8, help="writes in flight, both ways (default 8)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate product and bare this often; best of each")
    args = parser.parse_args(argv)
    with DemoApis(crm_customers=args.records, ready_timeout=120) as apis:
        asyncio.run(measure(apis, args.records, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
