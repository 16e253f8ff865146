"""Measure RedisStage: write N records of ~300 bytes in chunks, stream them back, report rates and peak RSS.

    python -m benchmarks.bench_stage --records 10000 200000

Each N runs in a fresh Python subprocess, because a process's peak RSS (ru_maxrss) never goes down; a
streaming stage shows the same peak for every N. It starts its own redis-server on a free loopback port.
A measurement, not a test: nothing here asserts, and CI does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage

from tests.fixtures.servers.redis import RedisServer

_MODULE = "benchmarks.bench_stage"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[10_000, 200_000], help="record counts")
    parser.add_argument("--chunk", type=int, default=1000, help="records per append and per read chunk")
    parser.add_argument("--url", help=argparse.SUPPRESS)  # set for the child that measures one count
    args = parser.parse_args(argv)
    if args.url:
        for n in args.records:
            print(json.dumps(asyncio.run(_measure(args.url, n, args.chunk))), flush=True)
        return
    with RedisServer() as server:
        print(f"redis-server pid {server.pid} on 127.0.0.1:{server.port}; chunk {args.chunk} records")
        print(
            f"{'records':>9} {'bytes/rec':>9} {'write rec/s':>12} {'read rec/s':>11} {'RSS base MiB':>13}"
            f" {'after write':>12} {'peak (read)':>12}"
        )
        for n in args.records:
            row = _run_child(server.url, n, args.chunk)
            print(
                f"{row['records']:>9} {row['record_bytes']:>9} {row['write_per_s']:>12,.0f}"
                f" {row['read_per_s']:>11,.0f} {row['rss_base_mib']:>13.1f} {row['rss_after_write_mib']:>12.1f}"
                f" {row['rss_peak_mib']:>12.1f}"
            )


def _run_child(url: str, n: int, chunk: int) -> dict[str, Any]:
    """One count in a fresh interpreter, so its peak RSS is its own."""
    command = [sys.executable, "-m", _MODULE, "--url", url, "--records", str(n), "--chunk", str(chunk)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _records(n: int, chunk: int) -> Iterator[list[dict[str, Any]]]:
    """N customer records of ~300 bytes as JSON, made a chunk at a time: the writer never holds all N."""
    for start in range(0, n, chunk):
        yield [
            {
                "id": i,
                "external_id": f"CUST-{i:010d}",
                "name": f"Customer number {i}",
                "email": f"customer.{i}@example.com",
                "country": "DE",
                "balance": round(i * 1.25, 2),
                "active": i % 3 != 0,
                "updated_at": "2026-11-24T05:41:13+00:00",
                "note": "x" * 110,  # pads the record to ~300 bytes of JSON
            }
            for i in range(start, min(start + chunk, n))
        ]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def _measure(url: str, n: int, chunk: int) -> dict[str, Any]:
    key = StageKey("bench", str(uuid.uuid4()), "extract")
    async with RedisStage.from_url(url, ttl=3600) as stage:
        await stage.count(key)  # connect before the baseline, so it holds the client too
        rss_base = _rss_mib()

        started = time.perf_counter()
        for records in _records(n, chunk):
            await stage.append(key, records)
        write_s = time.perf_counter() - started
        rss_after_write = _rss_mib()

        started = time.perf_counter()
        read = 0
        async for records in stage.read(key, chunk):
            read += len(records)
        read_s = time.perf_counter() - started
        if read != n:
            raise RuntimeError(f"read {read} records back, wrote {n}")

        await stage.drop_batch(key.tenant_id, key.batch_id)
    return {
        "records": n,
        "record_bytes": len(orjson.dumps(next(_records(1, 1))[0])),  # as RedisStage stores it
        "write_per_s": n / write_s,
        "read_per_s": n / read_s,
        "rss_base_mib": rss_base,
        "rss_after_write_mib": rss_after_write,
        "rss_peak_mib": _rss_mib(),
    }


if __name__ == "__main__":
    main()
