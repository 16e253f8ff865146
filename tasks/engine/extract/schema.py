"""Entity metadata: a JSON Schema that checks each extracted record and reports schema drift.

The schema comes from a file (relative to the working directory), a URL (fetched once) or a dict:

```json
{"type": "object", "required": ["id", "email"],
 "properties": {"id": {"type": "integer"}, "email": {"type": "string", "format": "email"},
                "updated_at": {"type": "string", "format": "date-time"}}}
```
`checker = await SchemaChecker.load("schemas/customer.json")`, then `checker.check(record)` per record
and `checker.drift()` at the end of the extract.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from jsonschema import FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from jsonschema.validators import Draft202012Validator, validator_for

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RecordError, SourceError
from prefect_restful_etl.tasks.engine.http.client import RestClient

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))")


def _is_email(value: object) -> bool:
    return not isinstance(value, str) or _EMAIL.fullmatch(value) is not None


def _is_date_time(value: object) -> bool:
    """RFC 3339 `date-time`, checked here so that no extra package (rfc3339-validator) is needed."""
    if not isinstance(value, str):
        return True
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    off_hour, off_minute = int(match.group(9) or 0), int(match.group(10) or 0)
    try:
        date(year, month, day)
    except ValueError:
        return False
    return hour < 24 and minute < 60 and second <= 60 and off_hour < 24 and off_minute < 60


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    checker.checks("email")(_is_email)
    checker.checks("date-time")(_is_date_time)
    return checker


@dataclass(frozen=True)
class Violation:
    """Why one record fails the schema: the message, the failing column (dotted) and its value."""

    message: str
    column: str | None
    value: Any = None

    def as_error(self) -> RecordError:
        return RecordError(self.message, column=self.column, value=self.value)


@dataclass(frozen=True)
class SchemaDrift:
    """Fields that records carry but the schema does not declare, and declared properties no record had."""

    unexpected_fields: tuple[str, ...]
    unseen_properties: tuple[str, ...]

    @property
    def drifted(self) -> bool:
        return bool(self.unexpected_fields or self.unseen_properties)


class SchemaChecker:
    """Checks records against one JSON Schema (Draft 2020-12 unless `$schema` says otherwise).

    The validator is compiled once; per record, `check` validates and notes which fields appeared.
    Drift covers top-level properties and the nested ones a property declares inline.
    """

    def __init__(self, schema: dict[str, Any], *, source: str = "schema") -> None:
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
        except SchemaError as ex:
            raise ConfigError(f"schema {source}", f"is not a valid JSON Schema: {ex.message}") from None
        self._validator = cls(schema, format_checker=_format_checker())
        self._declared = _declared_paths(schema.get("properties", {}))
        self._nested = _nested_tree(schema.get("properties", {}))
        self._seen: set[str] = set()
        self.checked = 0
        self.failed = 0

    @classmethod
    async def load(
        cls,
        source: str | Path | dict[str, Any],
        *,
        client: RestClient | httpx.AsyncClient | None = None,
        base_dir: Path | None = None,
    ) -> SchemaChecker:
        schema = await load_schema(source, client=client, base_dir=base_dir)
        return cls(schema, source=source if isinstance(source, str) else "schema")

    def check(self, record: dict[str, Any]) -> Violation | None:
        """None when the record is valid, else the most relevant violation."""
        self.checked += 1
        self._observe(record, "", self._nested)
        error = best_match(self._validator.iter_errors(record))
        if error is None:
            return None
        self.failed += 1
        return _violation(error)

    def drift(self) -> SchemaDrift:
        unseen = sorted(self._declared - self._seen)
        top_unseen = [p for p in unseen if not any(p.startswith(q + ".") for q in unseen)]
        return SchemaDrift(tuple(sorted(self._seen - self._declared)), tuple(top_unseen))

    def _observe(self, obj: dict[str, Any], prefix: str, nested: dict[str, Any]) -> None:
        self._seen.update((f"{prefix}{key}" for key in obj) if prefix else obj)
        for key, subtree in nested.items():
            value = obj.get(key)
            if isinstance(value, dict):
                self._observe(value, f"{prefix}{key}.", subtree)


def _inline_properties(node: Any) -> dict[str, Any]:
    props = node.get("properties") if isinstance(node, dict) else None
    return props if isinstance(props, dict) else {}


def _declared_paths(properties: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for name, node in properties.items():
        paths.add(prefix + name)
        paths |= _declared_paths(_inline_properties(node), f"{prefix}{name}.")
    return paths


def _nested_tree(properties: dict[str, Any]) -> dict[str, Any]:
    """Only the properties that declare their own properties: where drift tracking descends."""
    return {name: _nested_tree(sub) for name, node in properties.items() if (sub := _inline_properties(node))}


def _violation(error: ValidationError) -> Violation:
    path = [str(p) for p in error.absolute_path]
    value = error.instance
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in instance]
        path, value = path + missing[:1], None
    elif error.validator in ("additionalProperties", "unevaluatedProperties"):
        declared = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = [name for name in instance if name not in declared]
        path, value = path + extra[:1], instance.get(extra[0]) if extra else None
    column = ".".join(path) or None
    message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
    return Violation(f"{column}: {message}" if column else message, column, value)


async def load_schema(
    source: str | Path | dict[str, Any],
    *,
    client: RestClient | httpx.AsyncClient | None = None,
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """The schema as a dict: given inline, read from a file, or fetched from an http(s) URL."""
    if isinstance(source, dict):
        return source
    text = str(source)
    if text.startswith(("http://", "https://")):
        body = await _fetch(text, client)
    else:
        path = Path(text) if Path(text).is_absolute() else (base_dir or Path.cwd()) / text
        try:
            body = await asyncio.to_thread(path.read_text, encoding="utf-8")
        except OSError as ex:
            raise ConfigError(f"schema {text}", f"cannot be read: {ex.strerror}") from None
    try:
        schema = json.loads(body)
    except ValueError as ex:
        raise ConfigError(f"schema {text}", f"is not JSON: {ex}") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"schema {text}", "is not a JSON object")
    return schema


async def _fetch(url: str, client: RestClient | httpx.AsyncClient | None) -> str:
    if isinstance(client, RestClient):
        return (await client.request("GET", url)).text
    endpoint = f"GET {httpx.URL(url).copy_with(query=None)}"
    failure = ""
    try:
        if client is not None:
            response = await client.get(url)
        else:
            async with httpx.AsyncClient(timeout=30.0) as own:
                response = await own.get(url)
    except httpx.HTTPError as ex:
        failure = f"{type(ex).__name__}: {ex}"
    if failure:
        raise SourceError(endpoint, None, failure)
    if not response.is_success:
        raise SourceError(endpoint, response.status_code, "the schema could not be fetched")
    return response.text
