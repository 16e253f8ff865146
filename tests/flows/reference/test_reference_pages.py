"""The reference in docs/ is what the models say: regenerated here and compared, every example on it valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field
from reference_support import DOCS, page_entries, pages

from prefect_restful_etl.flows.reference import problems, render, stale, write
from prefect_restful_etl.flows.reference.entries import Entry
from prefect_restful_etl.tasks.engine.extract.incremental import Incremental
from prefect_restful_etl.tasks.engine.http.auth import AuthConfig
from prefect_restful_etl.tasks.engine.http.paginators import Paginator
from prefect_restful_etl.tasks.engine.settings import Settings
from prefect_restful_etl.tasks.engine.transform.lookup_config import LookupConfig
from prefect_restful_etl.tasks.engine.transform.screens import Screen
from prefect_restful_etl.tasks.engine.transform.steps import TransformStep

README = DOCS.parent / "README.md"
_LINK = re.compile(r"\]\(([\w.\-]*)(?:#([\w\-]+))?\)")


def test_the_pages_in_docs_are_what_the_models_say() -> None:
    assert stale(DOCS) == [], "docs/ is out of date with the models: run `restful-etl docs`"
    assert pages() == sorted(render()), "docs/ holds a page the generator does not write, or lacks one"


def test_no_model_lacks_a_description_an_example_or_its_entry() -> None:
    assert problems() == []


@pytest.mark.parametrize("page", pages())
def test_every_configuration_example_on_a_page_is_valid(page: str, monkeypatch: pytest.MonkeyPatch) -> None:
    checked = 0
    for found in page_entries(page):
        model = found.model()
        for example in found.configurations():
            model.model_validate(example)
            checked += 1
        for environment in found.environments():
            assert model is Settings
            for name, value in environment.items():
                monkeypatch.setenv(name, value)
            settings = Settings()
            assert all(getattr(settings, name.removeprefix("RESTFUL_ETL_").lower()) for name in environment)
            checked += 1
    assert checked, f"{page}: no example to check"


@pytest.mark.parametrize("page", ["paging.md", "auth.md", "extract.md", "transform.md", "load.md"])
def test_every_option_shows_what_it_is_for(page: str) -> None:
    for found in page_entries(page):
        assert found.uses(), f"{page} {found.heading}: no example of the API answer, request or record it is for"


@pytest.mark.parametrize(
    ("page", "union"),
    [("paging.md", Paginator), ("auth.md", AuthConfig), ("transform.md", TransformStep),
     ("transform.md", LookupConfig), ("transform.md", Screen)],
    ids=["paging styles", "auth styles", "steps", "lookups", "screens"],
)  # fmt: skip
def test_every_member_of_a_union_has_its_entry(page: str, union: object) -> None:
    from prefect_restful_etl.flows.reference.walk import union_members

    documented = {found.model() for found in page_entries(page)}
    assert set(union_members(union)) <= documented


def test_every_link_on_the_pages_leads_to_a_page_and_a_heading() -> None:
    anchors = {page: _anchors((DOCS / page).read_text(encoding="utf-8")) for page in pages()}
    for page in pages():
        for target, anchor in _LINK.findall((DOCS / page).read_text(encoding="utf-8")):
            target = target or page
            assert target in anchors, f"{page}: a link to {target}, which is no page"
            assert not anchor or anchor in anchors[target], f"{page}: a link to {target}#{anchor}, no such heading"


def _anchors(text: str) -> set[str]:
    from prefect_restful_etl.flows.reference.pages import anchor

    return {anchor(line.lstrip("#").strip()) for line in text.splitlines() if line.startswith("#")}


def test_a_page_that_differs_from_the_models_is_named(tmp_path: Path) -> None:
    write(tmp_path)
    assert stale(tmp_path) == []
    page = tmp_path / "paging.md"
    page.write_text(page.read_text(encoding="utf-8").replace("Records per page", "Rows per page"), encoding="utf-8")
    (tmp_path / "load.md").unlink()
    assert stale(tmp_path) == ["paging.md", "load.md"]


class _Undocumented(BaseModel):
    """A style with no example of what it is for."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"size": "big"}]})

    type: str = "undocumented"
    size: int = Field(default=1, description="How big.")
    colour: str = "red"


def test_an_entry_names_what_its_model_lacks() -> None:
    found = Entry(_Undocumented, chooser="type").problems()
    name = f"{__name__}._Undocumented"
    assert found == [
        f"{name}: the docstring shows no example (a fenced block) of what it is for",
        f"{name}: example 1 is not valid: Input should be a valid integer, unable to parse string as an integer",
        f"{name}.colour: no description",
    ]


def test_the_readme_links_the_reference_and_names_every_style_step_and_screen() -> None:
    from prefect_restful_etl.flows.reference.walk import literal_values, union_members

    readme = README.read_text(encoding="utf-8")
    assert "docs/reference.md" in readme
    for union, chooser in ((Paginator, "type"), (AuthConfig, "type"), (TransformStep, "op"), (Screen, "check"),
                           (LookupConfig, "type")):  # fmt: skip
        for member in union_members(union):
            for name in literal_values(member.model_fields[chooser].annotation):
                assert f"`{name}`" in readme, f"README.md does not name {chooser} {name!r}"
    for model in (*union_members(Paginator), Incremental):  # the fields a new user had to read the source for
        for name in model.model_fields:
            assert f"`{name}`" in readme, f"README.md does not name {model.__name__}.{name}"
