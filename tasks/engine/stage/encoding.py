"""How records rest on a stage server: orjson bytes, the same on Redis and MongoDB.

JSON types come back as they went in; datetimes, dates and UUIDs come back as ISO strings and Decimals as
(exact) strings; anything else cannot be staged.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from prefect_restful_etl.tasks.engine.exceptions import StageError


def dump(value: object, name: str) -> bytes:
    """One record (or a list of records) as orjson bytes; `name` is the stage key, for the error."""
    try:
        return orjson.dumps(value, default=_json_default)
    except orjson.JSONEncodeError as ex:
        raise StageError(f"a record for {name} cannot be staged as JSON: {ex}") from ex


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)  # exact, unlike a float
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
