"""Records the stage cannot hold: each one is an error event of screen `extract`, and its page goes on without it.

A page is checked with one encode (`stage.encoding.unstageable`); only a page that fails is looked into record
by record, and only a failing record field by field, to name the field and what is wrong with it:

```json
{"id": 7, "score": NaN}                  score: NaN is not a number JSON can carry
{"id": 8, "name": "\\ud800"}             name: text holds a lone surrogate, which UTF-8 cannot encode
{"id": 9, "tree": [[[[ ... 300 deep]]]]} tree.0.0...: nested deeper than 254 levels, more than the stage holds
```
NaN, Infinity and numbers beyond float range come out of the body parser as `Unrepresentable` (see
`http/body.py`), so they are never staged as null without a word.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prefect_restful_etl.tasks.engine.exceptions import StageError
from prefect_restful_etl.tasks.engine.http.body import Unrepresentable
from prefect_restful_etl.tasks.engine.stage.encoding import MAX_DEPTH, dump, unstageable

EXTRACT_SCREEN = "extract"
_MAX_SHOWN = 200
_MAX_PATH = 20  # a longer path is named by its first part
_INT_RANGE = range(-(2**63), 2**64)  # what the encoder writes as an integer


@dataclass(frozen=True)
class Unstageable:
    """Why one record cannot be staged: the field (a dotted path), the offending value as text, a message."""

    column: str | None
    value: str | None
    message: str


def split_unstageable(page: list[Any]) -> tuple[list[Any], list[tuple[Any, Unstageable]]]:
    """The records the stage can hold, in order, and each other record with why it cannot be staged."""
    bad = unstageable(page)
    if not bad:
        return page, []
    skip = set(bad)
    kept = [record for position, record in enumerate(page) if position not in skip]
    return kept, [(page[position], why(page[position])) for position in bad]


def why(record: Any) -> Unstageable:
    """The first field of `record` that the encoder cannot write (walked without recursion: it may be deep)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(record, ())]
    while stack:
        value, path = stack.pop()
        found = _problem(value, len(path))
        if found is not None:
            column = path[:1] if len(path) > _MAX_PATH else path  # a deep structure: the field that holds it
            return Unstageable(".".join(column) or None, found[0], found[1])
        if isinstance(value, dict):
            for name, item in reversed(value.items()):
                if isinstance(name, str) and _lone_surrogate(name):
                    return Unstageable(".".join(path) or None, shown(name), "a field name holds a lone surrogate")
                stack.append((item, (*path, str(name))))
        elif isinstance(value, list):
            stack.extend((item, (*path, str(n))) for n, item in reversed(list(enumerate(value))))
    try:
        dump(record, "the stage")
        message = "the stage cannot hold it"
    except StageError as ex:
        message = str(ex)
    return Unstageable(None, None, message)


def _problem(value: Any, depth: int) -> tuple[str | None, str] | None:
    if isinstance(value, Unrepresentable):
        return None, value.reason
    if depth >= MAX_DEPTH and isinstance(value, (dict, list)):
        return None, f"nested deeper than {MAX_DEPTH} levels, more than the stage holds"
    if isinstance(value, str) and _lone_surrogate(value):
        return shown(value), "text holds a lone surrogate, which UTF-8 cannot encode"
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) and value not in _INT_RANGE:
        return shown(value), "an integer beyond 64 bits, more than the stage holds"
    if isinstance(value, float) and not math.isfinite(value):
        return shown(value), f"{value} is not a number JSON can carry"
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def shown(value: Any) -> str:
    """`value` as text an audit database takes: a lone surrogate escaped (`\\ud800`), cut to 200 characters."""
    text = str(value) if not isinstance(value, int) or value.bit_length() < 600 else f"{str(value)[:40]}..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:_MAX_SHOWN]
