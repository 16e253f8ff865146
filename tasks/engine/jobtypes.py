"""Job types and batch types: what each job of a batch does, stated as plain configuration.

A batch type lists its APIs and its jobs in order; each job names the job whose staged output it reads.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.extract.job import ExtractJob
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.jobbase import Endpoint, JobBase
from prefect_restful_etl.tasks.engine.load.job import LoadJob
from prefect_restful_etl.tasks.engine.transform.job import TransformJob
from prefect_restful_etl.tasks.engine.transform.lookup_config import ApiLookupConfig, StagedLookupConfig
from prefect_restful_etl.tasks.engine.transform.newest import cursor_after
from prefect_restful_etl.tasks.engine.transform.screens import Screen, Unique
from prefect_restful_etl.tasks.engine.transform.steps import Cast, Rename

__all__ = [
    "BatchType",
    "Endpoint",
    "ExtractJob",
    "JobBase",
    "JobType",
    "JobTypeLibrary",
    "LoadJob",
    "TransformJob",
    "resolve_uses",
]


JobType = Annotated[ExtractJob | TransformJob | LoadJob, Field(discriminator="kind")]


class BatchType(BaseModel):
    """A named template of jobs: `crm-to-accounting` = extract, transform, load."""

    # no error quotes what was given: a value of any field may be a secret put in the wrong place
    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "crm-to-accounting",
                    "apis": {
                        "crm": {"name": "crm", "base_url": "https://crm.example.com/api", "auth": "bearer"},
                        "accounting": {
                            "name": "accounting",
                            "base_url": "https://books.example.com",
                            "auth": "api_key",
                        },
                    },
                    "jobs": [
                        {
                            "kind": "extract",
                            "name": "Extract CRM customers",
                            "api": "crm",
                            "endpoint": {"path": "/customers", "records_path": "data"},
                            "natural_key": ["id"],
                        },
                        {
                            "kind": "transform",
                            "name": "Shape accounting customers",
                            "source": "Extract CRM customers",
                            "steps": [{"op": "rename", "fields": {"id": "external_id"}}],
                        },
                        {
                            "kind": "load",
                            "name": "Load accounting customers",
                            "source": "Shape accounting customers",
                            "api": "accounting",
                            "endpoint": {"path": "/customers", "records_path": "data"},
                            "natural_key": ["external_id"],
                        },
                    ],
                }
            ]
        },
    )

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$", description="The flow's name, and its deployments'.")
    description: str = Field(default="", description="The flow's description in Prefect.")
    apis: dict[str, ApiConfig] = Field(description="The APIs the jobs read and write, by name.")
    jobs: list[JobType] = Field(
        min_length=1, description="Extract, transform and load jobs, run in this order; each names what it reads."
    )

    @model_validator(mode="after")
    def _check_references(self) -> BatchType:
        # A job is named by its name, which a file's reader knows (not its index, which they would count); a
        # reference that leads nowhere is named by its field, never quoted: the valid choices are listed instead
        seen: list[str] = []
        for index, job in enumerate(self.jobs):
            where = f"job {job.name!r}"
            if job.name in seen:
                raise ValueError(f"{where}: name: used by two jobs")
            earlier = f"the earlier jobs are {_listed(seen)}" if seen else "it is the first job"
            apis = f"the batch type's apis are {_listed(self.apis)}"
            api = getattr(job, "api", None)
            if api is not None and api not in self.apis:
                raise ValueError(f"{where}: api: not one of the batch type's apis; {apis}")
            source = getattr(job, "source", None)
            if source is not None and source not in seen:
                raise ValueError(f"{where}: source: not the name of an earlier job; {earlier}")
            for name, lookup in getattr(job, "lookups", {}).items():
                if isinstance(lookup, StagedLookupConfig) and lookup.job not in seen:
                    raise ValueError(f"{where}: lookups.{name}.job: not the name of an earlier job; {earlier}")
                if isinstance(lookup, ApiLookupConfig) and lookup.api not in self.apis:
                    raise ValueError(f"{where}: lookups.{name}.api: not one of the batch type's apis; {apis}")
            parent = getattr(job, "parent", None)
            if parent is not None and not isinstance(self._earlier(parent.job, index), ExtractJob):
                extracts = [j.name for j in self.jobs[:index] if isinstance(j, ExtractJob)]
                raise ValueError(
                    f"{where}: parent.job: not the name of an earlier extract job; "
                    + (f"the earlier extract jobs are {_listed(extracts)}" if extracts else "there is none before it")
                )
            seen.append(job.name)
        for key, api_config in self.apis.items():
            if api_config.name != key:
                raise ValueError(f"apis.{key}.name: must equal its key {key!r}")
        for job in self.jobs:
            if isinstance(job, LoadJob):  # a decimal cast upstream is compared as a decimal (canonical.py)
                job.compare_as = {**dict.fromkeys(self._decimals(job.source), "decimal"), **job.compare_as}
            if isinstance(job, TransformJob):  # a unique screen keeps the newest by the source's cursor
                job.screens = _newest_by_cursor(job.screens, self._cursor(job.name))
        return self

    def _cursor(self, name: str) -> str | None:
        """Where the records job `name` stages hold the cursor of the incremental extract they come from (None:
        no such extract, or a transform on the way moves it out of reach or writes over it)."""
        job = self.job(name)
        if isinstance(job, ExtractJob):
            return job.incremental.cursor_field if job.incremental is not None else None
        if not isinstance(job, TransformJob):
            return None
        path = self._cursor(job.source)
        return None if path is None else cursor_after(path, job.steps)

    def _decimals(self, name: str) -> set[str]:
        """The fields that the transform `name` (after the transforms it reads) leaves cast to decimal."""
        job = self.job(name)
        if not isinstance(job, TransformJob):
            return set()
        decimals = self._decimals(job.source)
        for step in job.steps:
            if isinstance(step, Rename):
                decimals = {step.fields.get(field, field) for field in decimals}
            elif isinstance(step, Cast):
                decimals = (decimals - set(step.fields)) | {f for f, to in step.fields.items() if to == "decimal"}
        return decimals

    def _earlier(self, name: str, before: int) -> JobType | None:
        return next((job for job in self.jobs[:before] if job.name == name), None)

    def job(self, name: str) -> ExtractJob | TransformJob | LoadJob:
        return next(job for job in self.jobs if job.name == name)

    def lookup_extracts(self) -> set[str]:
        """Extract jobs whose records only feed lookups (a staged dimension such as countries): no job reads
        them as its `source` or `parent`, so they are not the records the batch moves."""
        read = {getattr(job, "source", None) for job in self.jobs}
        read |= {job.parent.job for job in self.jobs if isinstance(job, ExtractJob) and job.parent is not None}
        looked_up = {name for job in self.jobs for name in getattr(job, "lookup_jobs", ())}
        return {job.name for job in self.jobs if isinstance(job, ExtractJob) and job.name in looked_up - read}

    def natural_key_of(self, job: ExtractJob | TransformJob | LoadJob) -> list[str]:
        """A job's own natural key, or that of the job it reads from."""
        while job.natural_key is None and isinstance(job, TransformJob):
            job = self.job(job.source)
        assert job.natural_key is not None
        return job.natural_key


def _newest_by_cursor(screens: list[Screen], cursor: str | None) -> list[Screen]:
    """The screens with `cursor` (where the transform's output holds its source's cursor) as the `newest_by` of
    each unique screen that leaves it out; one that sets it, to null too (the last read), keeps its own."""
    if cursor is None:
        return screens
    return [s.model_copy(update={"newest_by": cursor}) if isinstance(s, Unique) and "newest_by" not in
            s.model_fields_set else s for s in screens]  # fmt: skip


def _listed(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in sorted(names)) or "(none)"


# --- reusable job types ---------------------------------------------------------------------------------------

USE = "use"


class JobTypeLibrary(BaseModel):
    """Job types by name, for the batch types of one folder to share: a file holding

    ```yaml
    job_types:
      extract-crm-customers:
        kind: extract
        name: Extract CRM customers
        api: crm
        endpoint: {path: /customers, records_path: data}
        natural_key: [id]
    ```
    lets a batch type's job be `{"use": "extract-crm-customers"}`, or that with overrides. A job type may leave
    out what each batch type gives (a load's `source`): it is checked as a job once it is used.
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {
                    "job_types": {
                        "extract-crm-customers": {
                            "kind": "extract",
                            "name": "Extract CRM customers",
                            "api": "crm",
                            "endpoint": {"path": "/customers", "records_path": "data"},
                            "natural_key": ["id"],
                        }
                    }
                }
            ]
        },
    )

    job_types: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9\-]*$")], dict[str, Any]] = Field(
        description="Job type name -> the fields of a job (kind, name, ...), partial where batch types add the rest."
    )


def resolve_uses(jobs: Sequence[Any], library: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """The jobs with each `{"use": name, ...overrides}` replaced by that job type with the overrides merged in.

    Overrides merge as a JSON merge patch (RFC 7396): an object merges field by field, any other value
    (a list included) replaces, and `null` removes the field. Anything that is not a `use` passes as given.
    """
    resolved: list[Any] = []
    for position, job in enumerate(jobs, start=1):
        if not isinstance(job, Mapping) or USE not in job:
            resolved.append(job)
            continue
        overrides = {key: value for key, value in job.items() if key != USE}
        name = job[USE]
        if not isinstance(name, str) or name not in library:
            what = repr(overrides["name"]) if isinstance(overrides.get("name"), str) else f"number {position}"
            known = f"the job types are {_listed(library)}" if library else "no job types are defined here"
            raise ConfigError(f"job {what}: use", f"not the name of a job type; {known}")
        resolved.append(merge_patch(library[name], overrides))
    return resolved


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: `patch` applied to `target` (neither is changed)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return {key: copy.deepcopy(value) for key, value in merged.items()}
