"""Large pages read as they arrive: a body over `STREAM_OVER` bytes is never held whole, its records are parsed
and handed on a chunk at a time, so a job's memory stays flat whatever one page holds.

A page such as
```json
{"total": 1000000, "data": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, ... a million ...], "next": "c2"}
```
with `records_path: "data"` yields its records in chunks of `CHUNK_RECORDS` while the body streams in; what
surrounds the records (`{"total": 1000000, "data": [], "next": "c2"}`) is kept and parsed once the body has
ended, for the paginator. Each record is parsed as `body.py` parses a body leniently (NaN, 1e400 and structures
too deep to parse become `Unrepresentable`, integers stay exact), so a record comes out the same whichever way
its page was read. A body this reader cannot stream (its path runs through a list index, or leads to no list)
is read whole after all, and extracted as any other.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx

from prefect_restful_etl.tasks.engine.exceptions import RetriableError, SourceError
from prefect_restful_etl.tasks.engine.http.body import keep_body, keep_content, lenient_decoder, loads
from prefect_restful_etl.tasks.engine.http.paths import get_path

STREAM_OVER = 2**20
"""Bodies up to this many bytes are read whole (one fast parse); longer ones are streamed. Read when a page
arrives, so a test may lower it."""

CHUNK_RECORDS = 1000
"""Records handed on at a time from a streamed page."""

READ_AT_LEAST = 1 << 16
"""Characters read at least when a value runs past what is read (more where the value is longer)."""

_LARGE = "restful_etl.large_body"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SPACE = frozenset(" \t\n\r")
_SEPARATORS = frozenset(",]")
_AFTER_VALUE = frozenset(" \t\n\r,:]}")
_SCANNER = json.JSONDecoder().scan_once  # type: ignore[attr-defined] # (text, index) -> (value, end); StopIteration where no JSON value begins
# Digits, exponent marks and signs kept, all else blanked: where a float may overflow shows as a plain substring.
_MARKS = bytes(0x39 if 0x30 <= b <= 0x39 else 0x65 if b in b"eE" else 0x2B if b in b"+-" else 0x20 for b in range(256))
# A float's range ends near 1.8e308: a mantissa of 200 digits overflows with an exponent of 3 digits only.
_LONG_DIGITS = b"9" * 200
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_KEEP_BUFFER = 1 << 16  # parsed text dropped from the buffer's front once this much has piled up


async def read_page(response: httpx.Response) -> None:
    """Read a page's body: whole when it is short (and parse it, `body.json_body`), else only its first bytes,
    leaving the rest to `LargeBody` (`large_body(response)`). An error status's body is always read whole."""
    declared = response.headers.get("Content-Length", "")
    if not response.is_success or (declared.isdigit() and int(declared) <= STREAM_OVER):
        await response.aread()
        return
    head: list[bytes] = []
    size = 0
    chunks = response.aiter_bytes()
    async for chunk in chunks:
        head.append(chunk)
        size += len(chunk)
        if size > STREAM_OVER:
            response.extensions[_LARGE] = LargeBody(response, b"".join(head), chunks)
            return
    await response.aclose()
    keep_content(response, b"".join(head))


def large_body(response: httpx.Response) -> LargeBody | None:
    """The streamed body of a response `read_page` found too long to read whole, or None."""
    found = response.extensions.get(_LARGE)
    return found if isinstance(found, LargeBody) else None


class PageSummary:
    """What a paginator learns of a streamed page in place of its records: how many there were, and enough of
    them (count, first and last record's text) to tell the same page served twice."""

    __slots__ = ("_identity", "count")

    def __init__(self, count: int, first: str, last: str) -> None:
        self.count, self._identity = count, (count, first, last)

    def __len__(self) -> int:
        return self.count

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PageSummary) and other._identity == self._identity

    __hash__ = None  # type: ignore[assignment]


class LargeBody:
    """A page's body read as it arrives; `records()` yields its records a chunk at a time, then `summary` and
    `body` (the body with an empty list where the records were) are known."""

    def __init__(self, response: httpx.Response, head: bytes, rest: AsyncIterator[bytes]) -> None:
        self._response = response
        self._text = _Text(head, rest)
        self.summary = PageSummary(0, "", "")
        self.body: Any = None

    async def records(
        self,
        records_path: str | None,
        endpoint: Callable[[], str],
        extract: Callable[[httpx.Response, str | None], list[Any]],
        *,
        on_page: str = "",
    ) -> AsyncGenerator[list[Any], None]:
        """The records at `records_path`, `CHUNK_RECORDS` at a time; a body with no list there is read whole and
        handed to `extract` (the client's `extract_records`). A body that is not one JSON value fails, naming
        the endpoint (and `on_page`), never a value."""
        failure: SourceError | None = None
        try:
            async for chunk in self._records(records_path, endpoint, extract, on_page):
                yield chunk
        except (ValueError, RecursionError):  # raised outside, so no parser message (which quotes text) is chained
            failure = SourceError(endpoint(), self._response.status_code, f"the body is not JSON{on_page}")
        except httpx.HTTPError as ex:  # the connection dropped within the body (what was read is handed on)
            failure = RetriableError(endpoint(), None, f"{type(ex).__name__} within a streamed body{on_page}")
        finally:
            await self._response.aclose()
        if failure is not None:
            raise failure

    async def _records(
        self,
        records_path: str | None,
        endpoint: Callable[[], str],
        extract: Callable[[httpx.Response, str | None], list[Any]],
        on_page: str,
    ) -> AsyncGenerator[list[Any], None]:
        text = self._text
        parts = [] if records_path in (None, "", "$") else str(records_path).split(".")
        if not await _descend(text, parts):  # no list to stream there: the body whole, as any other
            keep_content(self._response, await text.everything())
            yield extract(self._response, records_path)
            return
        async for chunk in self._elements():
            yield chunk
        self.body = loads(await text.everything())
        if get_path(self.body, records_path) != []:  # JSON's last-one-wins would have read the other list
            message = f"records_path {records_path!r} is in the body twice{on_page}"
            raise SourceError(endpoint(), self._response.status_code, message)
        keep_body(self._response, self.body)

    async def _elements(self) -> AsyncGenerator[list[Any], None]:
        """The list's elements, parsed one by one straight from the buffer by the C scanner (this loop is the
        hot path), a chunk at a time; a chunk whose text holds what that scanner reads otherwise than the
        lenient parse (NaN, Infinity, a float that may overflow) is parsed again as `body.loads` does."""
        text, done = self._text, 0
        chunk: list[Any] = []
        text.keep("[]")
        text.pos += 1
        if await text.peek() == "]":
            text.pos += 1
            return
        decode, space, append = _SCANNER, _WHITESPACE.match, chunk.append
        buf, pos = text.buf, text.pos
        begun, first, ended = pos, "", pos  # this chunk's text begins at `begun`; the last record ends at `ended`
        while True:
            try:
                record, ended = decode(buf, pos)
                end = ended
                after = buf[end]
                if after in _SPACE:
                    end = space(buf, end).end()  # type: ignore[union-attr]
                    after = buf[end]
            except (StopIteration, ValueError, IndexError):
                after = ""
            except RecursionError:
                text.pos = pos
                record = await text.deep_value()
                ended = text.pos
                after = await text.peek()
                buf, end = text.buf, text.pos
            if after not in _SEPARATORS:  # cut by the buffer's end ("4" of "4.5"), or not JSON: reading on tells
                text.pos = pos
                await text.more_of_one_value()  # appends to `buf`: every index into it holds
                buf = text.buf
                if buf[pos : pos + 1] in _SPACE:  # the space after a comma may come with the next read
                    pos = space(buf, pos).end()  # type: ignore[union-attr]
                continue
            append(record)
            first = first or buf[pos:ended]
            if after == "]":
                self.summary = PageSummary(done + len(chunk), first, buf[pos:ended])
                text.pos = end + 1
                yield _checked(chunk, buf, begun, ended)
                return
            pos = end + 1
            if buf[pos : pos + 1] in _SPACE:
                pos = space(buf, pos).end()  # type: ignore[union-attr]
            if len(chunk) >= CHUNK_RECORDS:
                text.pos, done = pos, done + len(chunk)
                yield _checked(chunk, buf, begun, ended)
                chunk = []
                append = chunk.append
                text.drop_parsed()
                buf, pos = text.buf, text.pos
                begun = pos


def _lenient_only(text: str) -> bool:
    """Whether `text` may hold what Python's scanner reads otherwise than the lenient parse: NaN, Infinity, or a
    number long enough, or with an exponent large enough, to overflow a float. Conservative (a name or a string
    that merely looks so costs a second parse), and plain substring searches: a regular expression over every
    chunk would cost more than the parse."""
    if "NaN" in text or "Infinity" in text:
        return True
    marked = text.encode("utf-8", "surrogatepass").translate(_MARKS)
    return b"e999" in marked or b"e+999" in marked or _LONG_DIGITS in marked


def _checked(chunk: list[Any], buf: str, begun: int, ended: int) -> list[Any]:
    """The chunk as parsed, or parsed again leniently where its text holds what the C scanner reads otherwise."""
    if not _lenient_only(buf[begun:ended]):
        return chunk
    return list(loads(("[" + buf[begun:ended] + "]").encode("utf-8", "surrogatepass")))


async def _descend(text: _Text, parts: list[str]) -> bool:
    """Walk to the value at the dotted path, keeping what it passes; True there is a list to stream."""
    for part in parts:
        if await text.peek() != "{":
            return False
        text.keep("{")
        text.pos += 1
        while True:
            if await text.peek() != '"':
                return False  # '}': the key is absent (the whole body says so, as any other)
            start = text.pos
            key = await text.value()
            if await text.peek() != ":":
                return False
            text.pos += 1
            text.keep(text.buf[start : text.pos])
            if key == part:
                break
            start = text.pos
            await text.value()
            text.keep(text.buf[start : text.pos])
            if await text.peek() != ",":
                return False
            text.pos += 1
            text.keep(",")
    return await text.peek() == "["


class _Text:
    """The body as text: `buf[pos:]` is read and not yet parsed; `kept` is what surrounds the records."""

    def __init__(self, head: bytes, rest: AsyncIterator[bytes]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        self._rest, self._ended = rest, False
        self.buf, self.pos = self._decoder.decode(head), 0
        self.kept: list[str] = []
        self.decode = lenient_decoder().scan_once  # type: ignore[attr-defined] # (text, index) -> (value, end); StopIteration: not JSON there

    def keep(self, text: str) -> None:
        self.kept.append(text)

    def drop_parsed(self) -> None:
        """Forget the text before `pos` once it is most of the buffer (only between values: none is half read);
        never sooner, or each drop would copy a long unparsed rest (the first read holds `STREAM_OVER` bytes)."""
        if self.pos > _KEEP_BUFFER and 2 * self.pos > len(self.buf):
            self.buf, self.pos = self.buf[self.pos :], 0

    async def _more(self, at_least: int = 1) -> bool:
        """Read at least `at_least` more characters (or to the end); False when the body had ended already."""
        if self._ended:
            return False
        added: list[str] = []
        size = 0
        while size < at_least:
            chunk = await anext(self._rest, None)
            if chunk is None:
                added.append(self._decoder.decode(b"", final=True))
                self._ended = True
                break
            added.append(self._decoder.decode(chunk))
            size += len(added[-1])
        self.buf += "".join(added)
        return True

    async def more_of_one_value(self) -> None:
        """The value at `pos` is cut by the buffer's end: read on, at least doubling what is unparsed, so one
        long record takes a few passes, not thousands. A body that has ended is not JSON here."""
        if not await self._more(max(READ_AT_LEAST, len(self.buf) - self.pos)):
            raise ValueError("the body ends within a value")

    async def peek(self) -> str:
        """The next character that is not whitespace ('' at the end of the body), not consumed."""
        while True:
            self.pos = _WHITESPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.buf) or not await self._more():
                return self.buf[self.pos : self.pos + 1]

    async def value(self) -> Any:
        """Parse the JSON value at `pos` (a key, or a value beside the records) and move past it."""
        await self.peek()
        while True:
            try:
                parsed, end = self.decode(self.buf, self.pos)
            except RecursionError:
                return await self.deep_value()
            except (StopIteration, ValueError):
                await self.more_of_one_value()
                continue
            if (end == len(self.buf) or self.buf[end] not in _AFTER_VALUE) and await self._more():
                continue  # a number cut by the buffer's end ("4" of "4.5"): parsed again with more read
            self.pos = end
            return parsed

    async def deep_value(self) -> Any:
        """A value nested too deep for the decoder: found whole by its brackets, then parsed as `body.loads` does."""
        while True:
            end = _value_end(self.buf, self.pos)
            if end is not None:
                raw, self.pos = self.buf[self.pos : end], end
                return loads(raw.encode("utf-8", "surrogatepass"))
            await self.more_of_one_value()

    async def everything(self) -> bytes:
        """What was kept, then the rest of the body: the whole body, less any records streamed from it."""
        while await self._more(1 << 20):
            pass
        self.kept.append(self.buf[self.pos :])
        self.buf, self.pos = "", 0
        whole = "".join(self.kept).encode("utf-8", "surrogatepass")
        self.kept = []
        return whole


def _value_end(text: str, start: int) -> int | None:
    """Where the array or object starting at `start` ends (None: not within `text` yet)."""
    depth = 0
    for token in _TOKENS.finditer(text, start):
        char = token.group()
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return token.end()
    return None
