"""Reading the reference pages (docs/) as a user does: each entry's model, its configuration examples and the
example of what it is for, from the Markdown alone."""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

DOCS = Path(__file__).resolve().parents[1] / "docs"
_MODEL = re.compile(r"^Model `(\w+)` \(`([\w.]+)`\)")
_CONFIGURATIONS = ("Configuration:", "Another configuration:")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)


@dataclass
class PageEntry:
    """One `###` entry of a page: its heading, the model it names, and its fenced blocks in order."""

    page: str
    heading: str
    group: str
    text: str
    blocks: list[tuple[str, str, str]] = field(default_factory=list)  # (label before it, language, body)

    def model(self) -> type[BaseModel]:
        found = next(_MODEL.match(line) for line in self.text.splitlines() if _MODEL.match(line))
        assert found is not None, f"{self.page} {self.heading}: no Model line"
        model = getattr(importlib.import_module(found.group(2)), found.group(1))
        assert isinstance(model, type) and issubclass(model, BaseModel)
        return model

    def configurations(self) -> list[Any]:
        return [json.loads(body) for label, _, body in self.blocks if label in _CONFIGURATIONS]

    def environments(self) -> list[dict[str, str]]:
        return [
            dict(line.split("=", 1) for line in body.splitlines())
            for label, _, body in self.blocks
            if label == "Environment:"
        ]

    def uses(self) -> list[str]:
        """The fenced blocks of the docstring: what the entry is for (an API's answer, a record before and after)."""
        return [body for label, _, body in self.blocks if label not in (*_CONFIGURATIONS, "Environment:")]


def page_entries(name: str) -> list[PageEntry]:
    text = (DOCS / name).read_text(encoding="utf-8")
    entries: list[PageEntry] = []
    group = ""
    for part in re.split(r"^(?=#{2,3} )", text, flags=re.M):
        if part.startswith("## "):
            group = part.splitlines()[0][3:]
        elif part.startswith("### "):
            entry = PageEntry(name, part.splitlines()[0][4:], group, part)
            for match in _FENCE.finditer(part):
                before = part[: match.start()].rstrip("\n").splitlines()
                entry.blocks.append((before[-1] if before else "", match.group(1), match.group(2)))
            entries.append(entry)
    return entries


def entry(page: str, heading: str) -> PageEntry:
    return next(found for found in page_entries(page) if found.heading == heading)


def pages() -> list[str]:
    return sorted(path.name for path in DOCS.glob("*.md"))
