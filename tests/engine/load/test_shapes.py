"""Write shapes (method, URL template, envelope, where the new id is) and the bulk shapes' bodies and answers."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from prefect_restful_etl.tasks.engine.load.bulk import BulkWrite, failed_rows, request_body, row_results
from prefect_restful_etl.tasks.engine.load.job import LoadJob
from prefect_restful_etl.tasks.engine.load.scd import Write
from prefect_restful_etl.tasks.engine.load.shapes import Shaper, WriteShapes

RECORD = {"external_id": "7", "name": "Acme"}


def shaper(writes: dict[str, Any] | None = None, **values: str) -> Shaper:
    shapes = WriteShapes.model_validate(writes) if writes is not None else None
    return Shaper(shapes, path="/customers/", id_field="id", update_method="PATCH", values=values)


@pytest.mark.parametrize(
    "writes,write,body,expected",
    [
        pytest.param(None, Write("create", RECORD, None), RECORD, ("POST", "/customers", RECORD), id="default-create"),
        pytest.param(
            None, Write("update", RECORD, "a/b"), RECORD, ("PATCH", "/customers/a%2Fb", RECORD), id="default-update"
        ),
        pytest.param(None, Write("delete", None, 9), None, ("DELETE", "/customers/9", None), id="default-delete"),
        pytest.param(
            {"create": {"path": "/{table}/-/insert", "envelope": "row", "body": {"return": True}}},
            Write("create", RECORD, None), RECORD,
            ("POST", "/customers/-/insert", {"return": True, "row": RECORD}), id="datasette-insert",
        ),
        pytest.param(
            {"update": {"method": "POST", "path": "/{table}/{id}/-/update", "envelope": "update"}},
            Write("update", RECORD, 3), RECORD,
            ("POST", "/customers/3/-/update", {"update": RECORD}), id="datasette-update",
        ),
        pytest.param(
            {"expire": {"path": "/records/{id}", "envelope": "data.attributes"}},
            Write("expire", {"valid_to": "t"}, "x1"), {"valid_to": "t"},
            ("PATCH", "/records/x1", {"data": {"attributes": {"valid_to": "t"}}}), id="nested-envelope",
        ),
    ],
)  # fmt: skip
def test_each_write_is_shaped_as_configured(writes: Any, write: Write, body: Any, expected: tuple) -> None:
    assert shaper(writes, table="customers").request(write, body) == expected


@pytest.mark.parametrize(
    "id_path,answer,expected",
    [
        pytest.param(None, {"id": "AC-1"}, "AC-1", id="id"),
        pytest.param("data.id", {"data": {"id": 91}}, 91, id="data.id"),
        pytest.param("rows.0.id", {"rows": [{"id": 5, "name": "Acme"}]}, 5, id="rows.0.id"),
        pytest.param("data.id", None, None, id="no-body"),
    ],
)
def test_the_new_id_is_read_where_the_answer_gives_it(id_path: str | None, answer: Any, expected: Any) -> None:
    assert shaper({"create": {"id_path": id_path}}).new_id(answer) == expected


def test_a_url_placeholder_without_a_value_fails_the_load_config_naming_it() -> None:
    config = {
        "name": "Load", "source": "Shape", "api": "dest", "endpoint": {"path": "/rows"}, "natural_key": ["k"],
        "writes": {"update": {"path": "/{table}/{id}/-/update"}},
    }  # fmt: skip
    with pytest.raises(ValidationError, match=r"\['table'\] have no value in shape_values"):
        LoadJob.model_validate(config)
    assert LoadJob.model_validate({**config, "shape_values": {"table": "rows"}}).shaper().url("update", 1) == (
        "/rows/1/-/update"
    )


POCKETBASE = BulkWrite.model_validate(
    {"path": "/api/batch", "item": "request", "envelope": "requests", "id_path": "body.id",
     "failures_path": "data.requests", "failure_message_path": "response.message", "transactional": True}
)  # fmt: skip


def test_a_bulk_body_is_bare_or_in_its_envelope() -> None:
    assert request_body(BulkWrite(path="/bulk"), [1, 2]) == [1, 2]
    assert request_body(BulkWrite(path="/bulk", envelope="rows", body={"upsert": True}), [1]) == {
        "upsert": True,
        "rows": [1],
    }


def test_per_row_results_give_ids_and_refusals_by_text_or_http_status() -> None:
    answer = [{"status": 200, "body": {"id": "p1"}}, {"status": 400, "message": "bad"}, {"status": "error"}]
    bulk = POCKETBASE.model_copy(update={"message_field": "message"})
    assert row_results(bulk, answer, 3, "id") == [("p1", None), (None, "bad"), (None, "refused")]
    assert row_results(bulk, {"unexpected": True}, 2, "id") == [(None, None), (None, None)]


def test_a_refused_batch_names_its_failed_rows_by_index() -> None:
    answer = {
        "status": 400,
        "data": {"requests": {"1": {"code": "batch_request_failed", "response": {"message": "Value must be unique."}}}},
    }
    assert failed_rows(POCKETBASE, answer, 3) == {1: "Value must be unique."}
    assert failed_rows(POCKETBASE, {"data": {"requests": {"9": {}}}}, 3) is None  # out of range: names no row
    listed = POCKETBASE.model_copy(update={"failures_path": "errors", "failure_message_path": "detail"})
    assert failed_rows(listed, {"errors": [None, {"detail": "no"}]}, 2) == {1: "no"}
