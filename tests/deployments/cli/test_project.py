"""The CLI for a user's own batch types, without a server: init, validate, schema, batch-types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from prefect_restful_etl.deployments.cli.app import app
from prefect_restful_etl.flows.catalog import FOLDER_ENV, GENERIC_ENTRYPOINT

SECRET = "s3cr3t-pasted-in-the-wrong-field"


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`restful-etl init` in an empty folder, which is then the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(FOLDER_ENV, raising=False)
    result = cli("init", "--name", "acme-sync")
    assert result.exit_code == 0, result.output
    return tmp_path


def test_init_writes_a_starter_project_that_holds_no_secret(project: Path) -> None:
    files = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert files == [".gitignore", "README.md", "batch-type.schema.json", "batch_types/acme-sync.yaml",
                     "batch_types/crm-job-types.yaml", "credentials.json", "prefect.yaml"]  # fmt: skip
    assert "credentials.json" in (project / ".gitignore").read_text().splitlines()
    credentials = json.loads((project / "credentials.json").read_text())
    assert credentials == {
        "crm": {"token": "<the crm API's token>"},
        "accounting": {"api_key": "<the accounting API's key>"},
    }
    batch_type = (project / "batch_types" / "acme-sync.yaml").read_text()
    assert batch_type.startswith("# yaml-language-server: $schema=../batch-type.schema.json\n")
    assert "\nname: acme-sync\n" in batch_type


def test_inits_prefect_yaml_declares_both_deployments_through_the_generic_entrypoint(project: Path) -> None:
    declared = yaml.safe_load((project / "prefect.yaml").read_text())
    incremental, resync = declared["deployments"]
    assert incremental["name"] == "acme-sync" and resync["name"] == "acme-sync-full-resync"
    assert incremental["entrypoint"] == resync["entrypoint"] == f"{GENERIC_ENTRYPOINT}.acme_sync"
    assert resync["parameters"] == {"full_refresh": True} and resync["schedules"] == []
    assert not incremental["schedules"][0]["active"]
    # the folder `prefect deploy` runs in, recorded by its build step (tests/deployments/cli/test_starter.py)
    (recorded,) = declared["build"]
    assert recorded["prefect.deployments.steps.set_working_directory"] == {"id": "project", "directory": "."}
    (step,) = declared["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ project.directory }}"


def test_init_names_the_batch_type_after_its_folder_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "Acme Orders"
    assert cli("init", str(target)).exit_code == 0
    assert (target / "batch_types" / "acme-orders.yaml").exists()
    again = cli("init", str(target))
    assert again.exit_code == 2 and "not overwriting what is there" in again.output
    assert cli("init", str(tmp_path / "x"), "--name", "Not A Name").exit_code == 2


def test_validate_says_ok_per_file_and_exits_0_when_all_are_valid(project: Path) -> None:
    result = cli("validate")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "ok batch_types/acme-sync.yaml: batch type 'acme-sync', 3 jobs",
        "ok batch_types/crm-job-types.yaml: job types",
    ]


def test_validate_names_file_job_and_field_of_each_broken_file_and_exits_2(project: Path) -> None:
    folder = project / "batch_types"
    text = (folder / "acme-sync.yaml").read_text().replace("name: acme-sync", "name: broken-sync")
    (folder / "broken.yaml").write_text(text.replace("kind: transform", f"kind: {SECRET}"))
    (folder / "typo.yaml").write_text(
        text.replace("name: broken-sync", "name: typo-sync").replace("    source: Shape", f"    sorce: {SECRET}")
    )
    (folder / "syntax.json").write_text(f'{{"name": "{SECRET}"')
    result = cli("validate", "batch_types")
    assert result.exit_code == 2
    *lines, typo = result.output.splitlines()
    assert lines == [
        "ok batch_types/acme-sync.yaml: batch type 'acme-sync', 3 jobs",
        (
            "error batch_types/broken.yaml: job 'Shape accounting customers': kind: should be one of 'extract', "
            "'transform', 'load'"
        ),
        "ok batch_types/crm-job-types.yaml: job types",
        "error batch_types/syntax.json: not valid JSON: Expecting ',' delimiter at line 1, column 44",
    ]
    load = "job 'Load accounting customers'"
    assert typo.startswith("error batch_types/typo.yaml: ")  # every mistake of the file, on its one line
    assert f"{load}: source: missing (required)" in typo
    assert f"{load}: sorce: not a field here; the fields are 'name', 'description', 'kind', 'source', 'api'" in typo
    assert SECRET not in result.output
    one = cli("validate", "batch_types/broken.yaml")
    assert one.exit_code == 2 and len(one.output.splitlines()) == 1


def test_validate_refuses_a_folder_with_nothing_to_check(tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path))
    assert result.exit_code == 2 and result.output == "error: no batch type files found\n"


def test_schema_prints_the_json_schema(project: Path) -> None:
    result = cli("schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads((project / "batch-type.schema.json").read_text())


def test_batch_types_lists_what_was_found_and_from_where(project: Path) -> None:
    (project / "batch_types" / "broken.yaml").write_text("name: [")
    result = cli("batch-types", "--json")
    assert result.exit_code == 0
    rows = {row["batch_type"]: row for row in json.loads(result.stdout)}
    assert rows["acme-sync"]["origin"] == "folder"
    assert rows["acme-sync"]["source"] == str(project.resolve() / "batch_types" / "acme-sync.yaml")
    assert rows["crm-to-accounting"]["origin"] == "package"
    assert "not loaded: " in result.stderr and "broken.yaml: not valid YAML" in result.stderr
