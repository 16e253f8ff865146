"""The reference's pages as Markdown, written to a folder (`restful-etl docs`) or compared with it (`--check`)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from prefect_restful_etl.flows.reference.contents import INDEX, Page, pages
from prefect_restful_etl.flows.reference.entries import EntryText, Group
from prefect_restful_etl.flows.reference.field_types import Place, Places
from prefect_restful_etl.flows.reference.walk import reachable
from prefect_restful_etl.tasks.engine.jobtypes import BatchType

GENERATED = "_Generated from the models by `restful-etl docs`; a test fails when this page and the models disagree._"


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def places(of: tuple[Page, ...]) -> Places:
    models: dict[type[BaseModel], Place] = {}
    unions: dict[frozenset[type[BaseModel]], Place] = {}
    for page in of:
        for group in page.groups:
            if group.union is not None:
                unions[group.union] = Place(page.file, anchor(group.title), _singular(group.title))
            for entry in group.entries:
                models[entry.model] = Place(page.file, anchor(entry.heading()), entry.heading())
    return Places(models, unions)


def _singular(title: str) -> str:
    """`Paging styles` -> `paging style`: how a field's type names one of a group."""
    words = title.lower().split(" ")
    return " ".join([*words[:-1], words[-1].removesuffix("s")])


def render() -> dict[str, str]:
    """Every page's Markdown, by file name."""
    every = pages()
    where = places(every)
    return {page.file: _page_text(page, every, where) for page in every}


def _page_text(page: Page, every: tuple[Page, ...], where: Places) -> str:
    lines = [f"# {page.title}", "", GENERATED, "", page.intro, ""]
    if page.file == INDEX:
        lines += _contents(every[1:], where)
    headings: set[str] = set()
    for group in page.groups:
        lines += [f"## {group.title}", "", group.intro, ""]
        lines += _overview(group, page.file, where)
        for entry in group.entries:
            heading = anchor(entry.heading())
            if heading in headings or heading == anchor(group.title):
                raise ValueError(f"{page.file}: two headings would have the anchor #{heading}")
            headings.add(heading)
            lines += EntryText(where, page.file).write(entry)
    return "\n".join(lines).rstrip() + "\n"


def _contents(others: tuple[Page, ...], where: Places) -> list[str]:
    lines = ["| page | holds |", "| --- | --- |"]
    for page in others:
        held = ", ".join(where.models[entry.model].link(INDEX) for group in page.groups for entry in group.entries)
        lines.append(f"| [{page.title}]({page.file}) | {held} |")
    return [*lines, ""]


def _overview(group: Group, page: str, where: Places) -> list[str]:
    if len(group.entries) < 2:
        return []
    lines = ["| | |", "| --- | --- |"]
    for entry in group.entries:
        summary = entry.summary().replace("|", "\\|")
        lines.append(f"| {where.models[entry.model].link(page)} | {summary} |")
    return [*lines, ""]


def problems() -> list[str]:
    """What keeps the reference from being whole: an entry's gaps, and a model a batch type reaches without an entry."""
    every = pages()
    documented = {entry.model for page in every for group in page.groups for entry in group.entries}
    found = [problem for model in reachable(BatchType) if model not in documented for problem in [_absent(model)]]
    for page in every:
        for group in page.groups:
            for entry in group.entries:
                found += entry.problems()
    return found


def _absent(model: type[BaseModel]) -> str:
    where = "flows/reference/contents.py"
    return f"{model.__module__}.{model.__qualname__}: a batch type reaches it, and no page holds it ({where})"


def write(folder: Path) -> list[Path]:
    """Write every page into `folder`; a page of a reference with gaps is never written."""
    found = problems()
    if found:
        raise ValueError("the reference has gaps:\n" + "\n".join(found))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        (folder / name).write_text(text, encoding="utf-8")
        written.append(folder / name)
    return written


def stale(folder: Path) -> list[str]:
    """The pages of `folder` that differ from what the models say now (or are missing)."""
    return [
        name
        for name, text in render().items()
        if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text
    ]
