"""How records rest on a stage server: orjson bytes, the same on Redis and MongoDB.

JSON types come back as they went in; datetimes, dates and UUIDs come back as ISO strings and Decimals as
(exact) strings; anything else cannot be staged. Every backend holds what this encoder can write: the memory
stage keeps Python objects and would hold anything, so the extract checks each page with `unstageable` before
staging it, and a record that Redis could not take is one error event on every stage alike.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from prefect_restful_etl.tasks.engine.exceptions import StageError

MAX_DEPTH = 254
"""The deepest nesting the encoder writes (orjson's limit); a record nested deeper cannot be staged."""


def dump(value: object, name: str) -> bytes:
    """One record (or a list of records) as orjson bytes; `name` is the stage key, for the error."""
    try:
        return orjson.dumps(value, default=_json_default)
    except orjson.JSONEncodeError as ex:
        raise StageError(f"a record for {name} cannot be staged as JSON: {ex}") from ex


def unstageable(records: list[Any]) -> list[int]:
    """The positions of the records the encoder cannot write: one encode of the whole page when all can,
    and one per record only when that fails."""
    try:
        orjson.dumps(records, default=_json_default)
        return []
    except orjson.JSONEncodeError:
        pass
    bad = []
    for position, record in enumerate(records):
        try:
            orjson.dumps(record, default=_json_default)
        except orjson.JSONEncodeError:
            bad.append(position)
    return bad


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)  # exact, unlike a float
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
