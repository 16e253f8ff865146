"""Dotted JSON paths (`data`, `results.items`, `meta.updated_at`, `items.0.id`) into records and bodies."""

from __future__ import annotations

import copy
from typing import Any

from prefect_restful_etl.tasks.engine.exceptions import RecordError

_MISSING = object()


def get_path(obj: Any, path: str | None, default: Any = None) -> Any:
    """Return the value at `path`; `None`, `""` or `"$"` mean the object itself."""
    if type(obj) is dict and path and "." not in path and path != "$":  # a record's plain field: most reads
        return obj.get(path, default)
    if path in (None, "", "$"):
        return obj
    current = obj
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part, _MISSING)
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else _MISSING
        else:
            current = _MISSING
        if current is _MISSING:
            return default
    return current


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    """Set `value` at a dotted `path`, creating the objects on the way (a null one is missing, as in JSON).

    A value on the way that is not an object (`{"address": "Main St"}` for `address.city`) is the record's
    problem, not the batch's: a `RecordError` naming the path.
    """
    *parents, leaf = path.split(".")
    for depth, part in enumerate(parents):
        child = obj.get(part)
        if child is None:
            child = obj[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise RecordError(f"cannot set {path}: {where} is {type(child).__name__}, not an object",
                              column=path, value=child)  # fmt: skip
        obj = child
    obj[leaf] = value


def own_copy(value: Any) -> Any:
    """`value` ready to write into one record: an object or a list is copied (deeply), so that a later step
    editing inside one record never changes another record, a lookup's cache or the configuration."""
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


def pop_path(obj: dict[str, Any], path: str, default: Any = None) -> Any:
    """Remove and return the value at a dotted `path`."""
    *parents, leaf = path.split(".")
    for part in parents:
        inner = obj.get(part)
        if not isinstance(inner, dict):
            return default
        obj = inner
    return obj.pop(leaf, default)
