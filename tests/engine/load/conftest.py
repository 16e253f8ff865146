"""The demo accounting API as a load test sees it (`load_support.Accounting`), on a clean slate per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from load_support import Accounting

from prefect_restful_etl.deployments.demo.apis import DemoApis


@pytest.fixture
def accounting(demo_state: DemoApis, tmp_path: Path, request: pytest.FixtureRequest) -> Accounting:
    return Accounting(demo_state, tmp_path, tenant=request.node.name[:40].replace("[", "-").strip("]"))
