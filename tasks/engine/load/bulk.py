"""Bulk writes: many rows in one request, to an upsert endpoint (a list of records) or to a batch API (a list of
sub-requests), and how its answer reports each row: a result per row, or the rows a refused batch names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from prefect_restful_etl.tasks.engine.http.paths import get_path, set_path


class BulkWrite(BaseModel):
    """Many rows per request, in one of two shapes.

    An upsert endpoint: records in, one result per record out, in the same order.
    ```
    POST /customers/bulk  [{"external_id": "7", "name": "Acme", ...}, ...]
    200 [{"id": "AC-000007", "status": "created", "detail": null},
         {"id": null, "status": "error", "detail": "email: 'x' is not a valid email address"}]
    ```
    `{"path": "/customers/bulk", "batch_size": 100}`. It must match records by the job's natural key, so it
    serves types 0 and 1 (a type 2 key has several rows); deletes and expiries still go one by one. An envelope
    for the list (`{"rows": [...]}`): `"envelope": "rows"`, and `"results_path": "rows"` for the answer's.

    A batch API: each row a sub-request, shaped as the load's write shapes say (method, URL, body), e.g.
    PocketBase's, which is one transaction: a row it refuses rolls back the others.
    ```
    POST /api/batch {"requests": [{"method": "POST", "url": "/api/collections/accounts/records", "body": {...}},
                                  {"method": "PATCH", "url": "/api/collections/accounts/records/k3x9", "body": {...}}]}
    200 [{"status": 200, "body": {"id": "p2m1", ...}}, {"status": 200, "body": {...}}]
    400 {"status": 400, "message": "Batch transaction failed.",
         "data": {"requests": {"1": {"code": "batch_request_failed", "response": {"message": "Failed to ..."}}}}}
    ```
    `{"path": "/api/batch", "item": "request", "envelope": "requests", "id_path": "body.id", "batch_size": 50,
      "failures_path": "data.requests", "failure_message_path": "response.message", "transactional": true}`:
    the rows a refused batch names are error events, and the others are sent again without them.
    """

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {"path": "/customers/bulk", "batch_size": 100},
                {
                    "path": "/api/batch",
                    "item": "request",
                    "envelope": "requests",
                    "id_path": "body.id",
                    "batch_size": 50,
                    "failures_path": "data.requests",
                    "failure_message_path": "response.message",
                    "transactional": True,
                },
            ]
        },
    )

    path: str = Field(min_length=1, description="The bulk endpoint (POSTed to).")
    batch_size: int = Field(default=100, ge=1, description="Rows per request (the API's maximum or less).")
    item: Literal["record", "request"] = Field(
        default="record",
        description="record: each row is its record (an upsert by natural key); request: each row is a sub-request "
        '`{"method", "url", "body"}` built from the write shapes (a batch API).',
    )
    envelope: str | None = Field(
        default=None, description='Dotted path of the list in the body (`"rows"`: `{"rows": [...]}`); default: bare.'
    )
    body: dict[str, Any] = Field(default_factory=dict, description="Constant fields beside the envelope.")
    results_path: str | None = Field(default=None, description="Where the per-row results are; default: the body.")
    id_path: str | None = Field(
        default=None, description="Dotted path of a created row's id in its result (`body.id`); default: id_field."
    )
    status_field: str = Field(
        default="status",
        description="A result's status: `error_status`, or an HTTP status of 400 or more, marks a refused row.",
    )
    error_status: str = Field(default="error", description="The status text of a refused row.")
    message_field: str = Field(default="detail", description="Dotted path of a refused row's reason in its result.")
    failures_path: str | None = Field(
        default=None,
        description="In a refused (4xx) answer, where the failed rows are: an object keyed by row index or a list.",
    )
    failure_message_path: str = Field(default="message", description="A failed row's reason, within its failure.")
    transactional: bool = Field(
        default=False, description="A refused batch wrote none of its rows: send the others again without the failed."
    )


def request_body(bulk: BulkWrite, items: list[Any]) -> Any:
    """The body of one bulk request: the list, in its envelope (with the constant fields) if it has one."""
    if not bulk.envelope:
        return items
    body: dict[str, Any] = dict(bulk.body)
    set_path(body, bulk.envelope, items)
    return body


def row_results(bulk: BulkWrite, answer: Any, rows: int, id_field: str) -> list[tuple[Any, str | None]]:
    """(new id, why refused or None) per row of a 2xx answer; no per-row results: every row landed, no ids."""
    results = get_path(answer, bulk.results_path)
    if not isinstance(results, list) or len(results) != rows:
        return [(None, None)] * rows
    read: list[tuple[Any, str | None]] = []
    for result in results:
        if not isinstance(result, dict):
            read.append((None, None))
            continue
        status = result.get(bulk.status_field)
        failed = status == bulk.error_status or (
            isinstance(status, int) and not isinstance(status, bool) and status >= 400
        )
        detail = get_path(result, bulk.message_field) if failed else None
        read.append(
            (
                None if failed else get_path(result, bulk.id_path or id_field),
                str(detail or "refused") if failed else None,
            )
        )
    return read


def failed_rows(bulk: BulkWrite, answer: Any, rows: int) -> dict[int, str] | None:
    """The rows a refused answer names, with their reasons; None when it names none (the batch as a whole)."""
    found = get_path(answer, bulk.failures_path) if bulk.failures_path else None
    if isinstance(found, list):
        found = dict(enumerate(found))
    if not isinstance(found, dict):
        return None
    failed: dict[int, str] = {}
    for key, failure in found.items():
        index = int(key) if isinstance(key, int) or (isinstance(key, str) and key.isdigit()) else -1
        if 0 <= index < rows and failure is not None:
            reason = get_path(failure, bulk.failure_message_path) if isinstance(failure, dict) else failure
            failed[index] = str(reason or "refused")
    return failed or None
