"""Job types and batch types: what each job of a batch does, stated as plain configuration.

A batch type lists its APIs and its jobs in order; each job names the job whose staged output it reads.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_restful_etl.tasks.engine.extract.job import ExtractJob
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.jobbase import Endpoint, JobBase
from prefect_restful_etl.tasks.engine.load.job import LoadJob
from prefect_restful_etl.tasks.engine.transform.job import TransformJob
from prefect_restful_etl.tasks.engine.transform.steps import Cast, Rename

__all__ = ["BatchType", "Endpoint", "ExtractJob", "JobBase", "JobType", "LoadJob", "TransformJob"]


JobType = Annotated[ExtractJob | TransformJob | LoadJob, Field(discriminator="kind")]


class BatchType(BaseModel):
    """A named template of jobs: `crm-to-accounting` = extract, transform, load."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$")
    description: str = ""
    apis: dict[str, ApiConfig]
    jobs: list[JobType] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_references(self) -> BatchType:
        seen: set[str] = set()
        for index, job in enumerate(self.jobs):
            where = f"jobs.{index}"
            if job.name in seen:
                raise ValueError(f"{where}.name: {job.name!r} is used by two jobs")
            api = getattr(job, "api", None)
            if api is not None and api not in self.apis:
                raise ValueError(f"{where}.api: {api!r} is not one of the batch type's apis {sorted(self.apis)}")
            source = getattr(job, "source", None)
            if source is not None and source not in seen:
                raise ValueError(f"{where}.source: {source!r} is not the name of an earlier job")
            for looked_up in getattr(job, "lookup_jobs", ()):
                if looked_up not in seen:
                    raise ValueError(f"{where}.lookups: {looked_up!r} is not the name of an earlier job")
            for lookup_api in sorted(set(getattr(job, "lookup_apis", ())) - set(self.apis)):
                raise ValueError(f"{where}.lookups: {lookup_api!r} is not one of the batch type's apis")
            parent = getattr(job, "parent", None)
            if parent is not None and not isinstance(self._earlier(parent.job, index), ExtractJob):
                raise ValueError(f"{where}.parent.job: {parent.job!r} is not the name of an earlier extract job")
            seen.add(job.name)
        for key, api_config in self.apis.items():
            if api_config.name != key:
                raise ValueError(f"apis.{key}.name: must equal its key {key!r}, not {api_config.name!r}")
        for job in self.jobs:
            if isinstance(job, LoadJob):  # a decimal cast upstream is compared as a decimal (canonical.py)
                job.compare_as = {**dict.fromkeys(self._decimals(job.source), "decimal"), **job.compare_as}
        return self

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
