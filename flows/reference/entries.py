"""One entry of the reference: a model's heading, its docstring, its configuration examples and its fields.

Everything an entry says comes from the model: the docstring (which shows the API response or request the
model is for), the examples in `model_config["json_schema_extra"]`, and each field's type, default and
description. What an entry lacks is a problem the generator refuses to write a page with.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from prefect_restful_etl.flows.reference.field_types import (
    Places,
    default_text,
    field_type,
    json_text,
)
from prefect_restful_etl.flows.reference.walk import discriminator_of, literal_values, union_members

_WIDTH = 100
_SECTION = re.compile(r"^(Example|Examples|Note|Notes):$")


@dataclass(frozen=True)
class Entry:
    """A model documented under a heading: by default its discriminator's values (`page_number`)."""

    model: type[BaseModel]
    title: str | None = None
    where: str = ""  # where a batch type file (or a run, or a worker) gives it
    env_prefix: str | None = None  # settings: each field is an environment variable
    shows_use: bool = True  # the docstring must show the API response, request or record it is for
    chooser: str | None = None  # the field that chooses this model in its union (`type`, `op`, `check`, `kind`)

    def heading(self) -> str:
        if self.title is not None:
            return self.title
        values = literal_values(self.model.model_fields[self.chooser].annotation) if self.chooser else ()
        return ", ".join(f"`{value}`" for value in values) or self.model.__name__

    def docstring(self) -> str:
        own = self.model.__dict__.get("__doc__")
        return _markdown(inspect.cleandoc(own)) if own else ""

    def summary(self) -> str:
        """The docstring's first words, up to a colon or a full stop outside code, for a group's table."""
        first = self.docstring().split("\n\n")[0].replace("\n", " ")
        in_code = False
        for index, char in enumerate(first):
            in_code = in_code != (char == "`")
            if not in_code and first[index : index + 2] in (": ", ". "):
                return first[:index]
        return first.rstrip(":.")

    def examples(self) -> list[Any]:
        """The model's own configuration examples (inherited ones belong to another model)."""
        extra = self.model.model_config.get("json_schema_extra")
        inherited = any(
            base.model_config.get("json_schema_extra") is extra
            for base in self.model.__mro__[1:]
            if isinstance(base, type) and issubclass(base, BaseModel) and extra is not None
        )
        found = extra.get("examples") if isinstance(extra, dict) and not inherited else None
        return list(found) if isinstance(found, list) else []

    def problems(self) -> list[str]:
        """What the entry lacks: a docstring, an example, a field's description; an example the model refuses."""
        name = f"{self.model.__module__}.{self.model.__qualname__}"
        found = [] if self.docstring() else [f"{name}: no docstring"]
        if self.shows_use and "```" not in self.docstring():
            found.append(f"{name}: the docstring shows no example (a fenced block) of what it is for")
        if not self.examples() and self.env_prefix is None and not _is_block(self.model):
            found.append(f'{name}: no configuration example (model_config json_schema_extra "examples")')
        for number, example in enumerate(self.examples(), start=1):
            try:
                self.model.model_validate(example)
            except ValidationError as ex:
                found.append(f"{name}: example {number} is not valid: {ex.errors(include_input=False)[0]['msg']}")
        chooser = self.chooser
        for field_name, info in self.model.model_fields.items():
            if not info.description and field_name != chooser:
                found.append(f"{name}.{field_name}: no description")
        return found


@dataclass(frozen=True)
class Group:
    """Entries under one heading: the members of a union (`Paginator`), or models listed by hand."""

    title: str
    intro: str
    entries: tuple[Entry, ...]
    union: frozenset[type[BaseModel]] | None = None  # links to a union's field go to this group

    @classmethod
    def of_union(cls, title: str, intro: str, union: Any, *, where: str = "", shows_use: bool = True) -> Group:
        members, chooser = union_members(union), discriminator_of(union)
        if not members or chooser is None:
            raise TypeError(f"{title}: not a discriminated union of models")
        entries = tuple(Entry(model, where=where, shows_use=shows_use, chooser=chooser) for model in members)
        return cls(title, intro, entries, frozenset(members))


@dataclass
class EntryText:
    """Writes one entry as Markdown, with links to the entries of every page."""

    places: Places
    page: str
    lines: list[str] = field(default_factory=list)

    def write(self, entry: Entry) -> list[str]:
        self.lines = [f"### {entry.heading()}", ""]
        model = entry.model
        said = f"Model `{model.__name__}` (`{model.__module__}`)"
        self.lines += [f"{said}. {entry.where}".rstrip() if entry.where else f"{said}.", ""]
        if entry.docstring():
            self.lines += [entry.docstring(), ""]
        self._examples(entry)
        self._fields(entry)
        return self.lines

    def _examples(self, entry: Entry) -> None:
        for number, example in enumerate(entry.examples()):
            if entry.env_prefix is not None:
                body = "\n".join(f"{entry.env_prefix}{k.upper()}={_env_value(v)}" for k, v in example.items())
                self.lines += ["Environment:", "", "```sh", body, "```", ""]
            else:
                label = "Another configuration:" if number else "Configuration:"
                self.lines += [label, "", "```json", _shown(example), "```", ""]

    def _fields(self, entry: Entry) -> None:
        fields = entry.model.model_fields
        if not fields:
            return
        first = "variable" if entry.env_prefix is not None else "field"
        self.lines += [f"| {first} | type | default | description |", "| --- | --- | --- | --- |"]
        chooser = entry.chooser
        ordered = sorted(fields.items(), key=lambda item: item[0] != chooser)  # the choosing field first
        for name, info in ordered:
            shown = f"{entry.env_prefix}{name.upper()}" if entry.env_prefix is not None else name
            description = info.description or (f"Chooses this {_kind(chooser)}." if name == chooser else "")
            cells = [f"`{shown}`", field_type(info, self.places, self.page), default_text(info), description]
            self.lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        self.lines.append("")


def _shown(value: Any, indent: int = 0) -> str:
    """An example as JSON: each object or list on one line when it fits in 100 columns, else one item a line."""
    line = json_text(value)
    if indent + len(line) <= _WIDTH or not isinstance(value, (dict, list)) or not value:
        return line
    inner = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{inner}{json_text(key)}: {_shown(item, indent + 2)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [f"{inner}{_shown(item, indent + 2)}" for item in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def _kind(discriminator: str | None) -> str:
    return {"op": "step", "check": "screen", "kind": "job"}.get(discriminator or "", "style")


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json_text(value)


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def _is_block(model: type[BaseModel]) -> bool:
    return any(base.__name__ == "Block" and base.__module__.startswith("prefect.") for base in model.__mro__)


def _markdown(doc: str) -> str:
    """A docstring as Markdown: a Google-style section (`Example:` and its indented lines) dedented under a label."""
    out: list[str] = []
    lines = doc.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not _SECTION.match(line.strip()):
            out.append(line)
            continue
        out += [f"**{line.strip()[:-1]}**", ""]
        body = []
        while index < len(lines) and (not lines[index].strip() or lines[index].startswith(" ")):
            body.append(lines[index])
            index += 1
        out += inspect.cleandoc("\n".join(body)).splitlines()
    return "\n".join(out).strip()
