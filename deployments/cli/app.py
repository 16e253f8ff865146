"""`restful-etl`: the client of a restful-etl installation, over Prefect's REST API and the audit database.

Set PREFECT_API_URL to the Prefect server; the audit database comes from the same `RESTFUL_ETL_*` settings
the workers use. Every tenant command takes `--tenant` and prints a table, or JSON with `--json`.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
from collections.abc import Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar
from uuid import UUID

import typer
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from rich.live import Live

from prefect_restful_etl.deployments.cli import client as prefect_api
from prefect_restful_etl.deployments.cli import project, records, reference
from prefect_restful_etl.deployments.cli import sealing as cli_sealing
from prefect_restful_etl.deployments.cli.hooks import hooks_app, intake_rows
from prefect_restful_etl.deployments.cli.output import console, errors, show, show_one, table
from prefect_restful_etl.deployments.cli.watch import BatchView, watch_batch
from prefect_restful_etl.flows.keys import (
    PRIVATE_KEY_ENV,
    PUBLIC_KEY_ENV,
    generate_key_pair,
    public_key_from_env,
    publish_public_key,
)
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, generate_key
from prefect_restful_etl.tasks.engine.exceptions import ConfigError

app = typer.Typer(help=__doc__.splitlines()[0], no_args_is_help=True, pretty_exceptions_enable=False)
blocks_app = typer.Typer(help="The package's Prefect Blocks.", no_args_is_help=True)
app.add_typer(blocks_app, name="blocks")
app.add_typer(hooks_app, name="hooks")

T = TypeVar("T")
Tenant = Annotated[str, typer.Option("--tenant", "-t", help="The tenant whose batches these are.")]
BatchTypeOpt = Annotated[str | None, typer.Option("--batch-type", "-b", help="Default: the only batch type there is.")]
BatchTypeFilter = Annotated[
    str | None, typer.Option("--batch-type", "-b", help="Only this batch type's batches. Default: every batch type.")
]
Json = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]
CredentialsFile = Annotated[
    Path,
    typer.Option(
        "--credentials",
        "-c",
        exists=True,
        dir_okay=False,
        help="JSON credentials by API name, or the output of `restful-etl seal`.",
    ),
]
Seal = Annotated[
    bool | None,
    typer.Option(
        "--seal/--no-seal",
        help="Seal plain credentials before sending (default: when the workers' public key is at hand; "
        f"--seal falls back on {SEAL_KEY_ENV}).",
    ),
]
Watch = Annotated[bool, typer.Option("--watch", "-w", help="Follow the batch until it ends.")]
Pairs = Annotated[list[str] | None, typer.Option(help="API=VALUE, repeatable.")]

# What a table shows (JSON has every field): narrow enough for an 80-column terminal
HISTORY_COLUMNS = (
    "batch_id",
    "state",
    "started",
    "seconds",
    "full_refresh",
    "extracted",
    "inserted",
    "updated",
    "rejected",
)
JOB_COLUMNS = ("job", "status", "extracted", "transformed", "rejected", "inserted", "updated", "unchanged", "seconds")
WATCH_COLUMNS = ("job", "status", "records", "counts")
HOOK_COLUMNS = ("batch_type", "accepted", "duplicates", "refused", "micro_batches")
BATCH_FIELDS = (
    "batch_id",
    "batch_type",
    "state",
    "status",
    "started",
    "ended",
    "seconds",
    "full_refresh",
    "resumed_from",
    *JOB_COLUMNS[2:-1],
    "failed_writes",
    "quality_score",
    "message",
)


def _sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; a user's mistake is one red line and exit 2, not a traceback."""
    try:
        return asyncio.run(coroutine)
    except (ConfigError, prefect_api.ClientError) as ex:
        errors.print(f"[red]{ex}[/red]")
        raise typer.Exit(2) from None


def _batch_type(name: str | None) -> str:
    """The batch type a command is for: one the catalog finds here (by default, the only one), or one Prefect has
    deployments for, served or deployed from a project elsewhere: its runs find it where they run."""
    from prefect_restful_etl.flows.catalog import FOLDER_ENV, batch_flows, batch_types_folder

    here = sorted(batch_flows())
    deployed: set[str] | None = None
    if name is None:
        if len(here) == 1:
            return here[0]
    elif name in here:
        return name
    else:
        deployed = _sync(_deployed_batch_types(name))
        if deployed is not None and name in deployed:
            return name
    known = sorted({*here, *(deployed or ())})
    where = f"those defined in {batch_types_folder()} ({FOLDER_ENV}), the entry points or the package"
    if deployed is not None:
        where += ", and those deployed on Prefect"
    elif name is not None:
        where += "; set PREFECT_API_URL to take those deployed on Prefect too"
    errors.print(f"--batch-type: one of {known} ({where})", style="red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


async def _deployed_batch_types(name: str) -> set[str] | None:
    """The batch types Prefect has deployments for; None without a Prefect API to ask (asking would start a
    temporary server of its own, which has none)."""
    from prefect.settings import get_current_settings

    from prefect_restful_etl.flows.catalog import deployed_batch_types

    if not get_current_settings().api.url:
        return None
    try:
        async with get_client() as client:
            return await deployed_batch_types(client)
    except Exception as ex:  # the API is not reachable, or refused the question
        raise prefect_api.ClientError(
            f"--batch-type: {name!r} is not defined here, and the Prefect API did not say whether it has deployments "
            f"for it ({type(ex).__name__})"
        ) from None


def _batch_type_filter(name: str | None) -> str | None:
    """None (every batch type), or a batch type there is: a misspelt one would match nothing, silently."""
    return None if name is None else _batch_type(name)


def _pairs(option: str, values: list[str] | None) -> dict[str, str]:
    pairs = dict(v.split("=", 1) for v in values or [] if "=" in v)
    if len(pairs) != len(values or []):
        raise typer.BadParameter("give API=VALUE", param_hint=option)
    return pairs


async def _credentials(
    path: Path,
    sealing: bool | None,
    tenant: str,
    batch_type: str,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run parameters for a credentials file, sealed (by default, when a public key is at hand) for the
    tenant and the hosts this run sends each API's credentials to (`run`: its base_urls, api_blocks and
    callback_url)."""
    run = run or {}
    apis = await cli_sealing.run_apis(batch_type, run.get("base_urls"), run.get("api_blocks"))
    parameters = await cli_sealing.credential_parameters(
        path.read_text(), tenant_id=tenant, apis=apis, callback_url=run.get("callback_url"), sealing=sealing
    )
    if "credentials" in parameters:
        errors.print(
            "[yellow]plain credentials: Prefect holds them in clear until the run starts or ends (and a SQLite "
            "Prefect database keeps copies in its files); sealing keeps them from Prefect altogether[/yellow]"
        )
    return parameters


async def _follow(batch_id: str, as_json: bool, deadline: float) -> BatchView:
    async with get_client() as client:
        run = await client.read_flow_run(UUID(batch_id))
    since = run.created - timedelta(minutes=1) if run.created else None
    state = run.state.name if run.state else None
    if as_json:
        return await watch_batch(batch_id, since=since, deadline=deadline, flow_state=state)
    with Live(table(f"batch {batch_id}", [], WATCH_COLUMNS), console=console, auto_refresh=False) as live:

        def render(view: BatchView) -> None:
            live.update(table(f"batch {batch_id}: {view.status}", view.rows(), WATCH_COLUMNS), refresh=True)

        view = await watch_batch(batch_id, since=since, deadline=deadline, flow_state=state, on_change=render)
        render(view)
    console.print()
    return view


def _report_view(view: BatchView, as_json: bool) -> None:
    if as_json:
        show_one("batch", view.as_json(), as_json=True)
    else:
        ended = view.status if view.finished else f"not finished (flow run {view.flow_state or 'unknown'})"
        console.print(f"batch {view.batch_id}: {ended}")
    if view.status != "COMPLETED":
        raise typer.Exit(1)


async def _trigger(batch_type: str, tenant: str, parameters: dict[str, Any], full_resync: bool) -> dict[str, Any]:
    async with get_client() as client:
        run = await prefect_api.trigger(client, batch_type, tenant, parameters, full_resync=full_resync)
    return {"batch_id": str(run.id), "name": run.name, "state": run.state.name if run.state else ""}


def _start(
    batch_type: str, tenant: str, parameters: dict[str, Any], full_resync: bool, watch: bool, as_json: bool
) -> None:
    started = _sync(_trigger(batch_type, tenant, parameters, full_resync))
    if not watch:
        show_one("batch created", started, as_json=as_json)
        return
    if not as_json:
        console.print(f"batch {started['batch_id']} created; following it")
    _report_view(_sync(_follow(started["batch_id"], as_json, 600.0)), as_json)


@app.command()
def run(
    tenant: Tenant,
    credentials: CredentialsFile,
    batch_type: BatchTypeOpt = None,
    seal_: Seal = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    base_url: Pairs = None,
    api_block: Pairs = None,
    callback_url: Annotated[str | None, typer.Option(help="POST the batch report here when it ends.")] = None,
    watch: Watch = False,
    as_json: Json = False,
) -> None:
    """Start a batch of the tenant through the batch type's deployment."""
    name = _batch_type(batch_type)
    extras = {
        "base_urls": _pairs("--base-url", base_url),
        "api_blocks": _pairs("--api-block", api_block),
        "callback_url": callback_url,
        "dry_run": dry_run,
    }
    parameters: dict[str, Any] = {name: value for name, value in extras.items() if value}
    parameters |= {**_sync(_credentials(credentials, seal_, tenant, name, parameters)), "full_refresh": full_refresh}
    _start(name, tenant, parameters, False, watch, as_json)


@app.command()
def resync(
    tenant: Tenant,
    credentials: CredentialsFile,
    batch_type: BatchTypeOpt = None,
    seal_: Seal = None,
    base_url: Pairs = None,
    watch: Watch = False,
    as_json: Json = False,
) -> None:
    """Start a full re-sync (the `-full-resync` deployment): read everything, reset the watermarks."""
    name = _batch_type(batch_type)
    parameters: dict[str, Any] = {"base_urls": _pairs("--base-url", base_url)} if base_url else {}
    parameters |= _sync(_credentials(credentials, seal_, tenant, name, parameters))
    _start(name, tenant, parameters, True, watch, as_json)


@app.command()
def restart(
    batch_id: str,
    tenant: Tenant,
    credentials: CredentialsFile,
    seal_: Seal = None,
    watch: Watch = False,
    as_json: Json = False,
) -> None:
    """A new run that resumes a failed or cancelled batch at its first unfinished job."""

    async def sealed_for(batch_type: str, carried: dict[str, Any]) -> dict[str, Any]:
        return await _credentials(credentials, seal_, tenant, batch_type, carried)

    async def go() -> dict[str, Any]:
        async with get_client() as client:
            new = await prefect_api.restart(client, batch_id, tenant, sealed_for)
        return {"batch_id": str(new.id), "resumes": batch_id, "state": new.state.name if new.state else ""}

    restarted = _sync(go())
    if watch:
        _report_view(_sync(_follow(restarted["batch_id"], as_json, 600.0)), as_json)
    else:
        show_one("batch restarted", restarted, as_json=as_json)


@app.command()
def cancel(batch_id: str, tenant: Tenant, as_json: Json = False) -> None:
    """Cancel a running or scheduled batch of the tenant."""

    async def go() -> dict[str, Any]:
        async with get_client() as client:
            return prefect_api.run_row(await prefect_api.cancel(client, batch_id, tenant))

    show_one("batch", _sync(go()), as_json=as_json)


@app.command()
def watch(
    batch_id: str,
    tenant: Tenant,
    deadline: Annotated[float, typer.Option(help="Seconds.")] = 600.0,
    as_json: Json = False,
) -> None:
    """A live table of the batch's jobs, from Prefect's events websocket, until the batch ends."""

    async def check() -> None:
        async with get_client() as client:
            await prefect_api.tenant_run(client, batch_id, tenant)

    _sync(check())
    _report_view(_sync(_follow(batch_id, as_json, deadline)), as_json)


@app.command()
def status(
    tenant: Tenant,
    batch_id: Annotated[str | None, typer.Argument()] = None,
    batch_type: BatchTypeFilter = None,
    as_json: Json = False,
) -> None:
    """A batch's state in Prefect and its jobs in the audit database (default: the tenant's batch that started
    last; a scheduled one that has not started is in `history`)."""
    batch_type = _batch_type_filter(batch_type)

    async def go() -> dict[str, Any]:
        async with get_client() as client:
            if batch_id:
                run = await prefect_api.tenant_run(client, batch_id, tenant)
            else:
                found = await prefect_api.latest_started_run(client, tenant, batch_type)
                if found is None:
                    raise prefect_api.ClientError(f"tenant {tenant!r} has no batch that has started")
                run = found
        async with records.audit_store() as store:
            detail = await records.batch_detail(store, str(run.id), tenant)
        batch, jobs = detail if detail else (None, [])
        hooks = await intake_rows(tenant, [batch_type] if batch_type else [str((batch or {}).get("batch_type", ""))])
        return {"run": prefect_api.run_row(run), "batch": batch, "jobs": jobs, "hooks": hooks}

    result = _sync(go())
    if as_json:
        show_one("status", result, as_json=True)
        return
    merged = {**(result["batch"] or {}), **result["run"]}  # Prefect's state and times, the audit's counts
    show_one("batch", {name: merged[name] for name in BATCH_FIELDS if name in merged}, as_json=False)
    show("jobs", result["jobs"], as_json=False, columns=JOB_COLUMNS)
    if result["hooks"]:  # the tenant's hooks of this batch type: what the receiver's intake counted
        show("hook intake", result["hooks"], as_json=False, columns=HOOK_COLUMNS)


@app.command()
def history(tenant: Tenant, batch_type: BatchTypeFilter = None, limit: int = 20, as_json: Json = False) -> None:
    """The tenant's batches, newest first (scheduled ones by their expected start): Prefect's state with the
    audit database's counts."""
    batch_type = _batch_type_filter(batch_type)

    async def go() -> list[dict[str, Any]]:
        async with get_client() as client:
            runs = await prefect_api.tenant_runs(client, tenant, batch_type, limit=limit)
        async with records.audit_store() as store:
            audited = {row["batch_id"]: row for row in await records.history(store, tenant, batch_type, limit * 2)}
        keep = ("extracted", "inserted", "updated", "rejected")
        return [
            {**(row := prefect_api.run_row(r)), **{k: audited.get(row["batch_id"], {}).get(k, "") for k in keep}}
            for r in runs
        ]

    show(f"history of {tenant}", _sync(go()), as_json=as_json, columns=HISTORY_COLUMNS)


def _audited(query: Any, *args: Any) -> Any:
    async def go() -> Any:
        async with records.audit_store() as store:
            return await query(store, *args)

    return _sync(go())


@app.command("last-sync")
def last_sync(tenant: Tenant, batch_type: BatchTypeFilter = None, as_json: Json = False) -> None:
    """The tenant's latest completed batch."""
    batch_type = _batch_type_filter(batch_type)
    show_one(f"last sync of {tenant}", _audited(records.last_sync, tenant, batch_type), as_json=as_json)


@app.command("connected-since")
def connected_since(tenant: Tenant, batch_type: BatchTypeFilter = None, as_json: Json = False) -> None:
    """The tenant's first completed batch: since when its systems are connected."""
    batch_type = _batch_type_filter(batch_type)
    show_one(f"{tenant} connected since", _audited(records.connected_since, tenant, batch_type), as_json=as_json)


@app.command("errors")
def errors_(batch_id: str, tenant: Tenant, limit: int = 100, as_json: Json = False) -> None:
    """The batch's error events (screens, conversions, refused writes) from the audit database."""
    show(f"error events of batch {batch_id}", _audited(records.errors, batch_id, tenant, limit), as_json=as_json)


@blocks_app.command("register")
def blocks_register() -> None:
    """Register the Block types (same as `prefect block register -m prefect_restful_etl.blocks`)."""
    import prefect_restful_etl.blocks as module

    async def go() -> list[str]:
        found = [cls for _, cls in inspect.getmembers(module) if inspect.isclass(cls) and Block.is_block_class(cls)]
        for cls in found:
            await cls.aregister_type_and_schema()
        return [cls.get_block_type_slug() for cls in found]

    for slug in _sync(go()):
        console.print(f"registered {slug}")


@app.command()
def serve(
    limit: Annotated[int | None, typer.Option(help="Runs at once (with --in-process, 20 by default).")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Schedule this tenant hourly.")] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            "--credentials",
            "-c",
            exists=True,
            dir_okay=False,
            help="The scheduled tenant's sealed credentials (or plain, sealed here).",
        ),
    ] = None,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="Run each flow run as a task of this process (Prefect's flow engine), not a process of its own.",
        ),
    ] = False,
    poll: Annotated[
        float | None,
        typer.Option(min=0.05, help="With --in-process: seconds between polls for runs to start (default 0.5)."),
    ] = None,
) -> None:
    """Serve every batch type (incremental and full re-sync deployments) from this process."""
    from prefect_restful_etl.deployments.serve import serve_all

    sealed = None
    if tenant and credentials:
        sealed = _sync(_schedule_credentials(credentials, tenant))
    try:
        serve_all(limit=limit, tenant_id=tenant, sealed_credentials=sealed, in_process=in_process, poll=poll)
    except ConfigError as ex:  # a batch type file that does not load: `restful-etl validate` tells more
        errors.print(str(ex), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


async def _schedule_credentials(path: Path, tenant: str) -> str:
    """A schedule's credentials, sealed: for every batch type served, bound to the hosts each names."""
    from prefect_restful_etl.flows.catalog import batch_flows

    sealed: str | None = None
    for batch_type in sorted(batch_flows()):
        try:
            parameters = await cli_sealing.credential_parameters(
                path.read_text(), tenant_id=tenant, apis=await cli_sealing.run_apis(batch_type), sealing=True
            )
        except ConfigError:
            continue  # its APIs are not this batch type's
        sealed = parameters["sealed_credentials"]
    if sealed is None:
        raise ConfigError("--credentials", "name APIs of no batch type served (or there is no key to seal with)")
    return sealed


@app.command("seal")
def seal_(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON credentials by API name.")],
    tenant: Tenant,
    batch_type: BatchTypeOpt = None,
    base_url: Pairs = None,
    api_block: Pairs = None,
    callback_url: Annotated[str | None, typer.Option(help="The callback URL the callback's secret is for.")] = None,
    host: Annotated[
        list[str] | None, typer.Option(help="API=URL: bind the API's credentials to this host instead (repeatable).")
    ] = None,
    symmetric: Annotated[bool, typer.Option("--symmetric", help=f"Seal with {SEAL_KEY_ENV}.")] = False,
) -> None:
    """Seal a credentials file for one tenant, each API's bound to the hosts the batch type (with these base URLs
    and blocks) sends them to; with the workers' public key, or RESTFUL_ETL_SEAL_KEY. Prints the ciphertext for
    `run --credentials` or the `sealed_credentials` parameter."""
    name = _batch_type(batch_type)

    async def go() -> str:
        apis = await cli_sealing.run_apis(name, _pairs("--base-url", base_url), _pairs("--api-block", api_block))
        return await cli_sealing.seal_file(
            path.read_text(),
            tenant_id=tenant,
            apis=apis,
            callback_url=callback_url,
            host_pairs=host,
            symmetric=symmetric,
        )

    print(_sync(go()))


@app.command()
def keygen(
    private_key: Annotated[
        Path | None, typer.Option(help="Write the private key to this file (mode 600) instead of printing it.")
    ] = None,
    public_key: Annotated[Path | None, typer.Option(help="Write the public key to this file.")] = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="Publish the public key as the Prefect Variable restful-etl-public-key.")
    ] = False,
    symmetric: Annotated[
        bool, typer.Option("--symmetric", help=f"A Fernet key for {SEAL_KEY_ENV} instead of a key pair.")
    ] = False,
) -> None:
    """A new key pair: the private key for the workers (RESTFUL_ETL_PRIVATE_KEY), the public key for whoever
    seals (RESTFUL_ETL_PUBLIC_KEY, a file, or published in Prefect). `--symmetric`: one key both sides hold."""
    if symmetric:
        print(generate_key())
        return
    pair = generate_key_pair()
    if private_key is not None:
        private_key.touch(mode=0o600, exist_ok=False)
        private_key.write_text(pair.private + "\n")
    else:
        print(f"{PRIVATE_KEY_ENV}={pair.private}")
    if public_key is not None:
        public_key.write_text(pair.public + "\n")
    else:
        print(f"{PUBLIC_KEY_ENV}={pair.public}")
    if publish:
        _sync(publish_public_key(pair.public))


@app.command("publish-key")
def publish_key() -> None:
    """Publish the public key callers seal with (RESTFUL_ETL_PUBLIC_KEY, or that of the first key of
    RESTFUL_ETL_PRIVATE_KEY) as the Prefect Variable restful-etl-public-key: after a rotation, the new one."""

    async def go() -> str:
        public = public_key_from_env()
        if public is None:
            raise ConfigError(PRIVATE_KEY_ENV, f"is not set (nor {PUBLIC_KEY_ENV}): there is no key to publish")
        await publish_public_key(public)
        return public

    console.print(f"published {_sync(go())}")


@app.command()
def janitor(
    pending_seconds: Annotated[float, typer.Option(help="A run Pending longer than this is stuck.")] = 600.0,
    cancelling_seconds: Annotated[float, typer.Option(help="A run Cancelling longer than this is stuck.")] = 300.0,
    missed_heartbeats: Annotated[int, typer.Option(help="Heartbeat periods a Running run may stay silent.")] = 3,
    lookback_hours: Annotated[float, typer.Option(help="Runs expected to start since then are looked at.")] = 168.0,
    as_json: Json = False,
) -> None:
    """One sweep of the janitor now: mask the credentials of ended and stuck batch runs, end the stuck ones
    (Crashed, or Cancelled when Cancelling), mark their audit rows."""
    from prefect_restful_etl.flows.janitor import Patience, sweep

    patience = Patience(
        pending=pending_seconds,
        cancelling=cancelling_seconds,
        missed_heartbeats=missed_heartbeats,
        lookback=lookback_hours * 3600,
    )

    async def go() -> dict[str, Any]:
        async with get_client() as client:
            done = await sweep(client, patience)
        return {"masked": done.masked, "crashed": done.crashed, "cancelled": done.cancelled, "audited": done.audited}

    show_one("janitor", _sync(go()), as_json=as_json)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    pool: Annotated[str, typer.Option("--pool", "-p", help="The work pool.")] = "restful-etl",
) -> None:
    """`prefect worker start --pool POOL [options]`, after one janitor sweep (runs a killed worker left Pending or
    Running are ended and masked). Other options go to `prefect worker start` as given."""
    from prefect_restful_etl.flows.janitor import sweep_once

    done = sweep_once()
    errors.print(f"janitor: {done.summary()}" if done else "janitor: the start-up sweep did not run")
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, *ctx.args]
    sys.stdout.flush(), sys.stderr.flush()  # what this process printed, before another program takes it over
    os.execv(sys.executable, command)


# A user's own batch types: deployments/cli/project.py
app.command()(project.init)
app.command()(project.validate)
app.command()(project.schema)
app.command()(project.plan)
app.command("batch-types")(project.batch_types)
app.command()(reference.docs)  # deployments/cli/reference.py


if __name__ == "__main__":
    sys.exit(app())
