"""`restful-etl docs`: the configuration reference, written from the models of the installed version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prefect_restful_etl.deployments.cli.output import console, errors


def docs(
    folder: Annotated[Path, typer.Argument(file_okay=False, help="Where the pages go.")] = Path("docs"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if a page differs from what the models say.")
    ] = False,
) -> None:
    """Write the reference (reference.md, paging.md, auth.md ...), generated from the models; exit 2 when a model
    lacks a description or an example, naming it."""
    from prefect_restful_etl.flows.reference import problems, stale, write

    gaps = problems()
    if gaps:
        for gap in gaps:
            errors.print(f"gap: {gap}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2)
    if check:
        differ = stale(folder)
        for name in differ:
            errors.print(f"stale {folder / name}: run `restful-etl docs {folder}`", highlight=False, soft_wrap=True)
        if differ:
            raise typer.Exit(1)
        console.print(f"ok {folder}: every page is what the models say", highlight=False, soft_wrap=True)
        return
    for path in write(folder):
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
