"""Write shapes: how each action of a load (create, update, expire, soft delete, delete) goes on the wire.

By default a create is `POST {path}` with the record as the body and the new id at `id` in the answer, an update
`PUT|PATCH {path}/{id}`, an expiry or soft delete `PATCH {path}/{id}` with only their fields, a delete
`DELETE {path}/{id}`. An API that wants otherwise says so per action:

```json
{"create": {"path": "/{table}/-/insert", "envelope": "row", "id_path": "rows.0.id"},
 "update": {"method": "POST", "path": "/{table}/{id}/-/update", "envelope": "update"},
 "delete": {"method": "POST", "path": "/{table}/{id}/-/delete"}}
```
`{path}` is the endpoint's path, `{id}` the destination's id (URL-encoded), and any other `{name}` a field
of the load's `shape_values` (`{"table": "customers"}`).
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.http.paths import get_path, set_path
from prefect_restful_etl.tasks.engine.load.scd import Write

Method = Literal["POST", "PUT", "PATCH", "DELETE"]
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class WriteShape(BaseModel):
    """One action's request: method, URL template, where the record goes in the body, where the answer's id is.

    ```
    POST /api/items  {"data": {"external_id": "7", "name": "Acme"}, "return": "representation"}
    201 {"data": {"id": "it_91", "external_id": "7", "name": "Acme"}}
    ```
    `{"envelope": "data", "body": {"return": "representation"}, "id_path": "data.id"}`.
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {"envelope": "data", "body": {"return": "representation"}, "id_path": "data.id"},
                {"method": "POST", "path": "/{table}/{id}/-/update", "envelope": "update"},
            ]
        },
    )

    method: Method | None = Field(
        default=None, description="The HTTP method; default: POST (create), the load's update_method, PATCH, DELETE."
    )
    path: str | None = Field(
        default=None,
        description="URL template: `{path}` (the endpoint's), `{id}` (the destination's id), `{name}` from "
        "shape_values; default: `{path}` for a create, `{path}/{id}` for the others.",
    )
    envelope: str | None = Field(
        default=None, description='Dotted path the record is put at in the body (`"data"`: `{"data": {...}}`).'
    )
    body: dict[str, Any] = Field(
        default_factory=dict, description='Constant fields of every body, beside the envelope (`{"return": true}`).'
    )
    id_path: str | None = Field(
        default=None, description="A create's answer: dotted path of the new id (`data.id`, `rows.0.id`); default: id."
    )


class WriteShapes(BaseModel):
    """The shape of each action; an action left out keeps its default:

    ```
    create:               POST {path}          the record              the new id at `id` in the answer
    update:               PUT|PATCH {path}/{id}  the record            (the load's update_method)
    expire, soft_delete:  PATCH {path}/{id}    only their fields
    delete:               DELETE {path}/{id}
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {
                    "create": {"path": "/{table}/-/insert", "envelope": "row", "id_path": "rows.0.id"},
                    "update": {"method": "POST", "path": "/{table}/{id}/-/update", "envelope": "update"},
                    "delete": {"method": "POST", "path": "/{table}/{id}/-/delete"},
                }
            ]
        },
    )

    create: WriteShape = Field(default_factory=WriteShape, description="How a new row (or version) is created.")
    update: WriteShape = Field(default_factory=WriteShape, description="How a changed row is overwritten (type 1).")
    expire: WriteShape = Field(default_factory=WriteShape, description="How a type 2 version is closed.")
    soft_delete: WriteShape = Field(default_factory=WriteShape, description="How a missing key is marked deleted.")
    delete: WriteShape = Field(default_factory=WriteShape, description="How a missing key is deleted.")


_DEFAULT_METHOD: dict[str, str] = {"create": "POST", "expire": "PATCH", "soft_delete": "PATCH", "delete": "DELETE"}


class Shaper:
    """Builds each write's request from the shapes, and reads a create's new id from its answer."""

    def __init__(
        self, shapes: WriteShapes | None, *, path: str, id_field: str, update_method: str, values: dict[str, str]
    ) -> None:
        self.shapes = shapes or WriteShapes()
        self._path, self._id_field, self._update_method = path.rstrip("/"), id_field, update_method
        self._values = values

    def shape(self, op: str) -> WriteShape:
        shape: WriteShape = getattr(self.shapes, op)
        return shape

    def method(self, op: str) -> str:
        return self.shape(op).method or _DEFAULT_METHOD.get(op, self._update_method)

    def url(self, op: str, target: Any) -> str:
        template = self.shape(op).path or ("{path}" if op == "create" else "{path}/{id}")
        values = {**self._values, "path": self._path}
        if target is not None:
            values["id"] = quote(str(target), safe="")

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise KeyError(name)
            return values[name]

        return _PLACEHOLDER.sub(fill, template)

    def body(self, op: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
        """The JSON body of `op` for `record` (None: no body, as for a plain DELETE)."""
        shape = self.shape(op)
        if record is None and not shape.body:
            return None
        body: dict[str, Any] = dict(shape.body)
        if shape.envelope:
            set_path(body, shape.envelope, record or {})
        else:
            body.update(record or {})
        return body

    def request(self, write: Write, record: dict[str, Any] | None) -> tuple[str, str, dict[str, Any] | None]:
        """(method, URL, body) of one write; `record` is its body already stamped with the audit columns."""
        return self.method(write.op), self.url(write.op, write.target), self.body(write.op, record)

    def new_id(self, answer: Any) -> Any:
        """The id a create's answer gives (`id`, or the create shape's `id_path`)."""
        return get_path(answer, self.shapes.create.id_path or self._id_field)

    def missing_values(self) -> list[str]:
        """Placeholders of the URL templates that nothing fills: a configuration error, found before any write."""
        known = {"path", "id", *self._values}
        used = {name for op in _OPS for name in _PLACEHOLDER.findall(self.shape(op).path or "")}
        return sorted(used - known)


_OPS = ("create", "update", "expire", "soft_delete", "delete")
