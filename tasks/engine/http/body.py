"""JSON bodies: each response parsed once (the paginator and the record extraction share it), strictly and fast,
and leniently where the strict parser refuses, so that one odd value costs one record, never the page.

A page such as
```json
{"data": [{"id": 1, "score": NaN}, {"id": 2, "score": 1e400}, {"id": 3, "tags": [[[[...100,000 deep...]]]]}]}
```
parses: each value that no stage can hold as JSON (NaN, Infinity, a number beyond float range, nesting deeper
than `MAX_DEPTH`) becomes an `Unrepresentable` in its record, which the extract turns into an error event for
that record alone. Integers keep every digit (`12345678901234567890123` stays an int, never a rounded float).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import httpx
import orjson

MAX_DEPTH = 300
"""Nesting the lenient parse keeps; a deeper structure becomes one `Unrepresentable`. Python's own JSON parser
recurses once per level and raises RecursionError near 1,000, so a 100,000-deep record could not be read at all;
no stage holds more than 254 levels anyway (orjson's limit)."""

_CACHE = "restful_etl.json_body"
_CONTENT = "restful_etl.content"
# orjson turns an integer beyond 64 bits into a float (its last digits lost): a body with a run of 19 digits or
# more takes the lenient parse, which keeps integers exact. `translate` marks digits in one C pass.
_DIGITS = bytes(0x39 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"9" * 19
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')  # strings (skipped whole) and brackets
_TOO_DEEP = "-0e-271828182"  # a JSON number no API sends: what a cut structure is replaced by before parsing


class Unrepresentable:
    """Stands in a parsed record where the body held a value that JSON, and so no stage, can hold.

    It is not JSON-serializable on purpose: the stage check finds it, and `reason` says what it was.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Unrepresentable({self.reason!r})"


def json_body(response: httpx.Response) -> Any:
    """The response's body as JSON, parsed on first use and kept on the response; ValueError if it is not JSON."""
    try:
        return response.extensions[_CACHE]
    except KeyError:
        content = response.extensions.pop(_CONTENT, None)
        body = response.extensions[_CACHE] = loads(response.content if content is None else content)
        return body


def forget_body(response: httpx.Response) -> None:
    """Let go of a page's parsed body once its records and the paginator's reading are done.

    A response is garbage in a reference cycle (httpx's stream points back at it), freed only by the cyclic
    collector, which may not come for many pages: without the parsed body it waits there as its bytes alone."""
    response.extensions.pop(_CACHE, None)
    response.extensions.pop(_CONTENT, None)


def keep_content(response: httpx.Response, content: bytes) -> None:
    """The body of a response read in pieces (httpx then holds none of it), for `json_body` to parse."""
    response.extensions[_CONTENT] = content


def keep_body(response: httpx.Response, body: Any) -> None:
    """`body` as the response's parsed body: a streamed page's, with an empty list where its records were."""
    response.extensions[_CACHE] = body


def lenient_decoder() -> json.JSONDecoder:
    """The lenient parse's decoder, for a reader that parses a body one value at a time (`streaming.py`)."""
    return json.JSONDecoder(parse_constant=_constant, parse_float=_float)


def loads(content: bytes | str) -> Any:
    """`content` as JSON: orjson where it accepts the text and loses nothing, else the lenient parse."""
    raw = content.encode() if isinstance(content, str) else content
    if raw.translate(_DIGITS).find(_LONG_NUMBER) < 0:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # NaN, Infinity, 1e400, a lone surrogate, deep nesting, not UTF-8: the lenient parse sorts it out
    try:
        return _lenient(raw)
    except RecursionError:
        return _lenient(_cut_deep(raw))


def _lenient(raw: bytes) -> Any:
    return json.loads(raw, parse_constant=_constant, parse_float=_float)


def _constant(name: str) -> Unrepresentable:
    return Unrepresentable(f"{name} is not a number JSON can carry")


def _float(text: str) -> float | Unrepresentable:
    if text == _TOO_DEEP:
        return Unrepresentable(f"nested deeper than {MAX_DEPTH} levels")
    value = float(text)
    if math.isinf(value):
        return Unrepresentable(f"{text[:30]} is beyond the range of a float")
    return value


def _cut_deep(raw: bytes) -> bytes:
    """`raw` with every structure that starts deeper than MAX_DEPTH replaced by the `_TOO_DEEP` number."""
    out, depth, kept_to, cut_at = [], 0, 0, -1
    for token in _TOKENS.finditer(raw):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
            if depth == MAX_DEPTH + 1:
                cut_at = token.start()
        elif char in (b"]", b"}"):
            if depth == MAX_DEPTH + 1:
                out += [raw[kept_to:cut_at], _TOO_DEEP.encode()]
                kept_to = token.end()
            depth -= 1
    out.append(raw[kept_to:])
    return b"".join(out)
