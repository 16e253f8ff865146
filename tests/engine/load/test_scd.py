from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from prefect_restful_etl.tasks.engine.load.scd import (
    History,
    KeyState,
    Missing,
    Planner,
    SoftDelete,
    Version,
    format_moment,
    later,
    natural_key,
)

T0, T1, T2 = "2026-01-01T00:00:00.000000Z", "2026-02-01T00:00:00.000000Z", "2026-03-01T00:00:00.000000Z"
HISTORY = History()
RECORD = {"external_id": "7", "email": "new@x.io"}


@pytest.mark.parametrize(
    "record,fields,expected",
    [
        ({"id": 42}, ["id"], "42"),
        ({"id": 42, "currency": "EUR"}, ["id", "currency"], "42|EUR"),
        ({"meta": {"id": "a"}}, ["meta.id"], "a"),
        ({"id": None}, ["id"], ""),
    ],
    ids=["single", "composite", "nested", "null"],
)
def test_natural_key(record: dict, fields: list[str], expected: str) -> None:
    assert natural_key(record, fields) == expected


def _state(*versions: Version, top: int | None = None, closed: tuple[str, ...] = ()) -> KeyState:
    """Live `versions`, then closed versions (numbered below them) that end at each of `closed`."""
    state = KeyState()
    for v in versions:
        state.add(v, live=True)
    for valid_to in closed:
        state.add(Version("AC-0", "gone", 0, T0), live=False, valid_to=valid_to)
    if top is not None:
        state.top = top
    return state


def _ops(change: object) -> list[tuple[str, object, dict | None]]:
    return [(w.op, w.target, w.body) for w in change.writes]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "scd_type,state,outcome,ops",
    [
        (0, None, "inserted", [("create", None, RECORD)]),
        (0, _state(Version("AC-1", "old")), "unchanged", []),
        (1, None, "inserted", [("create", None, RECORD)]),
        (1, KeyState(), "inserted", [("create", None, RECORD)]),
        (1, _state(Version("AC-1", "old")), "updated", [("update", "AC-1", RECORD)]),
        (1, _state(Version("AC-1", "new")), "unchanged", []),
        (1, _state(Version("AC-1", "new", deleted=True)), "updated", [("update", "AC-1", RECORD)]),
    ],
    ids=[
        "t0-new",
        "t0-changed-is-left",
        "t1-new",
        "t1-looked-up-absent",
        "t1-changed",
        "t1-same",
        "t1-soft-deleted-comes-back",
    ],
)
def test_types_0_and_1(scd_type: int, state: KeyState | None, outcome: str, ops: list) -> None:
    change = Planner(scd_type, T2).plan("7", RECORD, "new", state)  # type: ignore[arg-type]
    assert (change.outcome, _ops(change)) == (outcome, ops)


def test_type1_restores_a_soft_deleted_key() -> None:
    planner = Planner(1, T2, soft_delete=SoftDelete(field="status", value="deleted", restore="active"))
    change = planner.plan("7", RECORD, "new", _state(Version("AC-1", "new", deleted=True)))
    assert _ops(change) == [("update", "AC-1", {**RECORD, "status": "active"})]
    staged_status = {**RECORD, "status": "vip"}
    assert _ops(planner.plan("7", staged_status, "new", None)) == [("create", None, staged_status)]


def _opened(at: str, n: int) -> dict:
    return {**RECORD, "valid_from": at, "valid_to": None, "is_current": True, "version": n}


CLOSE = lambda at: {"valid_to": at, "is_current": False}  # noqa: E731


@pytest.mark.parametrize(
    "state,outcome,ops,after",
    [
        (None, "inserted", [("create", None, _opened(T2, 1))], (1, T2)),
        (
            _state(Version("AC-1", "old", 1, T0)),
            "updated",
            [("create", None, _opened(T2, 2)), ("expire", "AC-1", CLOSE(T2))],
            (2, T2),
        ),
        (_state(Version("AC-1", "new", 1, T0)), "unchanged", [], (1, T0)),
        (_state(top=3), "inserted", [("create", None, _opened(T2, 4))], (4, T2)),
        # a run cut between its two writes left versions 1 and 2 current: 1 ends where 2 begins
        (
            _state(Version("AC-1", "old", 1, T0), Version("AC-2", "new", 2, T1)),
            "unchanged",
            [("expire", "AC-1", CLOSE(T1))],
            (2, T1),
        ),
        (
            _state(Version("AC-1", "old", 1, T0), Version("AC-2", "mid", 2, T1)),
            "updated",
            [("create", None, _opened(T2, 3)), ("expire", "AC-1", CLOSE(T1)), ("expire", "AC-2", CLOSE(T2))],
            (3, T2),
        ),
        # the current version begins after the batch's time (clock skew): the new one begins with it, not before
        (
            _state(Version("AC-1", "old", 1, "2027-01-01T00:00:00.000000Z")),
            "updated",
            [
                ("create", None, _opened("2027-01-01T00:00:00.000000Z", 2)),
                ("expire", "AC-1", CLOSE("2027-01-01T00:00:00.000000Z")),
            ],
            (2, "2027-01-01T00:00:00.000000Z"),
        ),
        # a later batch expired the key; this batch (a late retry) re-inserts it: the new version begins where the
        # closed one ended, not before it
        (
            _state(top=1, closed=(T1, "2026-04-01T00:00:00.000000Z")),
            "inserted",
            [("create", None, _opened("2026-04-01T00:00:00.000000Z", 2))],
            (2, "2026-04-01T00:00:00.000000Z"),
        ),
        (_state(top=1, closed=(T1,)), "inserted", [("create", None, _opened(T2, 2))], (2, T2)),
    ],
    ids=[
        "new-key",
        "changed",
        "same",
        "no-current-version",
        "mend-two-current",
        "mend-and-change",
        "clock-skew",
        "reinserted-after-a-later-expiry",
        "reinserted-after-an-earlier-expiry",
    ],
)
def test_type2(state: KeyState | None, outcome: str, ops: list, after: tuple[int, str]) -> None:
    change = Planner(2, T2, HISTORY).plan("7", RECORD, "new", state)
    assert (change.outcome, _ops(change)) == (outcome, ops)
    assert change.after is not None and (change.after.number, change.after.valid_from) == after
    assert change.expires == sum(op == "expire" for op, _, _ in ops)


@pytest.mark.parametrize(
    "missing,state,outcome,ops",
    [
        ("ignore", _state(Version("AC-1", "h")), "unchanged", []),
        ("delete", _state(Version("AC-1", "h")), "deleted", [("delete", "AC-1", None)]),
        (
            {"action": "soft_delete", "soft_delete": {"field": "status", "value": "deleted"}},
            _state(Version("AC-1", "h")),
            "deleted",
            [("soft_delete", "AC-1", {"status": "deleted"})],
        ),
        (
            {"action": "soft_delete", "soft_delete": {"field": "status", "value": "deleted"}},
            _state(Version("AC-1", "h", deleted=True)),
            "unchanged",
            [],
        ),
        ("delete", KeyState(), "unchanged", []),
    ],
    ids=["ignore", "delete", "soft-delete", "already-soft-deleted", "nothing-live"],
)
def test_missing_types_0_and_1(missing: object, state: KeyState, outcome: str, ops: list) -> None:
    change = Planner(1, T2).plan_missing("7", state, Missing.model_validate(missing))
    assert (change.outcome, _ops(change)) == (outcome, ops)
    assert change.after is None or not ops, "a removed key has no live row afterwards"


LATE = "2027-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    "state,ops",
    [
        (_state(Version("AC-1", "a", 1, T0)), [("expire", "AC-1", CLOSE(T2))]),
        # two current versions (a run cut between its writes): the older ends where the newer begins, as when mended
        (
            _state(Version("AC-1", "a", 1, T0), Version("AC-2", "b", 2, T1)),
            [("expire", "AC-1", CLOSE(T1)), ("expire", "AC-2", CLOSE(T2))],
        ),
        (
            _state(Version("AC-2", "b", 2, T1), Version("AC-1", "a", 1, T0)),
            [("expire", "AC-2", CLOSE(T2)), ("expire", "AC-1", CLOSE(T1))],
        ),
        # the newest begins after the batch's time (clock skew): it ends where it begins, never before
        (
            _state(Version("AC-1", "a", 1, T0), Version("AC-2", "b", 2, LATE)),
            [("expire", "AC-1", CLOSE(LATE)), ("expire", "AC-2", CLOSE(LATE))],
        ),
    ],
    ids=["one-current", "two-current", "two-current-newest-first", "clock-skew"],
)
def test_missing_type2_expires_every_live_version_without_overlap(state: KeyState, ops: list) -> None:
    change = Planner(2, T2, HISTORY).plan_missing("7", state, Missing(action="expire"))
    assert (change.outcome, change.expires, change.after) == ("expired", len(ops), None)
    assert _ops(change) == ops


@pytest.mark.parametrize(
    "raw",
    [{"action": "soft_delete"}, {"action": "delete", "soft_delete": {"field": "x"}}],
    ids=["soft-delete-without-field", "field-without-soft-delete"],
)
def test_missing_config_errors(raw: dict) -> None:
    with pytest.raises(ValidationError, match="soft_delete"):
        Missing.model_validate(raw)


def test_times_are_one_sortable_form() -> None:
    moment = datetime(2026, 3, 1, 1, 30, tzinfo=timezone(timedelta(hours=1)))
    assert format_moment(moment) == "2026-03-01T00:30:00.000000Z"
    assert format_moment(datetime(2026, 3, 1, tzinfo=UTC)) == T2
    assert later(T1, T2) == T2 and later(T2, T1) == T2 and later(T1, None) == T1


@pytest.mark.parametrize(
    "live,closed,extras",
    [
        ([Version("a", "h")], [], []),
        ([Version("b", "h"), Version("a", "h2")], [], ["b"]),  # type 1: every row but the lowest id's
        ([Version("a", "h"), Version("b", "h"), Version("c", "h")], [], ["b", "c"]),
        ([Version("a", "h", 2, T1), Version("b", "h", 2, T1)], [(1, T0)], ["b"]),  # one version twice
        ([Version("a", "h", 2, T1), Version("b", "h", 1, T0)], [], []),  # an interrupted write's leftover: stale
        ([Version("a", "h", 2, T1), Version("b", "h", 1, T0)], [(1, T0)], ["b"]),  # repeats a closed version
    ],
    ids=["one-row", "type1-twice", "type1-thrice", "type2-twice", "type2-stale", "type2-repeats-closed"],
)
def test_extras_are_rows_that_repeat_another_version(
    live: list[Version], closed: list[tuple[int, str]], extras: list[str]
) -> None:
    state = KeyState(live, max(v.number for v in live), None, closed)
    assert [v.id for v in state.extras()] == extras
    kept = state.without(state.extras())
    assert kept.newest() == state.newest() and len(kept.live) == len(live) - len(extras)


def test_the_newest_of_rows_alike_is_the_lowest_id_whatever_the_order() -> None:
    rows = [Version("AC-9", "h"), Version("AC-3", "h2"), Version("AC-5", "h3")]
    assert {KeyState(order).newest().id for order in (rows, rows[::-1])} == {"AC-3"}  # type: ignore[union-attr]
