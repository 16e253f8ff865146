"""The safe expression language: what it evaluates, what it refuses at configuration, what a record breaks."""

from __future__ import annotations

import ast
from datetime import date
from typing import Any

import pytest

from prefect_restful_etl.tasks.engine.exceptions import ConfigError, RecordError
from prefect_restful_etl.tasks.engine.transform.expressions import compile_expression, parse_date, parse_datetime

RECORD: dict[str, Any] = {
    "first": "Ada",
    "last": "Lovelace",
    "age": 36,
    "price": 10.0,
    "quantity": 3,
    "nickname": None,
    "status": "active",
    "email": "  Ada@Example.ORG ",
    "address": {"city": "London", "geo": {"lat": 51.5}},
    "odd name": "yes",
    "tags": ["math", "poetry"],
    "signed_up": "2024-03-01",
}


@pytest.mark.parametrize(
    "source,expected",
    [
        ("42", 42),
        ("'text'", "text"),
        ("None", None),
        ("first", "Ada"),
        ("missing_field", None),
        ("address.city", "London"),
        ("address.geo.lat", 51.5),
        ("address.nowhere.deeper", None),
        ('record["odd name"]', "yes"),
        ('address["city"]', "London"),
        ("tags[0]", "math"),
        ("tags[-1]", "poetry"),
        ("tags[5]", None),
        ("price * quantity", 30.0),
        ("age // 10 + age % 10", 9),
        ("-age", -36),
        ("2 ** 10", 1024),
        ("age / 4", 9.0),
        ("first + ' ' + last", "Ada Lovelace"),
        ("18 <= age < 65", True),
        ("0 < age < 18", False),
        ("age == 36 != 37", True),
        ("status in ('active', 'trial')", True),
        ("status not in ['active']", False),
        ("status in {'closed'}", False),
        ("'math' in tags", True),
        ("nickname is None", True),
        ("age > 30 and status == 'active'", True),
        ("nickname or first", "Ada"),
        ("nickname and nickname.x", None),
        ("not nickname", True),
        ("'adult' if age >= 18 else 'minor'", "adult"),
        ("len(tags)", 2),
        ("lower(strip(email))", "ada@example.org"),
        ("upper(first)", "ADA"),
        ("upper(nickname)", None),
        ("round(price / 3, 2)", 3.33),
        ("abs(-age)", 36),
        ("min(age, 40, quantity)", 3),
        ("max(tags)", "poetry"),
        ("int('12')", 12),
        ("float('1.5')", 1.5),
        ("str(age)", "36"),
        ("coalesce(nickname, first)", "Ada"),
        ("is_null(nickname)", True),
        ("is_blank('  ')", True),
        ("matches('^[A-Z]', first)", True),
        ("matches('^[0-9]+$', age)", True),
        ("matches('x', nickname)", False),
        ("matches('^' + first, 'Ada L')", True),
        ("date('01/03/2024', '%d/%m/%Y')", "2024-03-01"),
        ("datetime('2024-03-01T10:00:00Z')", "2024-03-01T10:00:00+00:00"),
        ("year(signed_up) * 100 + month(signed_up)", 202403),
        ("day(signed_up)", 1),
        ("days_between(signed_up, '2024-03-31')", 30),
        ("record.first", "Ada"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_evaluates(source: str, expected: Any) -> None:
    assert compile_expression(source)(dict(RECORD)) == expected


def test_today_is_an_iso_date() -> None:
    assert compile_expression("today()")({}) == date.today().isoformat()


@pytest.mark.parametrize(
    "source,reason",
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('true')", "only the functions"),
        ("().__class__", "attribute access is only allowed on record fields"),
        ("().__class__.__bases__[0].__subclasses__()", "only the functions"),
        ("first.__class__", "dunder"),
        ("__builtins__", "dunder"),
        ("record.__dict__", "dunder"),
        ("'abc'.upper", "attribute access is only allowed on record fields"),
        ("'abc'.upper()", "only the functions"),
        ("lower(first).x", "attribute access is only allowed on record fields"),
        ("lambda: 1", "Lambda is not allowed"),
        ("(lambda x: x)(1)", "only the functions"),
        ("[x for x in tags]", "ListComp is not allowed"),
        ("{x for x in tags}", "SetComp is not allowed"),
        ("{x: 1 for x in tags}", "DictComp is not allowed"),
        ("sum(x for x in tags)", "unknown function 'sum'"),
        ("len(x for x in tags)", "GeneratorExp is not allowed"),
        ("import os", "not valid syntax"),
        ("first; last", "not valid syntax"),
        ("x = 1", "not valid syntax"),
        ("(x := 1)", "NamedExpr is not allowed"),
        ("eval('1')", "unknown function 'eval'"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("getattr(first, 'upper')", "unknown function 'getattr'"),
        ("f'{first}'", "JoinedStr is not allowed"),
        ("b'bytes'", "bytes literals are not allowed"),
        ("...", "ellipsis literals are not allowed"),
        ("{'a': 1}", "Dict is not allowed"),
        ("tags[0:1]", "slices are not allowed"),
        ("~age", "operator Invert is not allowed"),
        ("age << 2", "operator LShift is not allowed"),
        ("len(*tags)", "positional arguments only"),
        ("round(price, ndigits=2)", "positional arguments only"),
        ("round(1, 2, 3)", "round() takes 1 to 2 arguments"),
        ("today(1)", "today() takes 0 arguments"),
        ("min()", "min() takes at least 1 arguments"),
        ("matches('(', first)", "invalid regular expression"),
        ("await first", "Await is not allowed"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("-" * 1500 + "1", "nested too deeply"),
        ("1 + " * 700 + "1", "longer than"),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else None,
)
def test_refused_at_configuration(source: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_expression(source)
    assert reason in str(caught.value)
    assert str(caught.value).startswith("expression ")


@pytest.mark.parametrize(
    "source,record",
    [
        ("nickname + 1", {"nickname": None}),
        ("age / 0", {"age": 1}),
        ("age > 1", {"age": None}),
        ("len(nickname)", {"nickname": None}),
        ("int(first)", {"first": "Ada"}),
        ("first.name", {"first": "Ada"}),
        ("tags.first", {"tags": ["a"]}),
        ("first['x']", {"first": "Ada"}),
        ("age[0]", {"age": 5}),
        ("first * 100000", {"first": "Ada"}),
        ("2 ** big", {"big": 10_000}),
        ("'%s' % first", {"first": "Ada"}),
        ("x in 5", {"x": 1}),
        ("max(tags)", {"tags": []}),
        ("date(signed_up)", {"signed_up": "not a date"}),
        ("days_between(a, b)", {"a": "2024-01-01", "b": None}),
        ("10.0 ** 400", {}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_bad_record_is_a_record_error(source: str, record: dict[str, Any]) -> None:
    fn = compile_expression(source)
    with pytest.raises(RecordError) as caught:
        fn(record)
    assert repr(source) in str(caught.value)


LONG = "x" * 600_000


@pytest.mark.parametrize(
    "source,record,reason",
    [
        ("(9 ** 100) ** 100", {}, "more than 10000 bits"),
        ("(((9 ** 100) ** 100) ** 100) ** 10", {}, "more than 10000 bits"),
        ("((((9 ** 100) ** 100) ** 100) ** 100) ** 100", {}, "more than 10000 bits"),
        ("n * n", {"n": 2**6000}, "more than 10000 bits"),
        ("'a' * 10000 * 10000", {}, "more than 1000000"),
        ("10000 * (100 * 'ab')", {}, "more than 1000000"),
        ("[tags] * 10000", {"tags": ["x" * 200]}, "more than 1000000"),
        ("s + s", {"s": LONG}, "more than 1000000"),
        ("tags + tags", {"tags": [LONG]}, "more than 1000000"),
        ("str([s, s])", {"s": LONG}, "more than 1000000"),
        ("round(1, -10 ** 8)", {}, "digits from -20 to 20"),
        ("round(1, -21)", {}, "digits from -20 to 20"),
        ("round(price, 21)", {"price": 1.5}, "digits from -20 to 20"),
        ("round(price, 1.5)", {"price": 1.5}, "whole number of digits"),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else None,
)
def test_a_result_too_large_is_refused_for_that_record(source: str, record: dict[str, Any], reason: str) -> None:
    fn = compile_expression(source)
    with pytest.raises(RecordError, match=reason):
        fn(record)


@pytest.mark.parametrize(
    "source,record,expected",
    [
        ("(2 ** 100) ** 99", {}, 2**9900),
        ("len('ab' * 10000 * 50)", {}, 1_000_000),
        ("len(s + 'y')", {"s": "x" * 999_999}, 1_000_000),
        ("round(1234.5678, -2)", {}, 1200.0),
        ("round(1.23456, 20)", {}, 1.23456),
        ("'ab' * -3", {}, ""),
    ],
    ids=lambda v: v[:40] if isinstance(v, str) else None,
)
def test_results_within_the_bounds_are_computed(source: str, record: dict[str, Any], expected: Any) -> None:
    assert compile_expression(source)(record) == expected


def test_compiled_once_not_parsed_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    fn = compile_expression("price * quantity if status == 'active' else 0")

    def no_parsing(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed again")

    monkeypatch.setattr(ast, "parse", no_parsing)
    totals = [fn({"price": 2, "quantity": n, "status": "active"}) for n in range(1000)]
    assert totals[-1] == 1998


def test_does_not_change_the_record() -> None:
    record = {"a": {"b": 1}}
    compile_expression("a.b + 1")(record)
    assert record == {"a": {"b": 1}}


@pytest.mark.parametrize(
    "value,formats,expected",
    [
        ("2024-03-01", (), "2024-03-01"),
        ("2024-03-01T23:59:00Z", (), "2024-03-01"),
        ("01.03.2024", ("%d/%m/%Y", "%d.%m.%Y"), "2024-03-01"),
        (date(2024, 3, 1), (), "2024-03-01"),
        (0, (), "1970-01-01"),
        ("2024-03-01T23:30:00-05:00", (), "2024-03-01"),
    ],
    ids=["iso", "iso-datetime", "second-format", "date-object", "epoch", "date-as-written-in-its-zone"],
)
def test_parse_date(value: Any, formats: tuple[str, ...], expected: str) -> None:
    assert parse_date(value, formats) == expected


@pytest.mark.parametrize(
    "value,formats,expected",
    [
        ("2024-03-01T10:00:00Z", (), "2024-03-01T10:00:00+00:00"),
        ("01/03/2024 10:00", ("%d/%m/%Y %H:%M",), "2024-03-01T10:00:00+00:00"),
        ("01/03/2024 10:00 +0200", ("%d/%m/%Y %H:%M %z",), "2024-03-01T10:00:00+02:00"),
        (86400, (), "1970-01-02T00:00:00+00:00"),
        ("2024-03-01", (), "2024-03-01T00:00:00+00:00"),
        ("2024-03-01T10:00:00", (), "2024-03-01T10:00:00+00:00"),
        ("2024-03-01T10:00:00-05:00", (), "2024-03-01T10:00:00-05:00"),
        (date(2024, 3, 1), (), "2024-03-01T00:00:00+00:00"),
    ],
    ids=[
        "iso-zulu",
        "strptime-naive-is-utc",
        "strptime-with-zone",
        "epoch",
        "date-only-is-utc-midnight",
        "naive-is-utc",
        "offset-kept",
        "date-object",
    ],
)
def test_parse_datetime(value: Any, formats: tuple[str, ...], expected: str) -> None:
    assert parse_datetime(value, formats) == expected


@pytest.mark.parametrize(
    "parse,value",
    [
        (parse_date, "2024-03-01garbage"),
        (parse_date, "2024-03-01 and more"),
        (parse_date, "2024-03-01T25:00"),
        (parse_date, True),
        (parse_date, float("nan")),
        (parse_date, ["2024-03-01"]),
        (parse_datetime, "2024-03-01garbage"),
        (parse_datetime, "2024-03-01T10:00:00Zjunk"),
        (parse_datetime, False),
        (parse_datetime, float("inf")),
        (parse_datetime, {"at": "2024-03-01"}),
    ],
    ids=lambda v: v.__name__ if callable(v) else repr(v),
)
def test_parse_refuses_what_is_not_wholly_a_date(parse: Any, value: Any) -> None:
    with pytest.raises((ValueError, OverflowError)):
        parse(value)
