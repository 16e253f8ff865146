"""`restful-etl`: the client of a restful-etl installation, over Prefect's REST API and the audit database.

Set PREFECT_API_URL to the Prefect server; the audit database comes from the same `RESTFUL_ETL_*` settings
the workers use. Every tenant command takes `--tenant` and prints a table, or JSON with `--json`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
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
from prefect_restful_etl.deployments.cli import project, records
from prefect_restful_etl.deployments.cli.hooks import hooks_app, intake_rows
from prefect_restful_etl.deployments.cli.output import console, errors, show, show_one, table
from prefect_restful_etl.deployments.cli.watch import BatchView, watch_batch
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, generate_key, seal, seal_key_from_env
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
Seal = Annotated[bool, typer.Option("--seal", help=f"Seal plain credentials with {SEAL_KEY_ENV} before sending.")]
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
    from prefect_restful_etl.flows.catalog import batch_flows

    known = sorted(batch_flows())
    if name is None and len(known) == 1:
        return known[0]
    if name not in known:
        errors.print(f"[red]--batch-type: one of {known}[/red]")
        raise typer.Exit(2)
    return name


def _batch_type_filter(name: str | None) -> str | None:
    """None (every batch type), or a batch type there is: a misspelt one would match nothing, silently."""
    return None if name is None else _batch_type(name)


def _pairs(option: str, values: list[str] | None) -> dict[str, str]:
    pairs = dict(v.split("=", 1) for v in values or [] if "=" in v)
    if len(pairs) != len(values or []):
        raise typer.BadParameter("give API=VALUE", param_hint=option)
    return pairs


def _credentials(path: Path, sealing: bool) -> dict[str, Any]:
    try:
        parameters = prefect_api.credential_parameters(
            path.read_text(), seal_key=seal_key_from_env() if sealing else None
        )
    except ConfigError as ex:
        errors.print(f"[red]{ex}[/red]")
        raise typer.Exit(2) from None
    if "credentials" in parameters:
        errors.print(
            "[yellow]plain credentials: Prefect holds them in clear until the run starts or ends; "
            "`--seal` keeps them from Prefect altogether[/yellow]"
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
    seal_: Seal = False,
    full_refresh: Annotated[bool, typer.Option("--full-refresh")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    base_url: Pairs = None,
    api_block: Pairs = None,
    callback_url: Annotated[str | None, typer.Option(help="POST the batch report here when it ends.")] = None,
    watch: Watch = False,
    as_json: Json = False,
) -> None:
    """Start a batch of the tenant through the batch type's deployment."""
    parameters: dict[str, Any] = {**_credentials(credentials, seal_), "full_refresh": full_refresh}
    extras = {
        "base_urls": _pairs("--base-url", base_url),
        "api_blocks": _pairs("--api-block", api_block),
        "callback_url": callback_url,
        "dry_run": dry_run,
    }
    parameters |= {name: value for name, value in extras.items() if value}
    _start(_batch_type(batch_type), tenant, parameters, False, watch, as_json)


@app.command()
def resync(
    tenant: Tenant,
    credentials: CredentialsFile,
    batch_type: BatchTypeOpt = None,
    seal_: Seal = False,
    base_url: Pairs = None,
    watch: Watch = False,
    as_json: Json = False,
) -> None:
    """Start a full re-sync (the `-full-resync` deployment): read everything, reset the watermarks."""
    parameters = {
        **_credentials(credentials, seal_),
        **({"base_urls": _pairs("--base-url", base_url)} if base_url else {}),
    }
    _start(_batch_type(batch_type), tenant, parameters, True, watch, as_json)


@app.command()
def restart(
    batch_id: str,
    tenant: Tenant,
    credentials: CredentialsFile,
    seal_: Seal = False,
    watch: Watch = False,
    as_json: Json = False,
) -> None:
    """A new run that resumes a failed or cancelled batch at its first unfinished job."""

    async def go() -> dict[str, Any]:
        async with get_client() as client:
            new = await prefect_api.restart(client, batch_id, tenant, _credentials(credentials, seal_))
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
    limit: Annotated[int | None, typer.Option(help="Runs at once.")] = None,
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
) -> None:
    """Serve every batch type (incremental and full re-sync deployments) from this process."""
    from prefect_restful_etl.deployments.serve import serve_all

    sealed = None
    if tenant and credentials:
        sealed = _credentials(credentials, bool(os.environ.get(SEAL_KEY_ENV))).get("sealed_credentials")
        if sealed is None:
            errors.print(f"[red]a schedule needs sealed credentials: set {SEAL_KEY_ENV} or `restful-etl seal`[/red]")
            raise typer.Exit(2)
    try:
        serve_all(limit=limit, tenant_id=tenant, sealed_credentials=sealed)
    except ConfigError as ex:  # a batch type file that does not load: `restful-etl validate` tells more
        errors.print(str(ex), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("seal")
def seal_(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON credentials by API name.")],
) -> None:
    """Seal a credentials file with RESTFUL_ETL_SEAL_KEY; prints the ciphertext for `run --credentials`."""
    try:
        print(seal(json.loads(path.read_text()), seal_key_from_env()))
    except (ConfigError, ValueError) as ex:
        errors.print(f"[red]{ex}[/red]")
        raise typer.Exit(2) from None


@app.command()
def keygen() -> None:
    """A new sealing key: give it to the workers (and whoever seals) as RESTFUL_ETL_SEAL_KEY."""
    print(generate_key())


# A user's own batch types: deployments/cli/project.py
app.command()(project.init)
app.command()(project.validate)
app.command()(project.schema)
app.command()(project.plan)
app.command("batch-types")(project.batch_types)


if __name__ == "__main__":
    sys.exit(app())
