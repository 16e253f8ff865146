"""Job types that batch types share (`{"use": ...}` merged as a JSON merge patch), and what a batch type's own
checks say: the job by its name, the field, the valid choices, never the value given."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, JobTypeLibrary, merge_patch, resolve_uses

EXTRACT = {"kind": "extract", "name": "Extract orders", "api": "shop", "endpoint": {"path": "/orders"},
           "natural_key": ["id"]}  # fmt: skip
LIBRARY = {"extract-orders": EXTRACT, "load-orders": {"kind": "load", "name": "Load orders", "api": "erp",
           "endpoint": {"path": "/orders", "params": {"a": 1}}, "natural_key": ["id"]}}  # fmt: skip


@pytest.mark.parametrize(
    "target,patch,merged",
    [
        ({"a": 1, "b": 2}, {"b": 3}, {"a": 1, "b": 3}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 5, "z": 6}}, {"a": {"x": 1, "y": 5, "z": 6}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1, "b": 2}, {"b": None}, {"a": 1}),
        ({"a": 1}, {"a": {"x": None, "y": 1}}, {"a": {"y": 1}}),
        ({}, {}, {}),
    ],
    ids=["replace", "objects-merge", "lists-replace", "null-removes", "object-over-scalar", "empty"],
)
def test_overrides_merge_as_a_json_merge_patch(target: dict[str, Any], patch: dict[str, Any], merged: Any) -> None:
    before = repr(target)
    assert merge_patch(target, patch) == merged
    assert repr(target) == before  # the job type itself is never changed


def test_a_use_becomes_its_job_type_with_the_overrides_and_other_jobs_pass_as_given() -> None:
    transform = {"kind": "transform", "name": "Shape", "source": "Extract orders"}
    jobs = resolve_uses(
        [{"use": "extract-orders"}, transform, {"use": "load-orders", "source": "Shape", "endpoint": {"path": "/o"}}],
        LIBRARY,
    )
    assert jobs[0] == EXTRACT and jobs[1] is transform
    assert jobs[2]["source"] == "Shape" and jobs[2]["endpoint"] == {"path": "/o", "params": {"a": 1}}
    assert LIBRARY["load-orders"]["endpoint"] == {"path": "/orders", "params": {"a": 1}}


def test_one_job_type_serves_two_jobs_of_one_batch_type_under_two_names() -> None:
    jobs = resolve_uses([{"use": "extract-orders"}, {"use": "extract-orders", "name": "Extract old orders"}], LIBRARY)
    assert [job["name"] for job in jobs] == ["Extract orders", "Extract old orders"]


@pytest.mark.parametrize(
    "job,library,message",
    [
        ({"use": "extract-ordrs"}, LIBRARY, ("job number 1: use: not the name of a job type; the job types are "
         "'extract-orders', 'load-orders'")),
        ({"use": "x", "name": "Mine"}, {}, "job 'Mine': use: not the name of a job type; no job types are defined"),
        ({"use": ["secret-ish"]}, LIBRARY, "job number 1: use: not the name of a job type"),
    ],
    ids=["misspelt", "no-library", "not-a-string"],
)  # fmt: skip
def test_an_unknown_job_type_is_named_by_the_job_and_lists_the_job_types(
    job: dict[str, Any], library: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_uses([job], library)
    assert str(raised.value).startswith(message)
    assert "ordrs" not in str(raised.value) and "secret-ish" not in str(raised.value)


def test_a_library_names_its_job_types_as_batch_type_names_are() -> None:
    assert JobTypeLibrary.model_validate({"job_types": LIBRARY}).job_types == LIBRARY
    with pytest.raises(ValidationError):
        JobTypeLibrary.model_validate({"job_types": {"Extract Orders": EXTRACT}})


API = {"base_url": "http://127.0.0.1:1", "auth": {"type": "none"}}


def batch(*jobs: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "apis": {"shop": {"name": "shop", **API}, "erp": {"name": "erp", **API}}, "jobs": list(jobs)}


LOAD = {"kind": "load", "name": "Load orders", "api": "erp", "endpoint": {"path": "/o"}, "natural_key": ["id"]}


@pytest.mark.parametrize(
    "raw,message,hidden",
    [
        (batch(EXTRACT, {**LOAD, "source": "Extract ordrs"}), ("job 'Load orders': source: not the name of an earlier "
         "job; the earlier jobs are 'Extract orders'"), "ordrs"),
        (batch({**LOAD, "source": "Extract orders"}), ("job 'Load orders': source: not the name of an earlier job; it "
         "is the first job"), None),
        (batch({**EXTRACT, "api": "shoop"}), ("job 'Extract orders': api: not one of the batch type's apis; the batch "
         "type's apis are 'erp', 'shop'"), "shoop"),
        (batch(EXTRACT, EXTRACT), "job 'Extract orders': name: used by two jobs", None),
        (batch(EXTRACT, {**EXTRACT, "name": "Children", "parent": {"job": "Nope"}}),
         ("job 'Children': parent.job: not the name of an earlier extract job; the earlier extract jobs are "
         "'Extract orders'"), "Nope"),
    ],
    ids=["source-misspelt", "source-first-job", "api-misspelt", "name-twice", "parent"],
)  # fmt: skip
def test_a_batch_type_names_the_job_and_field_of_a_reference_that_leads_nowhere(
    raw: dict[str, Any], message: str, hidden: str | None
) -> None:
    with pytest.raises(ValidationError) as raised:
        BatchType.model_validate(raw)
    text = str(raised.value)
    assert message in text
    assert hidden is None or hidden not in text.replace(message, "")
