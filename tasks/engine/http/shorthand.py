"""The by-name shorthand of a configuration union: `"bearer"` for `{"type": "bearer"}`, and the JSON Schema told so.

pydantic's schema of a union behind a before-validator is the union's alone, so an editor checking a batch type
file against the published schema would refuse `auth: bearer`, which the models accept.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator


def with_names(annotated: Any) -> Any:
    """`Annotated[A | B, Field(discriminator="type"), ...]` accepting, in its JSON Schema too, a member's `type`."""
    union, *metadata = get_args(annotated)
    names = tuple(member.model_fields["type"].default for member in get_args(union))
    discriminated = Annotated[(union, *(m for m in metadata if not isinstance(m, BeforeValidator)))]  # type: ignore[valid-type]
    named = Literal[names] | discriminated  # type: ignore[valid-type]
    return Annotated[annotated, BeforeValidator(_unchanged, json_schema_input_type=named)]


def _unchanged(value: Any) -> Any:
    return value  # the annotated union's own validator reads the name
