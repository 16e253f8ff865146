"""Measure a batch's peak memory: crm-to-accounting's extract, transform and load of N customers, per stage.

    python -m benchmarks.bench_memory --records 10000 200000 [--stage redis mongo memory]
    python -m benchmarks.bench_memory --one-page --records 100000 1000000

With `--one-page` the extract alone reads all N customers as one page (the demo CRM's `/all/customers`) into
the Redis stage, streamed as the body arrives (the product), next to the same extract reading the page whole
first (the reference: what the product did before it streamed large pages).

Each count and stage runs in a fresh Python subprocess, because a process's peak RSS (ru_maxrss) never goes
down. The child runs the engine's runners (what the Prefect tasks wrap) against the demo APIs with N CRM
customers, on a private redis-server or SecantusDB on a free loopback port (MONGO_URL's server instead, where
set; see benchmarks/servers.py), or the memory stage, and reports its peak RSS after each job. On Redis and
MongoDB a job holds a page or a chunk of records at a time, and the per-key bookkeeping (the load's index of
the destination, where each key last occurs, the unique screen's claims) rests on the stage too.
A measurement, not a test: nothing here asserts, and CI does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
from prefect_restful_etl.flows.resources import api_configs, close_stage, open_clients
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlBatch
from prefect_restful_etl.tasks.engine.context import BatchContext, ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.extract.job import ExtractJob, run_extract
from prefect_restful_etl.tasks.engine.load.job import LoadJob, run_load
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.base import DEFAULT_TTL
from prefect_restful_etl.tasks.engine.stage.url import open_stage_url
from prefect_restful_etl.tasks.engine.transform.job import TransformJob, run_transform

from benchmarks.servers import stage_servers

_MODULE = "benchmarks.bench_memory"
_CHILD_ENV = "BENCH_MEMORY_CHILD"  # URLs and secrets for the child: never on its command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[10_000, 200_000], help="CRM customer counts")
    parser.add_argument(
        "--stage", nargs="+", choices=["redis", "mongo", "memory"], default=["redis", "mongo"], help="stages to run"
    )
    parser.add_argument("--one-page", action="store_true", help="the extract alone, all records in one page")
    args = parser.parse_args(argv)
    if os.environ.get(_CHILD_ENV):
        config = json.loads(os.environ[_CHILD_ENV])
        run = _one_page if config.get("one_page") else _batch
        print(json.dumps(asyncio.run(run(config))), flush=True)
        return
    if args.one_page:
        _one_page_table(args.records)
        return
    print(
        f"{'records':>8} {'stage':>6} {'seconds':>8} {'extracted':>9} {'inserted':>9}"
        f" {'peak RSS MiB: start':>20} {'extract':>8} {'transform':>9} {'load':>8}"
    )
    with ExitStack() as servers:
        urls = stage_servers(servers, args.stage)
        for n in args.records:
            with DemoApis(crm_customers=n, ready_timeout=600) as apis:
                for stage, url in urls.items():
                    apis.reset()
                    row = _run_child(apis, url)
                    peaks = row["peak_mib"]
                    print(
                        f"{n:>8} {stage:>6} {row['seconds']:>8.1f} {row['counts']['extracted']:>9}"
                        f" {row['counts']['inserted']:>9} {peaks['start']:>20.1f} {peaks['extract']:>8.1f}"
                        f" {peaks['transform']:>9.1f} {peaks['load']:>8.1f}",
                        flush=True,
                    )


def _one_page_table(counts: list[int]) -> None:
    print(f"{'records':>8} {'page MB':>8} {'read':>8} {'seconds':>8} {'extracted':>9}", end="")
    print(f" {'peak RSS MiB: start':>20} {'extract':>8}")
    with ExitStack() as servers:
        redis_url = stage_servers(servers, ["redis"])["redis"]
        for n in counts:
            with DemoApis(crm_customers=n, ready_timeout=1200) as apis:
                for mode in ("streamed", "whole"):
                    try:
                        row = _run_child(apis, redis_url, one_page=mode)
                    except SystemExit as ex:  # the old way may fail outright: say how, go on with the table
                        print(f"{n:>8} {'':>8} {mode:>8} failed: {str(ex).strip().splitlines()[-1][:200]}", flush=True)
                        continue
                    peaks = row["peak_mib"]
                    extracted = row["counts"]["extracted"]
                    print(
                        f"{n:>8} {row['page_mb']:>8.1f} {mode:>8} {row['seconds']:>8.1f} {extracted:>9}"
                        f" {peaks['start']:>20.1f} {peaks['extract']:>8.1f}",
                        flush=True,
                    )


def _run_child(apis: DemoApis, stage_url: str, one_page: str = "") -> dict[str, Any]:
    """One batch in a fresh interpreter, so that its peak RSS is its own."""
    config = {
        "crm": apis.crm_url,
        "accounting": apis.accounting_url,
        "crm_token": apis.crm_token,
        "accounting_api_key": apis.accounting_api_key,
        "stage_url": stage_url,
        "one_page": one_page,
    }
    done = subprocess.run(
        [sys.executable, "-m", _MODULE],
        check=False,
        capture_output=True,
        text=True,
        env=os.environ | {_CHILD_ENV: json.dumps(config)},
    )
    if done.returncode != 0:
        raise SystemExit(f"the measured batch failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def _batch(config: dict[str, str]) -> dict[str, Any]:
    """crm-to-accounting through the engine's runners, as the Prefect tasks run them; peak RSS after each job."""
    peaks = {"start": _peak_mib()}
    apis = api_configs(CRM_TO_ACCOUNTING, {"crm": config["crm"], "accounting": config["accounting"]})
    credentials = {
        "crm": Credentials(token=SecretStr(config["crm_token"])),
        "accounting": Credentials(api_key=SecretStr(config["accounting_api_key"])),
    }
    stage = open_stage_url(config["stage_url"], prefix="restful-etl", ttl=DEFAULT_TTL)
    counts: dict[str, int] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as workdir:
        audit = await AuditStore.open(f"sqlite:///{Path(workdir) / 'audit.db'}")
        ctx = BatchContext(
            tenant_id="bench",
            batch_id=str(uuid.uuid4()),
            batch_type=CRM_TO_ACCOUNTING.name,
            stage=stage,
            audit=audit,
            clients=open_clients(apis, credentials),
            full_refresh=True,
        )
        await audit.add(EtlBatch(batch_id=ctx.batch_id, tenant_id="bench", batch_type=CRM_TO_ACCOUNTING.name))
        try:
            for job in CRM_TO_ACCOUNTING.jobs:
                counts.update((await _run(job, ctx)).counts)
                peaks[job.kind] = _peak_mib()
        finally:
            await stage.drop_batch(ctx.tenant_id, ctx.batch_id)
            for client in ctx.clients.values():
                await client.aclose()
            await close_stage(stage)
            await audit.close()
    return {"seconds": time.perf_counter() - started, "counts": counts, "peak_mib": peaks}


async def _one_page(config: dict[str, str]) -> dict[str, Any]:
    """The extract alone, every customer in one page (streamed, or read whole as before), into the Redis stage."""
    from prefect_restful_etl.tasks.engine.http import streaming

    if config["one_page"] == "whole":
        streaming.STREAM_OVER = 1 << 62
    peaks = {"start": _peak_mib()}
    base = CRM_TO_ACCOUNTING.model_dump()
    base["apis"]["crm"]["paginator"] = {"type": "single_page"}
    base["apis"]["crm"]["timeout"] = 1200
    base["jobs"][0]["endpoint"] = {"path": "/all/customers"}
    base["jobs"][0]["incremental"] = None
    batch_type = type(CRM_TO_ACCOUNTING).model_validate(base)
    apis = api_configs(batch_type, {"crm": config["crm"], "accounting": config["accounting"]})
    credentials = {"crm": Credentials(token=SecretStr(config["crm_token"]))}
    stage = open_stage_url(config["stage_url"], prefix="restful-etl", ttl=DEFAULT_TTL)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as workdir:
        audit = await AuditStore.open(f"sqlite:///{Path(workdir) / 'audit.db'}")
        clients = open_clients({"crm": apis["crm"]}, credentials)
        ctx = BatchContext(
            tenant_id="bench",
            batch_id=str(uuid.uuid4()),
            batch_type=batch_type.name,
            stage=stage,
            audit=audit,
            clients=clients,
            full_refresh=True,
        )
        try:
            report = await _run(batch_type.jobs[0], ctx)
            peaks["extract"] = _peak_mib()
            page_mb = await _page_megabytes(config)
        finally:
            await stage.drop_batch(ctx.tenant_id, ctx.batch_id)
            for client in clients.values():
                await client.aclose()
            await close_stage(stage)
            await audit.close()
    return {"seconds": time.perf_counter() - started, "counts": report.counts, "peak_mib": peaks, "page_mb": page_mb}


async def _page_megabytes(config: dict[str, str]) -> float:
    """The size of the one page (its Content-Length), asked after the extract: its body is never read here."""
    import httpx

    headers = {"Authorization": f"Bearer {config['crm_token']}"}
    url = f"{config['crm']}/all/customers"
    async with httpx.AsyncClient(headers=headers, timeout=1200) as client, client.stream("GET", url) as response:
        return int(response.headers.get("Content-Length", 0)) / 1e6


async def _run(job: ExtractJob | TransformJob | LoadJob, ctx: BatchContext) -> JobReport:
    report = JobReport(job=job.name, kind=job.kind, job_id=str(uuid.uuid4()))
    errors = ErrorSink(ctx, job.name, report.job_id)
    if isinstance(job, ExtractJob):
        return await run_extract(job, ctx, report, errors)
    source = ctx.stage_key(CRM_TO_ACCOUNTING.job(job.source).slug)
    if isinstance(job, TransformJob):
        key_fields = CRM_TO_ACCOUNTING.natural_key_of(job)
        return await run_transform(job, ctx, report, errors, source=source, key_fields=key_fields)
    return await run_load(job, ctx, report, errors, source=source)


if __name__ == "__main__":
    main()
