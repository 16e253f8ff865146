"""What every job type shares: its name (and key), and the API collections it reads or writes."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.http.paginators import Paginator


class Endpoint(BaseModel):
    """A collection on an API: `{"path": "/customers", "records_path": "data"}` for

    ```
    GET https://crm.example.com/api/customers?status=active&page=1
    200 {"data": [{"id": 1, "email": "ada@example.com"}, ...], "total": 1234}
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [{"path": "/customers", "records_path": "data", "params": {"status": "active"}}]
        },
    )

    path: str = Field(min_length=1, description="The collection's path, after the API's base URL.")
    params: dict[str, Any] = Field(default_factory=dict, description="Query parameters sent with every page.")
    records_path: str | None = Field(default=None, description="Dotted path to the records in the body.")
    paginator: Paginator | None = Field(default=None, description="Overrides the API's paginator.")


class JobBase(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, description='What the job does: "Extract CRM customers".')
    description: str = Field(default="", description="Free text, for the people who read the batch type.")

    @property
    def slug(self) -> str:
        """The job's name as a key: `extract-crm-customers`."""
        return job_slug(self.name)


def job_slug(name: str) -> str:
    """A job name as a key (its stage key's last part): `Extract CRM customers` -> `extract-crm-customers`."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
