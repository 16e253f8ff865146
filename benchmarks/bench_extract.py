"""Benchmark: extract N customers from the demo CRM through the product and through a bare httpx loop.

`python -m benchmarks.bench_extract --records 50000` (or `make bench`). Both sides use
the same page size and concurrency against the same server; each runs `--rounds` times, alternating, and the
best round of each is reported (the best is the least disturbed by the rest of the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.extract.job import ExtractJob, run_extract
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage


async def product(apis: DemoApis, audit: AuditStore, page_size: int, concurrency: int) -> int:
    """The extract job as a batch runs it: paginator, auth, retries, and every page into the stage."""
    api = ApiConfig.model_validate(
        {
            "name": "crm",
            "base_url": apis.crm_url,
            "auth": "bearer",
            "concurrency": concurrency,
            "paginator": {"type": "page_number", "page_size": page_size, "total_path": "total", "concurrent": True},
        }
    )
    job = ExtractJob.model_validate(
        {
            "name": "Extract CRM customers",
            "api": "crm",
            "natural_key": ["id"],
            "endpoint": {"path": "/customers", "records_path": "data"},
        }
    )
    stage = MemoryStage()
    async with RestClient(api, Credentials(token=SecretStr(apis.crm_token))) as client:
        ctx = BatchContext(
            tenant_id="bench",
            batch_id=str(uuid.uuid4()),
            batch_type="bench",
            stage=stage,
            audit=audit,
            clients={"crm": client},
        )
        report = JobReport(job=job.name, kind="extract", job_id="bench")
        await run_extract(job, ctx, report, ErrorSink(ctx, job.name, "bench"))
        count = await stage.count(ctx.stage_key(job.slug))
        await stage.drop_batch("bench", ctx.batch_id)
    return count


async def bare(apis: DemoApis, page_size: int, concurrency: int) -> int:
    """What one would write by hand: page one for the total, then the rest with `concurrency` in flight."""
    records: list[dict] = []
    headers = {"Authorization": f"Bearer {apis.crm_token}"}
    async with httpx.AsyncClient(base_url=apis.crm_url, headers=headers, timeout=30) as client:
        first = (await client.get("/customers", params={"page": 1, "per_page": page_size})).json()
        records.extend(first["data"])
        pages = -(-first["total"] // page_size)
        limit = asyncio.Semaphore(concurrency)

        async def page(number: int) -> list[dict]:
            async with limit:
                response = await client.get("/customers", params={"page": number, "per_page": page_size})
                response.raise_for_status()
                return response.json()["data"]

        for result in await asyncio.gather(*(page(n) for n in range(2, pages + 1))):
            records.extend(result)
    return len(records)


async def measure(apis: DemoApis, records: int, page_size: int, concurrency: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        audit = await AuditStore.open(f"sqlite:///{Path(home) / 'audit.db'}")
        best = {"product": float("inf"), "bare httpx": float("inf")}
        for _ in range(rounds):
            for name in best:
                started = time.perf_counter()
                count = await (
                    product(apis, audit, page_size, concurrency)
                    if name == "product"
                    else bare(apis, page_size, concurrency)
                )
                elapsed = time.perf_counter() - started
                assert count == records, f"{name} read {count} of {records} records"
                best[name] = min(best[name], elapsed)
        await audit.close()
    for name, seconds in best.items():
        print(f"{name:>11}: {records:,} records in {seconds:.2f}s = {records / seconds:,.0f} records/s")
    print(
        f"ratio product / bare httpx: {best['bare httpx'] / best['product']:.2f}x "
        f"(page size {page_size}, concurrency {concurrency}, best of {rounds})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with DemoApis(crm_customers=args.records) as apis:
        asyncio.run(measure(apis, args.records, args.page_size, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
