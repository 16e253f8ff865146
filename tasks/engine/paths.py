"""Dotted JSON paths (`data`, `results.items`, `meta.updated_at`, `items.0.id`) into records and bodies."""

from __future__ import annotations

from typing import Any

_MISSING = object()


def get_path(obj: Any, path: str | None, default: Any = None) -> Any:
    """Return the value at `path`; `None`, `""` or `"$"` mean the object itself."""
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
    """Set `value` at a dotted `path`, creating the dicts on the way."""
    *parents, leaf = path.split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[leaf] = value


def pop_path(obj: dict[str, Any], path: str, default: Any = None) -> Any:
    """Remove and return the value at a dotted `path`."""
    *parents, leaf = path.split(".")
    for part in parents:
        obj = obj.get(part)
        if not isinstance(obj, dict):
            return default
    return obj.pop(leaf, default)
