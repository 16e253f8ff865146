"""Batch type files: YAML or JSON, job type libraries shared by a folder, and problems named by file, job and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from prefect_restful_etl.flows.batchfiles import EXAMPLES, load_folder
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING

SECRET = "s3cr3t-token-in-the-wrong-place"
APIS = {"shop": {"name": "shop", "base_url": "http://127.0.0.1:1", "auth": {"type": "bearer"}}}
EXTRACT = {"kind": "extract", "name": "Extract orders", "api": "shop", "endpoint": {"path": "/orders"},
           "natural_key": ["id"]}  # fmt: skip
LOAD = {"kind": "load", "name": "Load orders", "api": "shop", "endpoint": {"path": "/copy"}, "natural_key": ["id"]}


def write(folder: Path, name: str, content: Any) -> Path:
    path = folder / name
    text = (
        content
        if isinstance(content, str)
        else (json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content))
    )
    path.write_text(text)
    return path


def test_the_example_folder_holds_the_demo_batch_type_and_its_job_types() -> None:
    folder = load_folder(EXAMPLES)
    assert folder.problems == []
    assert [p.name for p in folder.libraries] == ["crm-job-types.yaml"]
    ((batch_type, path),) = folder.batch_types.values()
    assert path.name == "crm-to-accounting.yaml"
    assert batch_type.model_dump() == CRM_TO_ACCOUNTING.model_dump()


def test_yaml_and_json_files_share_the_folders_job_types(tmp_path: Path) -> None:
    write(
        tmp_path,
        "jobs.yaml",
        {"job_types": {"extract-orders": EXTRACT, "load-orders": {k: v for k, v in LOAD.items()}}},
    )
    write(tmp_path, "a.yaml", {"name": "a", "apis": APIS, "jobs": [{"use": "extract-orders"},
          {"use": "load-orders", "source": "Extract orders"}]})  # fmt: skip
    write(tmp_path, "b.json", {"$schema": "../batch-type.schema.json", "name": "b", "apis": APIS,
          "jobs": [{"use": "extract-orders", "endpoint": {"params": {"status": "open"}}}]})  # fmt: skip
    (tmp_path / "notes.txt").write_text("not a batch type")
    folder = load_folder(tmp_path)
    assert folder.problems == []
    assert sorted(folder.batch_types) == ["a", "b"]
    b = folder.batch_types["b"][0].jobs[0]
    assert b.endpoint.path == "/orders" and b.endpoint.params == {"status": "open"}


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("syntax.yaml", f"name: x\n  token: [{SECRET}\n", ("not valid YAML: mapping values are "
         "not allowed here at line 2, column 8")),
        ("syntax.json", f'{{"name": "{SECRET}",}}', ("not valid JSON: Expecting property "
         "name enclosed in double quotes at line 1, column")),
        ("list.yaml", "- a\n- b\n", "should hold a batch type (name, apis, jobs) or job_types"),
        ("kind.yaml", {"name": "k", "apis": APIS, "jobs": [{**EXTRACT, "kind": SECRET}]},
         "job 'Extract orders': kind: should be one of 'extract', 'transform', 'load'"),
        ("use.yaml", {"name": "u", "apis": APIS, "jobs": [{"use": SECRET, "name": "Mine"}]},
         "job 'Mine': use: not the name of a job type; no job types are defined here"),
        ("library.yaml", {"job_types": {"Bad Name": EXTRACT}}, "job_types.Bad Name: the name should match pattern"),
    ],
    ids=["yaml-syntax", "json-syntax", "not-a-mapping", "job-kind", "unknown-use", "library-key"],
)  # fmt: skip
def test_a_broken_file_is_named_with_what_is_wrong_and_never_what_it_holds(
    tmp_path: Path, name: str, content: Any, message: str
) -> None:
    write(tmp_path, "good.yaml", {"name": "good", "apis": APIS, "jobs": [EXTRACT]})
    path = write(tmp_path, name, content)
    folder = load_folder(tmp_path)
    assert list(folder.batch_types) == ["good"]  # one broken file does not hide the others
    (problem,) = folder.problems
    assert problem.path == path
    assert str(problem).startswith(f"{path}: {message}"), str(problem)
    assert SECRET not in str(problem)


def test_a_name_or_job_type_defined_twice_is_a_problem_of_the_second_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", {"name": "same", "apis": APIS, "jobs": [EXTRACT]})
    write(tmp_path, "b.yaml", {"name": "same", "apis": APIS, "jobs": [EXTRACT]})
    write(tmp_path, "j1.yaml", {"job_types": {"extract-orders": EXTRACT}})
    write(tmp_path, "j2.yaml", {"job_types": {"extract-orders": EXTRACT}})
    folder = load_folder(tmp_path)
    assert [str(p) for p in folder.problems] == [
        f"{tmp_path / 'j2.yaml'}: job_types: 'extract-orders' defined in two files",
        f"{tmp_path / 'b.yaml'}: name: a.yaml already defines this batch type",
    ]
    assert folder.batch_types["same"][1].name == "a.yaml"
