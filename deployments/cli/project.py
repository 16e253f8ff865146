"""The CLI's commands for a user's own batch types: `init`, `validate`, `schema`, `batch-types` and `plan`.

None of them needs a Prefect server; `validate` and `schema` send no request at all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from prefect_restful_etl.deployments.cli.output import console, errors, show
from prefect_restful_etl.flows.batchfiles import SUFFIXES, FileProblem, load_folder
from prefect_restful_etl.flows.catalog import (
    DEFAULT_FOLDER,
    FOLDER_ENV,
    batch_flows_in,
    catalog,
    import_module_file,
)
from prefect_restful_etl.tasks.engine.exceptions import ConfigError

Json = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def init(
    directory: Annotated[Path, typer.Argument(file_okay=False, help="Where to write it (created if missing).")] = Path(
        "."
    ),
    name: Annotated[str | None, typer.Option(help="The batch type's name. Default: from the folder's name.")] = None,
) -> None:
    """Write a starter project: a batch type file, its job types, the JSON Schema, a credentials template
    (git-ignored), a prefect.yaml with both deployments and a README of the next steps."""
    from prefect_restful_etl.deployments.cli.starter import NAME, project_name, starter_files

    name = name or project_name(directory)
    if not NAME.fullmatch(name):
        _fail("--name: lowercase letters, digits and dashes, starting with a letter or digit")
    files = starter_files(directory, name)
    there = sorted(str(path) for path in files if path.exists())
    if there:
        _fail(f"not overwriting what is there: {', '.join(there)}")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    console.print(f"next: see {directory / 'README.md'}", highlight=False)


def validate(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Folders or files. Default: the batch types folder.")
    ] = None,
) -> None:
    """Check batch type files without sending a request: one line per file; exit 2 if any is not valid."""
    lines, failed = [], False
    for path in paths or [Path(os.environ.get(FOLDER_ENV) or DEFAULT_FOLDER)]:
        if not path.exists():
            lines.append(f"error {path}: no such file or folder")
            failed = True
            continue
        for ok, line in _checked(path):
            lines.append(f"{'ok' if ok else 'error'} {line}")
            failed = failed or not ok
    for line in lines or ["error: no batch type files found"]:
        print(line)
    if failed or not lines:
        raise typer.Exit(2)


def _checked(path: Path) -> list[tuple[bool, str]]:
    """(valid, line) per file of a folder, or for one file (read with its folder's job types)."""
    folder = load_folder(path if path.is_dir() else path.parent)
    problems = {problem.path: problem for problem in folder.problems}
    results: dict[Path, tuple[bool, str]] = {}
    for name, (batch_type, file) in folder.batch_types.items():
        jobs = len(batch_type.jobs)
        results[file] = (True, f"{file}: batch type {name!r}, {jobs} job{'s' if jobs != 1 else ''}")
    for file in folder.libraries:
        results.setdefault(file, (True, f"{file}: job types"))
    for file, problem in problems.items():
        results[file] = (False, str(problem))
    for file in sorted(folder.path.glob("*.py")):
        results[file] = _checked_module(file)
    if path.is_file():
        if path.suffix not in (*SUFFIXES, ".py"):
            return [(False, f"{path}: not a batch type file ({', '.join(SUFFIXES)}) nor a Python module")]
        return [results[path]] if path in results else [(False, f"{path}: not read")]
    return [results[file] for file in sorted(results)]


def _checked_module(file: Path) -> tuple[bool, str]:
    try:
        names = [name for name, _, _ in batch_flows_in(import_module_file(file))]
    except Exception as ex:  # the user's module: its error named, not shown (it may quote a value)
        return False, str(FileProblem(file, (f"cannot be imported ({type(ex).__name__})",)))
    if not names:
        return False, f"{file}: holds no BatchType with its flow (build_flow)"
    return True, f"{file}: batch type{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}"


def schema() -> None:
    """Print the JSON Schema of batch type files (`restful-etl schema > batch-type.schema.json`)."""
    from prefect_restful_etl.flows.batch_type_schema import batch_type_file_schema

    print(json.dumps(batch_type_file_schema(), indent=2))


def batch_types(as_json: Json = False) -> None:
    """The batch types found (the batch types folder, entry points, the package) and where each came from."""
    found = catalog()
    rows = [
        {"batch_type": name, "origin": flow.origin, "source": flow.source, "entrypoint": flow.entrypoint}
        for name, flow in sorted(found.flows.items())
    ]
    show(f"batch types (folder {found.folder})", rows, as_json=as_json, columns=("batch_type", "origin", "source"))
    for problem in found.problems:
        errors.print(f"not loaded: {problem}", highlight=False, markup=False, soft_wrap=True)


def plan(
    batch_type: Annotated[str, typer.Argument(help="The batch type to try.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Whose records: the tenant id the run gets.")],
    credentials: Annotated[
        Path,
        typer.Option("--credentials", "-c", exists=True, dir_okay=False, help="JSON credentials by API name."),
    ],
    base_url: Annotated[list[str] | None, typer.Option(help="API=URL, repeatable.")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Plan removals of missing keys too.")] = False,
    as_json: Json = False,
) -> None:
    """A dry run in this process: extract and transform against the real APIs, then report what each load
    would change, writing nothing (no Prefect, a throwaway stage and audit database, no watermark)."""
    import asyncio

    from prefect_restful_etl.deployments.cli.sealing import read_credentials
    from prefect_restful_etl.flows.catalog import find
    from prefect_restful_etl.flows.plan import plan_batch

    try:
        found = read_credentials(credentials.read_text())  # a plan runs here: nothing to seal
        parameters: dict[str, Any] = {"sealed_credentials" if isinstance(found, str) else "credentials": found}
        urls = dict(value.split("=", 1) for value in base_url or [] if "=" in value)
        if len(urls) != len(base_url or []):
            raise ConfigError("--base-url", "give API=URL")
        parameters |= {"tenant_id": tenant, "full_refresh": full_refresh, "base_urls": urls or None}
        planned = asyncio.run(plan_batch(find(batch_type).batch_type, parameters))
    except ConfigError as ex:
        _fail(str(ex))
    if as_json:
        print(json.dumps(planned.as_json(), default=str))
        return
    show(f"plan of {batch_type} for tenant {tenant}: nothing was written", planned.jobs, as_json=False)
    if planned.rejects:
        show("records the screens would keep out", planned.rejects, as_json=False)
    if planned.stopped:
        errors.print(
            f"the batch would stop: {planned.stopped}", style="red", highlight=False, markup=False, soft_wrap=True
        )
        raise typer.Exit(1)


def _fail(message: str) -> None:
    errors.print(message, style="red", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(2)
