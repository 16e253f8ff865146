"""`restful-etl hooks ...`: serve the hook receiver, seal a tenant's signing secret, show the intake's counts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from prefect_restful_etl.deployments.cli.output import errors, show
from prefect_restful_etl.flows.sealing import seal_key_from_env
from prefect_restful_etl.tasks.engine.exceptions import ConfigError, StageError

hooks_app = typer.Typer(help="Real-time hooks: the receiver and its intake.", no_args_is_help=True)
ConfigFile = Annotated[
    Path, typer.Option("--config", "-f", exists=True, dir_okay=False, help="The receiver's JSON or YAML file.")
]


@hooks_app.command("serve")
def serve(
    config: ConfigFile,
    host: Annotated[str | None, typer.Option(help="Default: the file's host (127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Default: the file's port (8787); 0 picks a free one.")] = None,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run micro-batches here, not as runs of the hooks deployment.")
    ] = False,
    allow_memory: Annotated[
        bool, typer.Option("--allow-memory-stage", help="Accept the memory stage (not durable: development only).")
    ] = False,
) -> None:
    """Receive signed hooks, store them on the stage, and start micro-batches of the hooks deployment."""
    from prefect_restful_etl.deployments.hook_serve import load_config, run

    try:
        loaded = load_config(config)
        loaded = loaded.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
        run(loaded, in_process=in_process, allow_memory=allow_memory)
    except ConfigError as ex:
        errors.print(f"[red]{ex}[/red]")
        raise typer.Exit(2) from None


@hooks_app.command("seal-secret")
def seal_secret() -> None:
    """Seal a signing secret read from standard input (never an argument: it would show in `ps`)."""
    from prefect_restful_etl.deployments.hook_serve import seal_secret as sealed

    secret = sys.stdin.readline().strip()
    if not secret:
        errors.print("[red]give the secret on standard input[/red]")
        raise typer.Exit(2)
    try:
        print(sealed(secret, seal_key_from_env()))
    except ConfigError as ex:
        errors.print(f"[red]{ex}[/red]")
        raise typer.Exit(2) from None


async def intake_rows(tenant: str, batch_types: list[str]) -> list[dict[str, Any]]:
    """The intake's counts of the tenant per batch type, from the stage the workers use (empty on memory)."""
    from prefect_restful_etl.deployments.hook_serve import open_intake_stage
    from prefect_restful_etl.flows.resources import close_stage
    from prefect_restful_etl.tasks.engine.hooks.counts import totals_of
    from prefect_restful_etl.tasks.engine.hooks.intake import Intake

    try:
        stage = await open_intake_stage()
    except ConfigError:
        return []  # a memory stage holds no intake a client could read
    try:
        intake, rows = Intake(stage), []
        for batch_type in filter(None, batch_types):
            counts = await totals_of(intake, tenant, batch_type)
            if counts:
                refused = sum(v for k, v in counts.items() if k.startswith("refused."))
                rows.append({"batch_type": batch_type, **_main(counts), "refused": refused, **counts})
        return rows
    except StageError as ex:
        errors.print(f"[yellow]the hooks' intake could not be read: {ex}[/yellow]")
        return []
    finally:
        await close_stage(stage)


def _main(counts: dict[str, int]) -> dict[str, int]:
    return {name: counts.get(name, 0) for name in ("accepted", "duplicates", "micro_batches")}


@hooks_app.command("status")
def status(
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="The tenant whose hooks these are.")],
    batch_type: Annotated[str | None, typer.Option("--batch-type", "-b")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """The intake's counts of the tenant: accepted, duplicates, refused (by reason), micro-batches."""
    import asyncio

    from prefect_restful_etl.flows.catalog import batch_flows

    kinds = [batch_type] if batch_type else sorted(batch_flows())
    columns = ("batch_type", "accepted", "duplicates", "refused", "micro_batches")
    show(f"hooks of {tenant}", asyncio.run(intake_rows(tenant, kinds)), as_json=as_json, columns=columns)
