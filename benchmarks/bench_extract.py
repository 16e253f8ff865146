"""Benchmark: extract N customers from the demo CRM through the product and through a bare httpx loop.

`python -m benchmarks.bench_extract --records 50000` (or `make bench`). Both sides read the same pages of the
same server, one round of each in turn, `--rounds` times; it prints the best round of each and the ratio of each
round's pair (bare seconds over product seconds, so 1.00x is as fast as the bare loop) with their median.
`--mode` picks the API:

- `page` (default): numbered pages with the total in the body (`/customers`), fetched `--concurrency` at a time;
- `cursor`: a cursor in the body (`/cursor/customers`), one page after another: nothing to plan;
- `header-total`: numbered pages of a bare list with the total in `X-Total-Count` (`/header-total/customers`),
  fetched `--concurrency` at a time once page one tells the total.

`--profile FILE` also runs the product once under cProfile and writes its statistics to FILE (`pstats`);
`--incremental` has the product track the watermark (`updated_at`) as an incremental extract does; `--paginator
JSON` gives the product another paginator for the mode's endpoint (sequential paging, say).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

Bare = Callable[[httpx.AsyncClient, int, int], Awaitable[int]]


@dataclass(frozen=True)
class Mode:
    """One API shape: the product's paginator and endpoint for it, and the loop one would write by hand."""

    paginator: Callable[[int], dict[str, Any]]  # of the page size
    endpoint: Callable[[int], dict[str, Any]]
    bare: Bare


async def bare_pages(client: httpx.AsyncClient, page_size: int, concurrency: int) -> int:
    """Page one for the total (in the body), then the rest with `concurrency` in flight."""
    records: list[dict[str, Any]] = []
    first = (await client.get("/customers", params={"page": 1, "per_page": page_size})).json()
    records.extend(first["data"])
    pages = -(-first["total"] // page_size)
    limit = asyncio.Semaphore(concurrency)

    async def page(number: int) -> list[dict[str, Any]]:
        async with limit:
            response = await client.get("/customers", params={"page": number, "per_page": page_size})
            response.raise_for_status()
            return list(response.json()["data"])

    for result in await asyncio.gather(*(page(n) for n in range(2, pages + 1))):
        records.extend(result)
    return len(records)


async def bare_cursor(client: httpx.AsyncClient, page_size: int, concurrency: int) -> int:
    """One page after another, each sending back the cursor the last one gave."""
    records: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": page_size}
    while True:
        response = await client.get("/cursor/customers", params=params)
        response.raise_for_status()
        body = response.json()
        records.extend(body["results"]["items"])
        if not body["next_cursor"]:
            return len(records)
        params = {"limit": page_size, "cursor": body["next_cursor"]}


async def bare_header_total(client: httpx.AsyncClient, page_size: int, concurrency: int) -> int:
    """Page one for the total (in `X-Total-Count`), then the rest with `concurrency` in flight."""
    records: list[dict[str, Any]] = []
    first = await client.get("/header-total/customers", params={"page": 1, "per_page": page_size})
    first.raise_for_status()
    records.extend(first.json())
    pages = -(-int(first.headers["X-Total-Count"]) // page_size)
    limit = asyncio.Semaphore(concurrency)

    async def page(number: int) -> list[dict[str, Any]]:
        async with limit:
            response = await client.get("/header-total/customers", params={"page": number, "per_page": page_size})
            response.raise_for_status()
            return list(response.json())

    for result in await asyncio.gather(*(page(n) for n in range(2, pages + 1))):
        records.extend(result)
    return len(records)


MODES = {
    "page": Mode(
        lambda size: {"type": "page_number", "page_size": size, "total_path": "total", "concurrent": True},
        lambda size: {"path": "/customers", "records_path": "data"},
        bare_pages,
    ),
    "cursor": Mode(
        lambda size: {
            "type": "cursor",
            "cursor_path": "next_cursor",
            "cursor_param": "cursor",
            "size_param": "limit",
            "page_size": size,
        },
        lambda size: {"path": "/cursor/customers", "records_path": "results.items"},
        bare_cursor,
    ),
    "header-total": Mode(
        lambda size: {"type": "page_number", "page_size": size, "total_header": "X-Total-Count", "concurrent": True},
        lambda size: {"path": "/header-total/customers"},
        bare_header_total,
    ),
}


async def product(
    apis: DemoApis,
    audit: AuditStore,
    mode: Mode,
    page_size: int,
    concurrency: int,
    paginator: Any = None,
    incremental: bool = False,
) -> int:
    """The extract job as a batch runs it: paginator, auth, retries, and every page into the stage."""
    api = ApiConfig.model_validate(
        {
            "name": "crm",
            "base_url": apis.crm_url,
            "auth": "bearer",
            "concurrency": concurrency,
            "paginator": paginator or mode.paginator(page_size),
        }
    )
    config = {
        "name": "Extract CRM customers",
        "api": "crm",
        "natural_key": ["id"],
        "endpoint": mode.endpoint(page_size),
    }
    if incremental:  # no watermark is ever saved here: every round reads all, and works out the next watermark
        config["incremental"] = {"cursor_field": "updated_at", "param": "updated_since"}
    job = ExtractJob.model_validate(config)
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


async def bare(apis: DemoApis, mode: Mode, page_size: int, concurrency: int) -> int:
    """What one would write by hand, on one `httpx.AsyncClient` with the bearer token."""
    headers = {"Authorization": f"Bearer {apis.crm_token}"}
    async with httpx.AsyncClient(base_url=apis.crm_url, headers=headers, timeout=30) as client:
        return await mode.bare(client, page_size, concurrency)


async def measure(apis: DemoApis, args: argparse.Namespace) -> None:
    mode, records = MODES[args.mode], args.records
    with tempfile.TemporaryDirectory() as home:
        audit = await AuditStore.open(f"sqlite:///{Path(home) / 'audit.db'}")
        rounds: list[dict[str, float]] = []
        for _ in range(args.rounds):
            timed: dict[str, float] = {}
            for name in ("product", "bare httpx"):
                started, cpu = time.perf_counter(), time.process_time()
                if name == "product":
                    count = await product(
                        apis, audit, mode, args.page_size, args.concurrency, args.paginator, args.incremental
                    )
                else:
                    count = await bare(apis, mode, args.page_size, args.concurrency)
                timed[name] = time.perf_counter() - started
                timed[f"{name} cpu"] = time.process_time() - cpu  # this process only: the server runs apart
                assert count == records, f"{name} read {count} of {records} records"
            rounds.append(timed)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await product(apis, audit, mode, args.page_size, args.concurrency, args.paginator, args.incremental)
            profiler.disable()
            profiler.dump_stats(args.profile)
        await audit.close()
    report(rounds, args)


def report(rounds: list[dict[str, float]], args: argparse.Namespace) -> None:
    for name in ("product", "bare httpx"):
        seconds = min(timed[name] for timed in rounds)
        print(f"{name:>11}: {args.records:,} records in {seconds:.2f}s = {args.records / seconds:,.0f} records/s")
    cpu = {
        name: statistics.median(t[f"{name} cpu"] for t in rounds) / args.records * 1e6
        for name in ("product", "bare httpx")
    }
    print(
        f"CPU of this process per record (median): product {cpu['product']:.1f} µs,"
        f" bare httpx {cpu['bare httpx']:.1f} µs"
    )
    ratios = [timed["bare httpx"] / timed["product"] for timed in rounds]
    best = min(t["bare httpx"] for t in rounds) / min(t["product"] for t in rounds)
    shape = "sequential" if args.mode == "cursor" else f"concurrency {args.concurrency}"
    print(
        f"ratio product / bare httpx: {best:.2f}x "
        f"(mode {args.mode}, page size {args.page_size}, {shape}, best of {len(rounds)})"
    )
    print(
        f"each round's ratio: median {statistics.median(ratios):.2f}x, from {min(ratios):.2f}x to {max(ratios):.2f}x"
        f" ({' '.join(f'{r:.2f}' for r in ratios)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--mode", choices=sorted(MODES), default="page")
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", help="write a cProfile of one more product run to this file")
    parser.add_argument("--incremental", action="store_true", help="the product's extract tracks a watermark")
    parser.add_argument("--paginator", type=json.loads, help="the product's paginator as JSON, instead of the mode's")
    args = parser.parse_args()
    with DemoApis(crm_customers=args.records) as apis:
        asyncio.run(measure(apis, args))


if __name__ == "__main__":
    main()
