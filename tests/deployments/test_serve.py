"""`restful-etl serve`'s runner settings: how often it polls Prefect for runs to start."""

from __future__ import annotations

from typing import Any

import pytest

from prefect_restful_etl.deployments import serve as serving


@pytest.mark.parametrize("setting,expected", [(None, serving.POLL_SECONDS), ("7", None)])
def test_serve_polls_every_second_unless_prefect_is_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: float | None
) -> None:
    given: dict[str, Any] = {}
    monkeypatch.setattr(serving, "serve", lambda *deployments, **options: given.update(options))
    monkeypatch.setattr(serving, "served_batch_types", dict)
    monkeypatch.setattr(serving, "sweep_once", lambda: None)  # the janitor's start-up sweep needs a Prefect API
    if setting is None:
        monkeypatch.delenv("PREFECT_RUNNER_POLL_FREQUENCY", raising=False)
    else:
        monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", setting)
    serving.serve_all(limit=3)
    assert (given["query_seconds"], given["limit"]) == (expected, 3)
