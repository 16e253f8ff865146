"""Job types and batch types: what each job of a batch does, stated as plain configuration.

A batch type lists its APIs and its jobs in order; each job names the job whose staged output it reads.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_restful_etl.tasks.engine.api import ApiConfig
from prefect_restful_etl.tasks.engine.incremental import Incremental
from prefect_restful_etl.tasks.engine.paginators import Paginator
from prefect_restful_etl.tasks.engine.transforms import TransformStep


class Endpoint(BaseModel):
    """A collection on an API: `{"path": "/customers", "records_path": "data"}`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict, description="Query parameters sent with every page.")
    records_path: str | None = Field(default=None, description="Dotted path to the records in the body.")
    paginator: Paginator | None = Field(default=None, description="Overrides the API's paginator.")


class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description='What the job does: "Extract CRM customers".')
    description: str = ""

    @property
    def slug(self) -> str:
        """The job's name as a key: `extract-crm-customers`."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


class ExtractJob(_Job):
    """Read an entity from an API, page by page, into the stage."""

    kind: Literal["extract"] = "extract"
    api: str
    endpoint: Endpoint
    natural_key: list[str] = Field(min_length=1, description="Dotted paths that identify a record in the source.")
    incremental: Incremental | None = None


class TransformJob(_Job):
    """Reshape staged records step by step; rejects go to the error table."""

    kind: Literal["transform"] = "transform"
    source: str = Field(description="The name of the job whose staged records this job reads.")
    steps: list[TransformStep] = Field(default_factory=list)
    natural_key: list[str] | None = Field(
        default=None, description="Identifies an input record in error events; default: the source job's key."
    )


class LoadJob(_Job):
    """Write staged records to a destination API as a slowly changing dimension (type 1: overwrite)."""

    kind: Literal["load"] = "load"
    source: str
    api: str
    endpoint: Endpoint = Field(description="The destination collection: pulled to diff, then written.")
    natural_key: list[str] = Field(min_length=1, description="Fields that match a staged record to a destination one.")
    compare: list[str] | None = Field(default=None, description="Fields compared for change; default: all staged fields.")
    id_field: str = Field(default="id", description="The destination's own id, used in update URLs.")
    update_method: Literal["PUT", "PATCH"] = "PUT"
    scd_type: Literal[1] = 1
    concurrency: int = Field(default=4, ge=1, description="Writes in flight at once.")


JobType = Annotated[ExtractJob | TransformJob | LoadJob, Field(discriminator="kind")]


class BatchType(BaseModel):
    """A named template of jobs: `crm-to-accounting` = extract, transform, load."""

    model_config = ConfigDict(extra="forbid")

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
            seen.add(job.name)
        for key, api_config in self.apis.items():
            if api_config.name != key:
                raise ValueError(f"apis.{key}.name: must equal its key {key!r}, not {api_config.name!r}")
        return self

    def job(self, name: str) -> ExtractJob | TransformJob | LoadJob:
        return next(job for job in self.jobs if job.name == name)

    def natural_key_of(self, job: ExtractJob | TransformJob | LoadJob) -> list[str]:
        """A job's own natural key, or that of the job it reads from."""
        while job.natural_key is None and isinstance(job, TransformJob):
            job = self.job(job.source)
        assert job.natural_key is not None
        return job.natural_key
