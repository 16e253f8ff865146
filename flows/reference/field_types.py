"""A field as the reference shows it: its type in JSON's words, its limits and its default.

Types are read from the annotation (`int | None` is "integer or null"); a model, or a union of models that the
reference documents, becomes a link to its entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, HttpUrl, SecretStr, TypeAdapter
from pydantic.fields import FieldInfo, PydanticUndefined

from prefect_restful_etl.flows.reference.walk import is_model, is_union, literal_values, strip_annotated

_ANY: TypeAdapter[Any] = TypeAdapter(Any)
DISCRIMINATORS = ("type", "op", "check", "kind")  # the fields that choose a member of a union
_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    Any: "any JSON value",
    SecretStr: "string (secret)",
    HttpUrl: "URL",
    Path: "path",
    timedelta: "seconds, or an ISO 8601 duration",
    datetime: "ISO 8601 date-time",
}


@dataclass(frozen=True)
class Place:
    """Where an entry is: its page, its heading's anchor, and how a link to it reads."""

    page: str
    anchor: str
    label: str

    def link(self, from_page: str) -> str:
        target = f"#{self.anchor}" if from_page == self.page else f"{self.page}#{self.anchor}"
        return f"[{self.label}]({target})"


@dataclass(frozen=True)
class Places:
    """The entries of every page, for links: a model's own, and a union's (all its members) group."""

    models: dict[type[BaseModel], Place]
    unions: dict[frozenset[type[BaseModel]], Place]


def field_type(field: FieldInfo, places: Places, page: str) -> str:
    """`integer ≥ 1`, `string or null`, `[paging style](paging.md#...) (or its name)` ..."""
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    text = type_text(annotation, places, page)
    limits = _limits(field.metadata)
    return f"{text}, {limits}" if limits else text


def type_text(annotation: Any, places: Places, page: str) -> str:
    by_name = _by_name(annotation)
    annotation = strip_annotated(annotation)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    values = literal_values(annotation)
    if values:
        return " or ".join(f"`{json.dumps(value)}`" for value in values)
    if is_union(annotation):
        return _union_text(annotation, places, page, by_name)
    if is_model(annotation):
        place = places.models.get(annotation)
        return place.link(page) if place else f"`{annotation.__name__}`"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list and args:
        return f"array of {type_text(args[0], places, page)}"
    if origin is dict and len(args) == 2:
        return f"object of {type_text(args[1], places, page)}"
    if origin in (list, dict):
        return "array" if origin is list else "object"
    return f"`{getattr(annotation, '__name__', annotation)}`"


def _union_text(union: Any, places: Places, page: str, by_name: bool) -> str:
    args = [arg for arg in get_args(union) if arg is not type(None)]
    nullable = len(args) < len(get_args(union))
    members = frozenset(strip_annotated(arg) for arg in args)
    place = places.unions.get(members) if all(is_model(m) for m in members) else None
    if place is not None:
        text = place.link(page) + (" (an object, or its name alone)" if by_name else "")
    else:
        text = " or ".join(type_text(arg, places, page) for arg in args)
    if not nullable:
        return text
    return f"{text}, or null" if " " in text else f"{text} or null"


def _by_name(annotation: Any) -> bool:
    """Whether the union accepts a member's name alone (`"bearer"`): `shorthand.with_names` marks it so."""
    while get_origin(annotation) is Annotated:
        marks = get_args(annotation)[1:]
        if any(isinstance(m, BeforeValidator) and m.json_schema_input_type is not PydanticUndefined for m in marks):
            return True
        annotation = get_args(annotation)[0]
    if is_union(annotation):
        return any(_by_name(arg) for arg in get_args(annotation))
    return False


_LIMITS = (("ge", "≥ {}"), ("gt", "> {}"), ("le", "≤ {}"), ("lt", "< {}"), ("max_length", "at most {} long"))


def _limits(metadata: list[Any]) -> str:
    """`≥ 1`, `not empty`, `matching ...`, read from pydantic's constraint markers (annotated_types) by name."""
    words = []
    for mark in metadata:
        words += [text.format(getattr(mark, name)) for name, text in _LIMITS if getattr(mark, name, None) is not None]
        least = getattr(mark, "min_length", None)
        if least is not None:
            words.append("not empty" if least == 1 else f"at least {least} long")
        if getattr(mark, "pattern", None):
            words.append(f"matching `{mark.pattern}`")
    return ", ".join(words)


def default_text(field: FieldInfo) -> str:
    """`required`, or the default as JSON: `100`, `null`, `{"type": "none"}`."""
    if field.is_required():
        return "required"
    return f"`{json_text(field.get_default(call_default_factory=True))}`"


def json_text(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):  # a model default: what differs from its own defaults, chosen by its name
        chosen = {name: getattr(value, name) for name in DISCRIMINATORS if name in type(value).model_fields}
        return {**_ANY.dump_python(chosen, mode="json"), **value.model_dump(mode="json", exclude_defaults=True)}
    if isinstance(value, SecretStr):
        return value.get_secret_value()  # a default written in the code, never a secret of anyone's
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return int(seconds) if seconds.is_integer() else seconds
    return _ANY.dump_python(value, mode="json")
