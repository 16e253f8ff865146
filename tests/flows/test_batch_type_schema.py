"""The published JSON Schema of batch type files: valid JSON Schema, generated from the models (a field of any
job type is in it), and every example file of the repository, and every file `restful-etl init` writes, passes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from prefect_restful_etl.deployments.cli.starter import starter_files
from prefect_restful_etl.flows.batch_type_schema import batch_type_file_schema
from prefect_restful_etl.flows.batchfiles import SUFFIXES
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, ExtractJob, LoadJob, TransformJob

REPO = Path(__file__).resolve().parents[2]
SKIPPED = {".venv", "build", "node_modules", ".tools", ".git"}


def example_files() -> list[Path]:
    """Batch type files anywhere in the repository: any YAML or JSON under a folder named `examples` or
    `batch_types`."""
    found = []
    for path in REPO.rglob("*"):
        parts = set(path.relative_to(REPO).parts)
        if path.suffix in SUFFIXES and not parts & SKIPPED and parts & {"examples", "batch_types"}:
            found.append(path)
    return sorted(found)


def document(path: Path) -> Any:
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = batch_type_file_schema()
    Draft202012Validator.check_schema(schema)  # a valid JSON Schema (2020-12) itself
    return Draft202012Validator(schema)


def test_there_are_example_files() -> None:
    assert {p.name for p in example_files()} >= {"crm-to-accounting.yaml", "crm-job-types.yaml"}


@pytest.mark.parametrize("path", example_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_file_of_the_repository_validates(validator: Draft202012Validator, path: Path) -> None:
    errors = [error.message for error in validator.iter_errors(document(path))]
    assert not errors


def test_every_file_init_writes_validates(validator: Draft202012Validator, tmp_path: Path) -> None:
    files = starter_files(tmp_path, "acme-sync")
    written = [path for path in files if path.parent.name == "batch_types"]
    assert len(written) == 2
    for path in written:
        assert not list(validator.iter_errors(yaml.safe_load(files[path]))), path
    assert json.loads(files[tmp_path / "batch-type.schema.json"]) == batch_type_file_schema()


@pytest.mark.parametrize(
    "content",
    [
        {"name": "x", "apis": {}, "jobs": [{"kind": "extrct", "name": "E"}]},
        {"name": "x", "apis": {}, "jobs": [{"kind": "extract", "name": "E", "endpont": {}}]},
        {"name": "Bad Name", "apis": {}, "jobs": []},
        {"job_types": {"e": {"name": "no kind"}}},
        {"job_types": {"e": {"kind": "load", "natural_keys": ["id"]}}},
    ],
    ids=["job-kind", "misspelt-field", "name-pattern", "job-type-without-kind", "job-type-misspelt-field"],
)
def test_a_broken_file_fails_the_schema(validator: Draft202012Validator, content: dict[str, Any]) -> None:
    assert list(validator.iter_errors(content))


def test_every_field_of_every_job_kind_is_in_the_schema_from_the_models_themselves() -> None:
    defs = batch_type_file_schema()["$defs"]
    for model in (ExtractJob, TransformJob, LoadJob):
        assert set(defs[model.__name__]["properties"]) == set(model.model_fields)
        assert set(defs[f"{model.__name__}JobType"]["properties"]) == set(model.model_fields)


def test_a_style_given_by_its_name_alone_passes_the_schema_as_it_passes_the_models(
    validator: Draft202012Validator,
) -> None:
    api = {"name": "crm", "base_url": "http://127.0.0.1:1", "auth": "bearer", "paginator": "single_page"}
    job = {"kind": "extract", "name": "E", "api": "crm", "endpoint": {"path": "/c"}, "natural_key": ["id"]}
    content = {"name": "x", "apis": {"crm": api}, "jobs": [job]}
    assert not list(validator.iter_errors(content))
    assert BatchType.model_validate(content).apis["crm"].auth.type == "bearer"
    assert list(validator.iter_errors({**content, "apis": {"crm": {**api, "auth": "bearr"}}}))
