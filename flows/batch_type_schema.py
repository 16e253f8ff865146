"""The JSON Schema of batch type files (`restful-etl schema`), generated from the models each time, so that a new
field of any job type, paginator or auth style is in it without anyone writing it down.

A file is a batch type, whose jobs may be `{"use": "<job type>", ...overrides}`, or a library of job types
(`job_types:`), each a job whose fields a batch type may complete. Editors read it from the comment line that
`restful-etl init` writes: `# yaml-language-server: $schema=../batch-type.schema.json` (YAML), or a
`"$schema"` key (JSON).
"""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prefect_restful_etl.flows.batchfiles import JOB_TYPES_KEY, SCHEMA_KEY
from prefect_restful_etl.tasks.engine.jobtypes import USE, BatchType

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = "batch-type.schema.json"  # where `restful-etl init` writes it, beside the batch types folder
JOB_NAME = r"^[a-z0-9][a-z0-9\-]*$"


def batch_type_file_schema() -> dict[str, Any]:
    """The schema of one file of a batch types folder: `{"anyOf": [batch type, library of job types]}`."""
    batch = BatchType.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = batch.pop("$defs", {})
    jobs = batch["properties"]["jobs"]
    job_union = jobs["items"]
    jobs["items"] = {"anyOf": [job_union, {"$ref": "#/$defs/JobUse"}]}
    batch["properties"] = {SCHEMA_KEY: _schema_key(), **batch["properties"]}
    defs["BatchTypeFile"] = batch
    defs["JobUse"] = {
        "title": "JobUse",
        "description": "A job type of this folder's libraries, with overrides merged in as a JSON merge patch "
        "(RFC 7396: objects merge, other values replace, null removes).",
        "type": "object",
        "properties": {USE: {"type": "string", "pattern": JOB_NAME, "description": "The job type's name."}},
        "required": [USE],
        "additionalProperties": True,
    }
    defs["JobTypeLibraryFile"] = {
        "title": "JobTypeLibrary",
        "description": 'Job types by name, which the batch types of this folder use as `{"use": "<name>"}`.',
        "type": "object",
        "properties": {
            SCHEMA_KEY: _schema_key(),
            JOB_TYPES_KEY: {
                "type": "object",
                "propertyNames": {"pattern": JOB_NAME},
                "additionalProperties": {"anyOf": _partial_jobs(job_union, defs)},
            },
        },
        "required": [JOB_TYPES_KEY],
        "additionalProperties": False,
    }
    return {
        "$schema": DIALECT,
        "title": f"restful-etl batch type file (prefect-restful-etl {_version()})",
        "description": "A batch type (name, apis, jobs) or a library of job types (job_types).",
        "anyOf": [{"$ref": "#/$defs/BatchTypeFile"}, {"$ref": "#/$defs/JobTypeLibraryFile"}],
        "$defs": defs,
    }


def _partial_jobs(job_union: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """Each job kind's schema with only `kind` required: a job type may leave fields to the batch types."""
    partials = []
    for ref in job_union["discriminator"]["mapping"].values():
        name = ref.rsplit("/", 1)[-1]
        partial = copy.deepcopy(defs[name])
        partial["required"] = ["kind"]
        partial["title"] = f"{partial.get('title', name)} (job type)"
        defs[f"{name}JobType"] = partial
        partials.append({"$ref": f"#/$defs/{name}JobType"})
    return partials


def _schema_key() -> dict[str, Any]:
    return {"type": "string", "description": "The schema's location, for editors; ignored by restful-etl."}


def _version() -> str:
    try:
        return version("prefect-restful-etl")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown version"
