"""The builder's run names: tenant, kind and scheduled time, whatever datetime type Prefect hands over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prefect.runtime import flow_run

from prefect_restful_etl.flows.builder import run_name

BERLIN_WINTER = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    "parameters,scheduled,expected",
    [
        ({"tenant_id": "acme"}, datetime(2026, 3, 1, 14, 0, tzinfo=UTC), "acme incremental 2026-03-01 14:00"),
        (
            {"tenant_id": "acme", "full_refresh": True},
            datetime(2026, 3, 1, 15, 5, tzinfo=BERLIN_WINTER),
            "acme full re-sync 2026-03-01 14:05",
        ),
        ({"tenant_id": ""}, datetime(2026, 3, 1, 14, 0, tzinfo=UTC), "no tenant incremental 2026-03-01 14:00"),
        (
            {"tenant_id": ["not", "text"], "full_refresh": "yes"},
            datetime(2026, 3, 1, tzinfo=UTC),
            "no tenant incremental 2026-03-01 00:00",
        ),
    ],
    ids=["incremental", "full-re-sync-in-utc", "empty-tenant", "malformed-parameters"],
)
def test_a_run_is_named_by_tenant_kind_and_scheduled_time(
    monkeypatch: pytest.MonkeyPatch, parameters: dict[str, Any], scheduled: datetime, expected: str
) -> None:
    """A plain datetime, as Prefect gives on Python 3.13 and later (a pendulum DateTime before)."""
    monkeypatch.setitem(flow_run.FIELDS, "parameters", lambda: parameters)
    monkeypatch.setitem(flow_run.FIELDS, "scheduled_start_time", lambda: scheduled)
    assert run_name() == expected
