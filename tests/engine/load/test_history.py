from __future__ import annotations

import pytest

from prefect_restful_etl.tasks.engine.exceptions import DestinationDataError
from prefect_restful_etl.tasks.engine.load.history import History

T1, T2 = "2026-02-01T00:00:00.000000Z", "2026-03-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    "history,row,current,number",
    [
        (History(), {"is_current": True, "version": 3}, True, 3),
        (History(), {"is_current": False, "version": 1}, False, 1),
        (History(), {"is_current": 1, "version": "3"}, True, 3),
        (History(), {"is_current": 0, "version": " 2 "}, False, 2),
        (History(), {"is_current": "1", "version": 4.0}, True, 4),
        (History(), {"is_current": "TRUE", "version": 1}, True, 1),
        (History(), {"is_current": "t", "version": 1}, True, 1),
        (History(), {"is_current": "Yes", "version": 1}, True, 1),
        (History(), {"is_current": "false", "version": 1}, False, 1),
        (History(), {"is_current": "N", "version": 1}, False, 1),
        (History(version=None), {"is_current": True, "version": "x"}, True, 0),
        (History(current=None, version=None), {"valid_to": None}, True, 0),
        (History(current=None, version=None, open_end="9999-12-31"), {"valid_to": "9999-12-31"}, True, 0),
        (History(current=None, version=None, open_end="9999-12-31"), {"valid_to": T1}, False, 0),
    ],
    ids=[
        "flag",
        "flag-false",
        "flag-one-version-text",
        "flag-zero",
        "flag-text-one-version-float",
        "flag-TRUE",
        "flag-t",
        "flag-Yes",
        "flag-false-text",
        "flag-N",
        "no-version-field",
        "open-null",
        "open-far-date",
        "closed",
    ],
)
def test_history_reads_current_and_version(history: History, row: dict, current: bool, number: int) -> None:
    assert (history.is_current(row), history.number(row)) == (current, number)


@pytest.mark.parametrize(
    "row,field",
    [
        ({"is_current": "maybe", "version": 1}, "is_current"),
        ({"is_current": 2, "version": 1}, "is_current"),
        ({"is_current": None, "version": 1}, "is_current"),
        ({"version": 1}, "is_current"),
        ({"is_current": True, "version": "three"}, "version"),
        ({"is_current": True, "version": 2.5}, "version"),
        ({"is_current": True, "version": True}, "version"),
        ({"is_current": True, "version": None}, "version"),
    ],
    ids=[
        "flag-word",
        "flag-two",
        "flag-null",
        "flag-absent",
        "version-word",
        "version-fraction",
        "version-bool",
        "version-null",
    ],
)
def test_history_refuses_a_flag_or_version_it_cannot_read(row: dict, field: str) -> None:
    with pytest.raises(DestinationDataError, match=f"^{field}: ") as raised:
        History().is_current(row)
        History().number(row)
    assert raised.value.field == field


def test_history_without_flag_or_version_writes_only_validity() -> None:
    history = History(current=None, version=None, open_end="9999-12-31T00:00:00Z")
    assert history.opened(T1, 5) == {"valid_from": T1, "valid_to": "9999-12-31T00:00:00Z"}
    assert history.closed(T2) == {"valid_to": T2}
