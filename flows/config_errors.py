"""pydantic's errors about a batch type, told as the reader of its file knows it: the job by its name, the field
by its path inside the job, and the valid choices; never the value that was given.

`jobs.2.transform.steps.0.rename.fields: Input should be a valid dictionary` becomes
`job 'Shape accounting customers': steps[0].fields: should be a valid dictionary`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from pydantic import ValidationError

from prefect_restful_etl.tasks.engine.jobtypes import BatchType


def describe(error: ValidationError, raw: Any, schema: Mapping[str, Any] | None = None) -> list[str]:
    """One message per error of `error`, raised validating `raw` (a batch type unless `schema` says otherwise)."""
    schema = schema if schema is not None else _model_schema()
    messages = []
    for detail in error.errors(include_url=False, include_input=False, include_context=True):
        where = _where(tuple(detail["loc"]), raw)
        messages.append(_message(detail, where, schema))
    return list(dict.fromkeys(messages))  # a union's members can report one mistake twice


@cache
def _model_schema() -> dict[str, Any]:
    return BatchType.model_json_schema()


def _where(loc: tuple[int | str, ...], raw: Any) -> list[str]:
    """The location as names: `job '<name>'`, then the field path inside it (`steps[0].fields`)."""
    parts: list[str] = []
    node: Any = raw
    for position, element in enumerate(loc):
        last = position == len(loc) - 1
        if element == "[key]":
            continue  # the key itself, named by the part before it
        if isinstance(element, int):
            if position == 1 and loc[0] == "jobs":
                parts = [_job_label(node, element)]
            elif parts:
                parts[-1] += f"[{element}]"
            else:
                parts.append(f"[{element}]")
            node = node[element] if isinstance(node, Sequence) and 0 <= element < len(node) else None
        elif isinstance(node, Mapping) and element in node:
            parts.append(element)
            node = node[element]
        elif last and (isinstance(node, Mapping) or node is None):
            parts.append(element)  # a missing field: named, though nothing is there
        # else: a union's tag (`transform`) or member label (`str`, `dict[str,any]`): not a place in the file
    return parts


def _job_label(jobs: Any, index: int) -> str:
    job = jobs[index] if isinstance(jobs, Sequence) and 0 <= index < len(jobs) else None
    name = job.get("name") if isinstance(job, Mapping) else None
    return f"job {name!r}" if isinstance(name, str) and name and len(name) <= 200 else f"job number {index + 1}"


def _message(detail: Mapping[str, Any], where: list[str], schema: Mapping[str, Any]) -> str:
    kind, context, loc = detail["type"], detail.get("ctx") or {}, tuple(detail["loc"])
    text = str(detail["msg"])
    if kind == "missing":
        text = "missing (required)"
    elif kind == "extra_forbidden":
        fields = _fields_at(schema, loc[:-1])
        text = "not a field here" + (f"; the fields are {_choices(fields)}" if fields else "")
    elif kind == "union_tag_invalid":
        tag = str(context.get("discriminator", "")).strip("'")
        where = [*where, tag] if tag else where
        text = f"should be one of {context.get('expected_tags', '')}"
    elif kind == "union_tag_not_found":
        tag = str(context.get("discriminator", "")).strip("'")
        where = [*where, tag] if tag else where
        tags = _tags_at(schema, loc)
        text = "missing (required)" + (f"; one of {_choices(tags)}" if tags else "")
    elif kind in ("value_error", "assertion_error"):
        text = text.split(", ", 1)[1] if ", " in text else text  # "Value error, <our own message>"
    elif loc and loc[-1] == "[key]":  # a mapping's key, such as a job type's name
        text = text.replace("String should", "the name should", 1)
    else:
        text = text.replace("Input should be", "should be", 1)
    prefix = _joined(where)
    return f"{prefix}: {text}" if prefix else text


def _joined(parts: list[str]) -> str:
    if parts and parts[0].startswith("job "):
        rest = ".".join(parts[1:])
        return f"{parts[0]}: {rest}" if rest else parts[0]
    return ".".join(parts)


def _choices(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


# --- the JSON Schema at an error's location: where the valid choices come from ---------------------------------


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][str(node["$ref"]).rsplit("/", 1)[-1]]
    return node


def _options(schema: Mapping[str, Any], node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A union's members, a union inside it flattened (`"bearer" | {discriminated styles}`)."""
    members: list[Mapping[str, Any]] = []
    for member in node.get("oneOf") or node.get("anyOf") or []:
        resolved = _resolve(schema, member)
        members.extend(_options(schema, resolved) if "oneOf" in resolved or "anyOf" in resolved else [resolved])
    return members


def _mapping(schema: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, str]:
    """The discriminator's tags -> references of a union, or of the unions inside it."""
    mapping = dict((node.get("discriminator") or {}).get("mapping", {}))
    for member in node.get("oneOf") or node.get("anyOf") or []:
        resolved = _resolve(schema, member)
        if "oneOf" in resolved or "anyOf" in resolved:
            mapping |= _mapping(schema, resolved)
    return mapping


def _node_at(schema: Mapping[str, Any], loc: Sequence[int | str]) -> Mapping[str, Any] | None:
    """The schema of the value at pydantic's `loc` (tags and union labels included), or None if lost."""
    node = _resolve(schema, schema)
    for element in loc:
        node = _resolve(schema, node)
        options = _options(schema, node)
        if options:
            mapping = _mapping(schema, node)
            if element in mapping:
                node = _resolve(schema, {"$ref": mapping[element]})
                continue
            having = [o for o in options if isinstance(element, str) and element in o.get("properties", {})]
            if isinstance(element, int):
                having = [o for o in options if "items" in o]
            if not having:
                continue  # a member label such as `str`: stay at the union
            node = having[0]
        if isinstance(element, int):
            node = node.get("items", {})
        elif element in node.get("properties", {}):
            node = node["properties"][element]
        elif isinstance(node.get("additionalProperties"), Mapping):
            node = node["additionalProperties"]
        else:
            return None
    return _resolve(schema, node)


def _fields_at(schema: Mapping[str, Any], loc: Sequence[int | str]) -> list[str]:
    node = _node_at(schema, loc)
    if node is None:
        return []
    for option in [node, *_options(schema, node)]:
        if option.get("properties"):
            return list(option["properties"])
    return []


def _tags_at(schema: Mapping[str, Any], loc: Sequence[int | str]) -> list[str]:
    node = _node_at(schema, loc)
    return list(_mapping(schema, node)) if node is not None else []
