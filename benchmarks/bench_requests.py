"""Benchmark: the per-request path, one request per record, through the product's client and a bare httpx loop.

`python -m benchmarks.bench_requests --requests 5000`: `GET /customers/{id}` of the demo CRM for each of N ids,
`--concurrency` in flight, through `RestClient.request` (auth, origin check, retries, error classification: what
a load's every write and a by-key look-up go through) and through a bare `httpx.AsyncClient` with the same
header. One round of each in turn, `--rounds` times; it prints the CPU this process spent per request on each side
(the server runs in another process, so this is what the client costs whatever the machine's load) and the ratio
of each round's pair (bare seconds over product seconds). `--profile FILE` writes a cProfile of one more product
round. `--in-memory` answers both sides from an `httpx.MockTransport` in this process instead of the demo CRM: no
socket and no server, so the seconds are the two clients' own work alone.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import time

import httpx
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient

_ANSWER = b'{"id": 1, "name": "Customer 1", "email": "c1@example.com", "updated_at": "2026-01-01T00:00:00Z"}'


def in_memory(request: httpx.Request) -> httpx.Response:
    """The answer of an API that costs nothing: what is left is the client's own work."""
    return httpx.Response(200, content=_ANSWER, headers={"Content-Type": "application/json"})


def transport(args: argparse.Namespace) -> httpx.AsyncBaseTransport | None:
    return httpx.MockTransport(in_memory) if args.in_memory else None


async def product(apis: DemoApis, ids: range, args: argparse.Namespace) -> int:
    concurrency = args.concurrency
    api = ApiConfig.model_validate(
        {"name": "crm", "base_url": apis.crm_url, "auth": "bearer", "concurrency": concurrency}
    )
    limit = asyncio.Semaphore(concurrency)
    credentials = Credentials(token=SecretStr(apis.crm_token))
    async with RestClient(api, credentials, transport=transport(args)) as client:

        async def one(customer_id: int) -> int:
            async with limit:
                return (await client.request("GET", f"/customers/{customer_id}")).status_code

        return sum(status == 200 for status in await asyncio.gather(*(one(n) for n in ids)))


async def bare(apis: DemoApis, ids: range, args: argparse.Namespace) -> int:
    concurrency = args.concurrency
    limit = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {apis.crm_token}"}
    connections = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(
        base_url=apis.crm_url, headers=headers, timeout=30, limits=connections, transport=transport(args)
    ) as client:

        async def one(customer_id: int) -> int:
            async with limit:
                response = await client.get(f"/customers/{customer_id}")
                response.raise_for_status()
                return response.status_code

        return sum(status == 200 for status in await asyncio.gather(*(one(n) for n in ids)))


async def measure(apis: DemoApis, args: argparse.Namespace) -> None:
    ids = range(1, args.requests + 1)
    rounds: list[dict[str, float]] = []
    for _ in range(args.rounds):
        timed: dict[str, float] = {}
        for name, side in (("product", product), ("bare httpx", bare)):
            started, cpu = time.perf_counter(), time.process_time()
            count = await side(apis, ids, args)
            timed[name], timed[f"{name} cpu"] = time.perf_counter() - started, time.process_time() - cpu
            assert count == args.requests, f"{name}: {count} of {args.requests} requests answered 200"
        rounds.append(timed)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await product(apis, ids, args)
        profiler.disable()
        profiler.dump_stats(args.profile)
    for name in ("product", "bare httpx"):
        seconds = min(t[name] for t in rounds)
        cpu = statistics.median(t[f"{name} cpu"] for t in rounds) / args.requests * 1e6
        print(f"{name:>11}: {args.requests:,} requests in {seconds:.2f}s (best); CPU {cpu:.0f} µs per request (median)")
    ratios = [t["bare httpx"] / t["product"] for t in rounds]
    print(
        f"each round's ratio product / bare httpx: median {statistics.median(ratios):.2f}x, from {min(ratios):.2f}x"
        f" to {max(ratios):.2f}x (concurrency {args.concurrency}, {len(rounds)} rounds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--in-memory", action="store_true", help="answer both sides in this process, no server")
    parser.add_argument("--profile", help="write a cProfile of one more product round to this file")
    args = parser.parse_args()
    with DemoApis(crm_customers=args.requests) as apis:
        asyncio.run(measure(apis, args))


if __name__ == "__main__":
    main()
