"""A small safe expression language over records, compiled once into a closure and called per record.

`compile_expression("amount * 1.2 if country in ('DE', 'FR') else amount")` returns `fn(record)`.
Python's own parser reads the text; only whitelisted node types compile, so nothing is ever `eval`ed:
- literals, field names (`email`), dotted paths (`address.city`), `record["odd name"]`, `items[0]`
- arithmetic, comparisons (chained), `and`/`or`/`not`, `in`, `a if cond else b`, tuple/list literals
- calls to the functions in `FUNCTIONS` only, with positional arguments
A missing field reads as `None`. Anything else is a `ConfigError` naming the expression; a failure while
evaluating one record (`None + 1`) is a `RecordError`, so only that record goes to the error table.

Results are bounded, so that no record (or configuration) can make a batch hang or run out of memory:
whole numbers up to `_MAX_INT_BITS` bits, text and lists up to `_MAX_SIZE` characters or items,
`round` to at most `_MAX_ROUND_DIGITS` digits either side of the point; an operation that would pass a
bound is refused before it runs, as a `RecordError`. Regular expressions (`matches`) are Python's, which
backtrack: a pattern with nested repeats such as `(a+)+$` can take exponential time on a long non-matching
value, and Python cannot interrupt it. Write patterns without nested quantifiers, and do not match
against patterns taken from the records themselves.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RecordError

Record = dict[str, Any]
Compiled = Callable[[Record], Any]

_MAX_SOURCE = 2_000  # a config line, not a program; also bounds the parser's recursion
_MAX_POWER = 100
_MAX_REPEAT = 10_000
_MAX_INT_BITS = 10_000  # about 3,000 digits: far beyond any amount, far short of a slow number
_MAX_SIZE = 1_000_000  # characters of text, or items of a list (counting what they hold)
_MAX_ROUND_DIGITS = 20


def compile_expression(source: str) -> Compiled:
    """Compile `source` once; the closure evaluates it against one record.

    >>> compile_expression("lower(email) if email else 'unknown'")({"email": "A@X.ORG"})
    'a@x.org'
    """
    where = f"expression {source!r}"
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(where, "is empty")
    if len(source) > _MAX_SOURCE:
        raise ConfigError(where, f"is longer than {_MAX_SOURCE} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
        body = _Compiler(where).compile(tree.body)
    except SyntaxError as ex:
        raise ConfigError(where, f"is not valid syntax: {ex.msg}") from ex
    except (RecursionError, MemoryError) as ex:
        raise ConfigError(where, "is nested too deeply") from ex

    def evaluate(record: Record) -> Any:
        try:
            return body(record)
        except RecordError:
            raise
        except Exception as ex:  # any failure is this record's problem, never the batch's
            raise RecordError(f"{where} failed: {type(ex).__name__}: {ex}") from ex

    return evaluate


# --- runtime helpers: data only ever moves through dict.get and indexing, never getattr ---


def _member(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return value.get(name)
    if value is None:
        return None  # a path through a missing object is missing, as in JSON
    raise TypeError(f"{type(value).__name__} value has no field {name!r}")


def _item(value: Any, key: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get(key)
    if isinstance(value, (list, str)) and isinstance(key, int) and not isinstance(key, bool):
        return value[key] if -len(value) <= key < len(value) else None
    raise TypeError(f"cannot index {type(value).__name__} with {key!r}")


def _size(value: Any) -> int:
    """How much a value holds: characters of text, items of a list or object plus their own size."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value) + sum(_size(item) for item in value)
    if isinstance(value, dict):
        return len(value) + sum(_size(item) for item in value.values())
    return 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse_size(size: int, what: str) -> None:
    if size > _MAX_SIZE:
        raise ValueError(f"{what} would hold {size} characters or items, more than {_MAX_SIZE}")


def _add(a: Any, b: Any) -> Any:
    # Each operand is bounded, but a long chain of `+` (or compute fields building on each other) is not
    if isinstance(a, (str, list, tuple)) and isinstance(b, (str, list, tuple)):
        _refuse_size(_size(a) + _size(b), "joining these")
    return a + b


def _mul(a: Any, b: Any) -> Any:
    if _is_int(a) and _is_int(b) and a.bit_length() + b.bit_length() > _MAX_INT_BITS:
        raise ValueError(f"the product would have more than {_MAX_INT_BITS} bits")
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and n > 0:
            if n > _MAX_REPEAT:
                raise ValueError(f"repeating a sequence {n} times is not allowed")
            _refuse_size(_size(seq) * n, "the repetition")  # the product, not each factor, is what is built
    return a * b


def _pow(a: Any, b: Any) -> Any:
    if isinstance(b, (int, float)) and abs(b) > _MAX_POWER:
        raise ValueError(f"exponent {b} is larger than {_MAX_POWER}")
    # A whole number's power has about bit_length * exponent bits: refuse it before computing it
    if _is_int(a) and _is_int(b) and b > 0 and a.bit_length() * b > _MAX_INT_BITS:
        raise ValueError(f"the power would have more than {_MAX_INT_BITS} bits")
    return a**b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str):
        raise TypeError("% formatting is not allowed; use a template step")
    return a % b


def _in(a: Any, b: Any) -> bool:
    return a in b


def _not_in(a: Any, b: Any) -> bool:
    return a not in b


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: _add, ast.Sub: operator.sub, ast.Mult: _mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: _mod, ast.Pow: _pow,
}  # fmt: skip
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: _in, ast.NotIn: _not_in,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
}  # fmt: skip
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_CONSTANTS = (str, int, float, bool, type(None))
# The whole grammar: every other node type (Lambda, comprehensions, f-strings, walrus...) is refused
_NODES = frozenset({
    ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
    ast.IfExp, ast.Tuple, ast.List, ast.Set, ast.Call,
})  # fmt: skip


# --- the function library ---


def parse_date(value: Any, formats: list[str] | tuple[str, ...] = ()) -> str:
    """An ISO date (`2024-03-01`) from a date, a datetime, epoch seconds (UTC), `formats` (strptime) or ISO text.

    The whole text must parse: `2024-03-01garbage` is refused. An ISO datetime gives its date as written,
    in its own zone (`2024-03-01T23:30:00-05:00` is 1 March).
    """
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if _is_epoch(value):
        return datetime.fromtimestamp(value, UTC).date().isoformat()
    text = _text(value, "date")
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return _iso_datetime(text).date().isoformat()


def parse_datetime(value: Any, formats: list[str] | tuple[str, ...] = ()) -> str:
    """An ISO datetime with a zone from a datetime, epoch seconds, `formats` (strptime) or ISO text (`Z` allowed).

    A value without a zone (`2024-03-01T10:00:00`, `2024-03-01`, a format without `%z`) is taken as UTC,
    as epoch seconds are, so every datetime the language makes compares with every other; a value with
    an offset keeps it.
    """
    if isinstance(value, datetime):
        return _aware(value).isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).isoformat()
    if _is_epoch(value):
        return datetime.fromtimestamp(value, UTC).isoformat()
    text = _text(value, "datetime")
    for fmt in formats:
        try:
            return _aware(datetime.strptime(text, fmt)).isoformat()
        except ValueError:
            continue
    return _aware(_iso_datetime(text)).isoformat()


def _is_epoch(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any, kind: str) -> str:
    # str(True) or str({...}) would only fail later with a muddled message; say what is wrong
    if not isinstance(value, str):
        raise ValueError(f"{type(value).__name__} {value!r} is not a {kind}")
    return value.strip()


def _iso_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _as_date(value: Any) -> date:
    return date.fromisoformat(parse_date(value))


def _nullsafe(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Null in, null out (as SQL's functions do), so `lower(nickname)` needs no guard."""

    def call(value: Any, *args: Any) -> Any:
        return None if value is None else fn(value, *args)

    return call


def _date(value: Any, fmt: str | None = None) -> str:
    return parse_date(value, (fmt,) if fmt else ())


def _datetime(value: Any, fmt: str | None = None) -> str:
    return parse_datetime(value, (fmt,) if fmt else ())


def _matches(pattern: str | re.Pattern[str], value: Any) -> bool:
    if value is None:
        return False
    return re.search(pattern, value if isinstance(value, str) else str(value)) is not None


def _round(value: Any, ndigits: Any = None) -> Any:
    # round(1, -10**8) builds 10**(10**8) first: no sensible rounding needs more than a few digits
    if ndigits is not None and (not _is_int(ndigits) or abs(ndigits) > _MAX_ROUND_DIGITS):
        raise ValueError(f"round() takes a whole number of digits from -{_MAX_ROUND_DIGITS} to {_MAX_ROUND_DIGITS}")
    return round(value) if ndigits is None else round(value, ndigits)


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _days_between(start: Any, end: Any) -> int:
    return (_as_date(end) - _as_date(start)).days


# name -> (function, least and most positional arguments; None: any number)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "len": (len, 1, 1),
    "lower": (_nullsafe(str.lower), 1, 1),
    "upper": (_nullsafe(str.upper), 1, 1),
    "strip": (_nullsafe(str.strip), 1, 1),
    "round": (_nullsafe(_round), 1, 2),
    "abs": (_nullsafe(abs), 1, 1),
    "min": (min, 1, None),
    "max": (max, 1, None),
    "int": (_nullsafe(int), 1, 1),
    "float": (_nullsafe(float), 1, 1),
    "str": (_nullsafe(str), 1, 1),
    "coalesce": (_coalesce, 1, None),
    "is_null": (lambda v: v is None, 1, 1),
    "is_blank": (_is_blank, 1, 1),
    "matches": (_matches, 2, 2),
    "today": (lambda: date.today().isoformat(), 0, 0),
    "now": (lambda: datetime.now(UTC).isoformat(), 0, 0),
    "date": (_nullsafe(_date), 1, 2),
    "datetime": (_nullsafe(_datetime), 1, 2),
    "year": (_nullsafe(lambda v: _as_date(v).year), 1, 1),
    "month": (_nullsafe(lambda v: _as_date(v).month), 1, 1),
    "day": (_nullsafe(lambda v: _as_date(v).day), 1, 1),
    "days_between": (_days_between, 2, 2),
}


# --- the compiler: one method per allowed node type; any other type is refused ---


class _Compiler:
    def __init__(self, where: str) -> None:
        self.where = where

    def refuse(self, node: ast.AST, why: str) -> ConfigError:
        return ConfigError(self.where, f"{why}: {ast.unparse(node)[:80]}")

    def compile(self, node: ast.expr) -> Compiled:
        if type(node) not in _NODES:
            raise self.refuse(node, f"{type(node).__name__} is not allowed")
        compiled: Compiled = getattr(self, f"_{type(node).__name__}")(node)
        return compiled

    def _Constant(self, node: ast.Constant) -> Compiled:
        value = node.value
        if not isinstance(value, _CONSTANTS):
            raise self.refuse(node, f"{type(value).__name__} literals are not allowed")
        return lambda r: value

    def _Name(self, node: ast.Name) -> Compiled:
        name = node.id
        if name.startswith("__"):
            raise self.refuse(node, "dunder names are not allowed")
        if name == "record":
            return lambda r: r
        return lambda r: r.get(name)

    def _Attribute(self, node: ast.Attribute) -> Compiled:
        # Attribute syntax is a path into the record's objects, never a Python attribute
        if not isinstance(node.value, (ast.Name, ast.Attribute, ast.Subscript)):
            raise self.refuse(node, "attribute access is only allowed on record fields")
        if node.attr.startswith("__"):
            raise self.refuse(node, "dunder names are not allowed")
        base, name = self.compile(node.value), node.attr
        return lambda r: _member(base(r), name)

    def _Subscript(self, node: ast.Subscript) -> Compiled:
        if isinstance(node.slice, ast.Slice):
            raise self.refuse(node, "slices are not allowed")
        base, key = self.compile(node.value), self.compile(node.slice)
        return lambda r: _item(base(r), key(r))

    def _BinOp(self, node: ast.BinOp) -> Compiled:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise self.refuse(node, f"operator {type(node.op).__name__} is not allowed")
        left, right = self.compile(node.left), self.compile(node.right)
        return lambda r: op(left(r), right(r))

    def _UnaryOp(self, node: ast.UnaryOp) -> Compiled:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise self.refuse(node, f"operator {type(node.op).__name__} is not allowed")
        operand = self.compile(node.operand)
        return lambda r: op(operand(r))

    def _BoolOp(self, node: ast.BoolOp) -> Compiled:
        parts = [self.compile(value) for value in node.values]
        stop_when = isinstance(node.op, ast.Or)  # `or` stops at the first truthy value, `and` at a falsy one

        def boolean(r: Record) -> Any:
            value = None
            for part in parts:
                value = part(r)
                if bool(value) is stop_when:
                    return value
            return value

        return boolean

    def _Compare(self, node: ast.Compare) -> Compiled:
        left = self.compile(node.left)
        pairs = [
            (_COMPARE[type(op)], self._operand(op, right)) for op, right in zip(node.ops, node.comparators, strict=True)
        ]
        if len(pairs) == 1:
            ((op, right),) = pairs
            return lambda r: op(left(r), right(r))

        def chain(r: Record) -> bool:
            a = left(r)
            for op, right in pairs:
                b = right(r)
                if not op(a, b):
                    return False
                a = b
            return True

        return chain

    def _operand(self, op: ast.cmpop, node: ast.expr) -> Compiled:
        # `status in ('a', 'b')` against literals: build the set once, not per record
        if isinstance(op, (ast.In, ast.NotIn)) and isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            constants = [e for e in node.elts if isinstance(e, ast.Constant)]
            if len(constants) == len(node.elts):
                self.compile(node)  # still refuses bytes and other odd literals
                members = frozenset(e.value for e in constants)
                return lambda r: members
        return self.compile(node)

    def _IfExp(self, node: ast.IfExp) -> Compiled:
        test, body, orelse = self.compile(node.test), self.compile(node.body), self.compile(node.orelse)
        return lambda r: body(r) if test(r) else orelse(r)

    def _Tuple(self, node: ast.Tuple | ast.List | ast.Set) -> Compiled:
        items = [self.compile(e) for e in node.elts]

        def listing(r: Record) -> list[Any]:
            values = [item(r) for item in items]
            _refuse_size(_size(values), "the list")  # `[s, s, s]` of a long text is cheap; writing it out is not
            return values

        return listing

    _List = _Set = _Tuple

    def _Call(self, node: ast.Call) -> Compiled:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, "only the functions of the expression language may be called")
        if node.func.id not in FUNCTIONS:
            raise self.refuse(node, f"unknown function {node.func.id!r} (known: {', '.join(FUNCTIONS)})")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.refuse(node, "functions take positional arguments only")
        name = node.func.id
        fn, least, most = FUNCTIONS[name]
        if len(node.args) < least or (most is not None and len(node.args) > most):
            count = least if most == least else f"{least} to {most}" if most else f"at least {least}"
            raise self.refuse(node, f"{name}() takes {count} arguments")
        if name == "matches":
            return self._matches(node)
        args = [self.compile(a) for a in node.args]
        if len(args) == 1:
            (arg,) = args
            return lambda r: fn(arg(r))
        return lambda r: fn(*[arg(r) for arg in args])

    def _matches(self, node: ast.Call) -> Compiled:
        pattern_node, value = node.args[0], self.compile(node.args[1])
        if not (isinstance(pattern_node, ast.Constant) and isinstance(pattern_node.value, str)):
            pattern = self.compile(pattern_node)
            return lambda r: _matches(pattern(r), value(r))
        try:
            compiled = re.compile(pattern_node.value)
        except re.error as ex:
            raise self.refuse(node, f"invalid regular expression ({ex})") from ex
        return lambda r: _matches(compiled, value(r))
