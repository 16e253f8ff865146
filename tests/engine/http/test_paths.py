"""Dotted paths: a record's plain field (read directly) and a dotted path agree with what the path means."""

from __future__ import annotations

from collections import UserDict
from typing import Any

import pytest

from prefect_restful_etl.tasks.engine.http.paths import get_path

RECORD = {"id": 7, "none": None, "meta": {"updated_at": "2026-03-01T10:00:00Z"}, "rows": [{"id": 1}, {"id": 2}],
          "a.b": "a key with a dot", "$": "a key named $"}  # fmt: skip


@pytest.mark.parametrize(
    "obj,path,expected",
    [
        pytest.param(RECORD, "id", 7, id="plain"),
        pytest.param(RECORD, "missing", "default", id="plain-missing"),
        pytest.param(RECORD, "none", None, id="plain-null-is-not-missing"),
        pytest.param(RECORD, "meta.updated_at", "2026-03-01T10:00:00Z", id="dotted"),
        pytest.param(RECORD, "meta.missing", "default", id="dotted-missing"),
        pytest.param(RECORD, "rows.1.id", 2, id="list-index"),
        pytest.param(RECORD, "rows.-1.id", 2, id="negative-index"),
        pytest.param(RECORD, "a.b", "default", id="a-dot-always-descends"),
        pytest.param(RECORD, "$", RECORD, id="dollar-is-the-object"),
        pytest.param(RECORD, "", RECORD, id="empty-is-the-object"),
        pytest.param(RECORD, None, RECORD, id="none-is-the-object"),
        pytest.param([{"id": 1}], "0", {"id": 1}, id="plain-index-of-a-list"),
        pytest.param("text", "id", "default", id="not-an-object"),
        pytest.param(UserDict({"id": 3}), "id", "default", id="a-mapping-that-is-not-a-dict"),
    ],
)
def test_get_path(obj: Any, path: str | None, expected: Any) -> None:
    assert get_path(obj, path, "default") == expected
