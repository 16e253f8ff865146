"""Batch types written as files: `batch_types/*.yaml` (or `.yml`, `.json`), each a batch type or a library of job
types that the folder's batch types share, checked without sending a request.

```yaml
# yaml-language-server: $schema=../batch-type.schema.json
name: acme-orders
apis:
  shop: {name: shop, base_url: "https://shop.example.com", auth: {type: bearer}}
  erp: {name: erp, base_url: "https://erp.example.com", auth: {type: api_key, name: X-API-Key}}
jobs:
  - use: extract-shop-orders          # a job type of this folder (a file holding `job_types:`)
  - {kind: load, name: Load ERP orders, source: Extract shop orders, api: erp,
     endpoint: {path: /orders}, natural_key: [order_id]}
```
Every problem names the file, then the job by its name and the field inside it; none quotes a value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from prefect_restful_etl.flows.config_errors import describe
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, JobTypeLibrary, resolve_uses

SUFFIXES = (".yaml", ".yml", ".json")
EXAMPLES = Path(__file__).parent / "examples"  # the batch types that ship with the package, as files like a user's
SCHEMA_KEY = "$schema"  # where a JSON file names its schema, for editors; not part of the batch type
JOB_TYPES_KEY = "job_types"


@dataclass(frozen=True)
class FileProblem:
    """One file that is not a valid batch type (or job type library), with every reason found."""

    path: Path
    messages: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path}: {'; '.join(self.messages)}"

    def as_error(self) -> InvalidFile:
        return InvalidFile(self)


class InvalidFile(ValueError):
    """A batch type file (or library) that does not validate; `problem` says why."""

    def __init__(self, problem: FileProblem) -> None:
        self.problem = problem
        super().__init__(str(problem))


@dataclass
class Folder:
    """What one folder's files hold: the batch types that are valid, by name, and the files that are not."""

    path: Path
    batch_types: dict[str, tuple[BatchType, Path]] = field(default_factory=dict)
    libraries: list[Path] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)


def read_document(path: Path) -> Any:
    """A file's YAML or JSON; a syntax error names the line and column, never the text found there."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as ex:
        raise _unreadable(path, f"cannot be read ({type(ex).__name__})") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as ex:
            raise _unreadable(path, f"not valid JSON: {ex.msg} at line {ex.lineno}, column {ex.colno}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as ex:  # its str() shows the offending line: only the mark is told
        mark = ex.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise _unreadable(path, f"not valid YAML: {ex.problem or 'syntax error'}{at}") from None
    except yaml.YAMLError as ex:
        raise _unreadable(path, f"not valid YAML ({type(ex).__name__})") from None


def is_library(document: Any) -> bool:
    return isinstance(document, Mapping) and JOB_TYPES_KEY in document


def load_library(path: Path, document: Any) -> dict[str, dict[str, Any]]:
    """The job types of a library file, by name."""
    content = _without_schema_key(document)
    try:
        return JobTypeLibrary.model_validate(content).job_types
    except ValidationError as ex:
        raise _problem(path, ex, content, JobTypeLibrary.model_json_schema()) from None


def load_batch_type(path: Path, document: Any, library: Mapping[str, Mapping[str, Any]]) -> BatchType:
    """The batch type a file holds, its jobs' `use` references resolved from `library`."""
    content = _without_schema_key(document)
    if not isinstance(content, Mapping):
        raise FileProblem(path, ("should hold a batch type (name, apis, jobs) or job_types",)).as_error()
    if isinstance(content.get("jobs"), list):
        try:
            content = {**content, "jobs": resolve_uses(content["jobs"], library)}
        except ConfigError as ex:
            raise FileProblem(path, (str(ex),)).as_error() from None
    try:
        return BatchType.model_validate(content)
    except ValidationError as ex:
        raise _problem(path, ex, content) from None


def load_folder(folder: Path) -> Folder:
    """Every batch type file of `folder` (not its subfolders), with the job types its library files hold."""
    found = Folder(folder)
    documents: dict[Path, Any] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file()):
        try:
            documents[path] = read_document(path)
        except InvalidFile as ex:
            found.problems.append(ex.problem)
    library: dict[str, dict[str, Any]] = {}
    for path, document in documents.items():
        if is_library(document):
            found.libraries.append(path)
            try:
                _add_job_types(library, load_library(path, document), path)
            except InvalidFile as ex:
                found.problems.append(ex.problem)
    for path, document in documents.items():
        if is_library(document):
            continue
        try:
            batch_type = load_batch_type(path, document, library)
        except InvalidFile as ex:
            found.problems.append(ex.problem)
            continue
        if batch_type.name in found.batch_types:
            other = found.batch_types[batch_type.name][1]
            found.problems.append(FileProblem(path, (f"name: {other.name} already defines this batch type",)))
            continue
        found.batch_types[batch_type.name] = (batch_type, path)
    return found


def _add_job_types(library: dict[str, dict[str, Any]], more: dict[str, dict[str, Any]], path: Path) -> None:
    twice = sorted(set(library) & set(more))
    if twice:
        raise FileProblem(path, (f"job_types: {', '.join(map(repr, twice))} defined in two files",)).as_error()
    library.update(more)


def _unreadable(path: Path, message: str) -> InvalidFile:
    return FileProblem(path, (message,)).as_error()


def _without_schema_key(document: Any) -> Any:
    if isinstance(document, Mapping):
        return {key: value for key, value in document.items() if key != SCHEMA_KEY}
    return document


def _problem(path: Path, error: ValidationError, content: Any, schema: Mapping[str, Any] | None = None) -> InvalidFile:
    return InvalidFile(FileProblem(path, tuple(describe(error, content, schema))))


def example(name: str) -> BatchType:
    """One of the package's example batch types (`crm-to-accounting`); a broken example is a bug of ours."""
    folder = load_folder(EXAMPLES)
    if folder.problems:
        raise RuntimeError("; ".join(map(str, folder.problems)))
    return folder.batch_types[name][0]
