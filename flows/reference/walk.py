"""The models a configuration reaches: through its fields' annotations, unions and all.

A discriminated union (`Annotated[A | B, Field(discriminator="type")]`, with `shorthand.with_names` around it or
not) is read for its members, so a style added to a union is found without anyone listing it.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

PACKAGE = "prefect_restful_etl"


def is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def is_ours(model: type[BaseModel]) -> bool:
    """A model of this package (a Prefect or prefect-redis block a field names is documented by its own)."""
    return model.__module__.split(".")[0] == PACKAGE


def strip_annotated(annotation: Any) -> Any:
    """`Annotated[X, ...]` (however deep) as `X`."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType)


def union_members(annotation: Any) -> list[type[BaseModel]]:
    """The models of a union of models (`Paginator`, `Screen`), in their declared order; [] for anything else."""
    union = strip_annotated(annotation)
    if not is_union(union):
        return []
    members = [strip_annotated(arg) for arg in get_args(union)]
    return members if members and all(is_model(member) for member in members) else []


def discriminator_of(annotation: Any) -> str | None:
    """The field that chooses a member of `Annotated[A | B, Field(discriminator="type")]`, however wrapped."""
    while get_origin(annotation) is Annotated:
        union, *marks = get_args(annotation)
        for mark in marks:
            if isinstance(getattr(mark, "discriminator", None), str):
                return str(mark.discriminator)
        annotation = union
    return None


def literal_values(annotation: Any) -> tuple[Any, ...]:
    """The values of a `Literal[...]` (through `Annotated`), else ()."""
    annotation = strip_annotated(annotation)
    return get_args(annotation) if get_origin(annotation) is Literal else ()


def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """Every model an annotation names: `list[Incremental | None]`, `dict[str, LookupConfig]` ..."""
    annotation = strip_annotated(annotation)
    if is_model(annotation):
        yield annotation
        return
    for arg in get_args(annotation):
        if get_origin(annotation) is not Literal:
            yield from models_in(arg)


def reachable(*roots: type[BaseModel]) -> list[type[BaseModel]]:
    """The roots and every model their fields reach, each once, in the order first met."""
    found: list[type[BaseModel]] = []
    pending = list(roots)
    while pending:
        model = pending.pop(0)
        if model in found or not is_ours(model):
            continue
        found.append(model)
        for field in model.model_fields.values():
            pending.extend(models_in(field.annotation))
    return found
