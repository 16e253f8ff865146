"""Measure the server stages: write N records of ~300 bytes in chunks, stream them back, report rates and peak RSS.

    python -m benchmarks.bench_stage --records 10000 200000 [--stage redis mongo]

Each N and stage runs in a fresh Python subprocess, because a process's peak RSS (ru_maxrss) never goes down; a
streaming stage shows the same peak for every N. It starts its own redis-server and SecantusDB (a MongoDB-wire
server in Python, far slower than mongod) on free loopback ports; with MONGO_URL set, the Mongo stage runs on
that server instead (a database of its own, dropped afterwards). A measurement, not a test: nothing here
asserts, and CI does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import orjson

from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.url import open_stage_url, shown_url

from benchmarks.servers import stage_servers

_MODULE = "benchmarks.bench_stage"
_CHILD_ENV = "BENCH_STAGE_URL"  # the stage URL for the child: never on its command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[10_000, 200_000], help="record counts")
    parser.add_argument("--chunk", type=int, default=1000, help="records per append and per read chunk")
    parser.add_argument("--stage", nargs="+", choices=["redis", "mongo"], default=["redis", "mongo"], help="stages")
    args = parser.parse_args(argv)
    if os.environ.get(_CHILD_ENV):  # the child that measures one count
        for n in args.records:
            print(json.dumps(asyncio.run(_measure(os.environ[_CHILD_ENV], n, args.chunk))), flush=True)
        return
    with ExitStack() as servers:
        urls = stage_servers(servers, args.stage)
        for stage, url in urls.items():
            print(f"{stage}: {shown_url(url)}")
        print(
            f"chunk {args.chunk} records\n{'records':>9} {'stage':>6} {'bytes/rec':>9} {'write rec/s':>12}"
            f" {'read rec/s':>11} {'RSS base MiB':>13} {'after write':>12} {'peak (read)':>12}"
        )
        for n in args.records:
            for stage, url in urls.items():
                row = _run_child(url, n, args.chunk)
                print(
                    f"{row['records']:>9} {stage:>6} {row['record_bytes']:>9} {row['write_per_s']:>12,.0f}"
                    f" {row['read_per_s']:>11,.0f} {row['rss_base_mib']:>13.1f} {row['rss_after_write_mib']:>12.1f}"
                    f" {row['rss_peak_mib']:>12.1f}",
                    flush=True,
                )


def _run_child(url: str, n: int, chunk: int) -> dict[str, Any]:
    """One count in a fresh interpreter, so its peak RSS is its own."""
    command = [sys.executable, "-m", _MODULE, "--records", str(n), "--chunk", str(chunk)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ | {_CHILD_ENV: url})
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
    stage = open_stage_url(url, prefix="restful-etl", ttl=3600)
    try:
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
    finally:
        aclose = getattr(stage, "aclose", None)  # not flows.resources.close_stage: Prefect would weigh on the RSS
        if aclose is not None:
            await aclose()
    return {
        "records": n,
        "record_bytes": len(orjson.dumps(next(_records(1, 1))[0])),  # as both stages store it
        "write_per_s": n / write_s,
        "read_per_s": n / read_s,
        "rss_base_mib": rss_base,
        "rss_after_write_mib": rss_after_write,
        "rss_peak_mib": _rss_mib(),
    }


if __name__ == "__main__":
    main()
