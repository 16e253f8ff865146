"""What the reference says a step or a screen does is what it does: the record before and after (a step), or the
record and the error event it makes (a screen), read from the page."""

from __future__ import annotations

import json
from typing import Any

import pytest
from reference_support import PageEntry, page_entries

from prefect_restful_etl.flows.reference.walk import union_members
from prefect_restful_etl.tasks.engine.transform.screens import Exists, Screen, Unique, parse_screens
from prefect_restful_etl.tasks.engine.transform.steps import TransformStep, run_pipeline

STEPS = [found for found in page_entries("transform.md") if found.group == "Steps"]
SCREENS = [found for found in page_entries("transform.md") if found.group == "Screens"]
_REJECTED = "rejected, an error event: "


def _before_and_after(found: PageEntry) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The block `<record or records>` then `-> <record or records>`, as lists of records."""
    block = next(body for body in found.uses() if "\n-> " in body)
    before, after = (json.loads(part) for part in block.split("\n-> ", 1))
    return (before if isinstance(before, list) else [before]), (after if isinstance(after, list) else [after])


@pytest.mark.parametrize("found", STEPS, ids=[found.heading.strip("`") for found in STEPS])
async def test_a_step_turns_its_example_record_into_what_the_page_shows(found: PageEntry) -> None:
    before, after = _before_and_after(found)
    step = found.configurations()[0]
    made = [out for record in before for out in await run_pipeline([step], record, {})]
    assert made == after
    assert [list(record) for record in made] == [list(record) for record in after]  # the fields' order too


def test_every_step_and_screen_is_on_the_page() -> None:
    assert [found.model() for found in STEPS] == union_members(TransformStep)
    assert [found.model() for found in SCREENS] == union_members(Screen)


# unique and exists screen a batch (other records, a lookup source), not one record: a Screener runs them
ONE_RECORD = [found for found in SCREENS if found.model() not in (Unique, Exists)]


@pytest.mark.parametrize("found", ONE_RECORD, ids=[found.heading.strip("`") for found in ONE_RECORD])
def test_a_screen_fails_its_example_record_as_the_page_shows(found: PageEntry) -> None:
    block = next(body for body in found.uses() if f"\n-> {_REJECTED}" in body)
    record, said = block.split(f"\n-> {_REJECTED}", 1)
    [screen] = parse_screens([found.configurations()[0]])
    assert screen.action == "reject"
    problem = screen.problem(json.loads(record))  # type: ignore[union-attr]
    assert problem is not None and problem[2] == said.strip()
