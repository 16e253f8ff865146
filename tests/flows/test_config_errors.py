"""pydantic's errors about a batch type as its file's reader knows it: the job by its name (not `jobs.2.transform`),
the field inside it, the valid choices; never the value that was given."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from prefect_restful_etl.flows.config_errors import describe
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
from prefect_restful_etl.tasks.engine.jobtypes import BatchType

BASE = CRM_TO_ACCOUNTING.model_dump(mode="json", exclude_unset=True)
SECRET = "s3cr3t-value-never-shown"
EXTRACT, SHAPE, LOAD = (
    "job 'Extract CRM customers'",
    "job 'Shape accounting customers'",
    "job 'Load accounting customers'",
)


def messages(change: Callable[[dict[str, Any]], Any]) -> list[str]:
    raw = copy.deepcopy(BASE)
    change(raw)
    with pytest.raises(ValidationError) as raised:
        BatchType.model_validate(raw)
    return describe(raised.value, raw)


@pytest.mark.parametrize(
    "change,expected",
    [
        (lambda r: r["jobs"][1].update(kind=SECRET),
         f"{SHAPE}: kind: should be one of 'extract', 'transform', 'load'"),
        (lambda r: r["jobs"][1].pop("kind"),
         f"{SHAPE}: kind: missing (required); one of 'extract', 'load', 'transform'"),
        (lambda r: r["jobs"][1]["steps"][0].update(op=SECRET),
         f"{SHAPE}: steps[0].op: should be one of 'rename', 'select', 'drop'"),
        (lambda r: r["jobs"][0].update(endpont=SECRET),
         f"{EXTRACT}: endpont: not a field here; the fields are 'name', 'description', 'kind', 'api', 'endpoint'"),
        (lambda r: r["jobs"][1]["steps"][0].update(feilds=SECRET),
         f"{SHAPE}: steps[0].feilds: not a field here; the fields are 'op', 'fields'"),
        (lambda r: r["jobs"][0]["endpoint"].pop("path"), f"{EXTRACT}: endpoint.path: missing (required)"),
        (lambda r: r["jobs"][1]["screens"][0].update(severity=42),
         f"{SHAPE}: screens[0].severity: should be less than or equal to 10"),
        (lambda r: r["jobs"][1]["screens"][0].update(check=SECRET),
         f"{SHAPE}: screens[0].check: should be one of 'not_null', 'type', 'pattern'"),
        (lambda r: r["jobs"][2].update(source=SECRET),
         (f"{LOAD}: source: not the name of an earlier job; the earlier jobs are 'Extract CRM customers', 'Shape "
         "accounting customers'")),
        (lambda r: r["jobs"][2].update(scd_type=5), f"{LOAD}: scd_type: should be 0, 1 or 2"),
        (lambda r: r["apis"]["crm"]["paginator"].update(type=SECRET),
         "apis.crm.paginator.type: should be one of 'single_page', 'page_number'"),
        (lambda r: r["apis"]["crm"].update(auth={"type": SECRET}), "apis.crm.auth.type: should be one of 'none', "),
        (lambda r: r["apis"]["crm"].update(base_url=SECRET), "apis.crm.base_url: should be a valid URL"),
        (lambda r: r["apis"]["crm"].update(headers={"Authorization": SECRET}),
         "apis.crm.headers: header 'Authorization' carries a secret: give it as credentials, not configuration"),
        (lambda r: r.update(job=SECRET), "job: not a field here; the fields are 'name', 'description', 'apis', 'jobs'"),
        (lambda r: r["jobs"][1].pop("name"), "job number 2: name: missing (required)"),
        (lambda r: r["apis"]["crm"]["paginator"].update(pagesize=SECRET),
         "apis.crm.paginator.pagesize: not a field here; the fields are 'max_pages', "),
        (lambda r: r["apis"]["crm"]["auth"].update(tokn=SECRET),
         "apis.crm.auth.tokn: not a field here; the fields are 'type'"),
    ],
    ids=["kind-misspelt", "kind-missing", "step-op", "job-field-misspelt", "step-field-misspelt", "missing-field",
         "out-of-range", "screen-check", "source", "literal", "paginator-type", "auth-type", "url", "secret-header",
         "top-level-field", "nameless-job", "paginator-field", "auth-field"],
)  # fmt: skip
def test_a_mistake_is_named_by_job_and_field_with_the_choices_never_its_value(
    change: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    found = messages(change)
    assert any(message.startswith(expected) for message in found), found
    assert not any(SECRET in message for message in found)
    assert not any("jobs." in message for message in found)  # never `jobs.2.transform...`


def test_every_mistake_of_a_file_is_told_once() -> None:
    def two(raw: dict[str, Any]) -> None:
        raw["jobs"][0]["endpoint"].pop("path")
        raw["jobs"][2].update(scd_type=5)

    found = messages(two)
    assert len(found) == len(set(found)) == 2
