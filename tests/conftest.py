"""Shared fixtures: real servers on 127.0.0.1 live in tests/fixtures/, one module per server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

# Before Prefect is imported: a private home, no telemetry, no calls off this machine.
_HOME = Path(tempfile.mkdtemp(prefix="restful-etl-tests-"))
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402

from prefect_restful_etl.tasks.engine.stage.base import Stage  # noqa: E402
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage  # noqa: E402
from prefect_restful_etl.tasks.engine.stage.mongo import MongoStage  # noqa: E402
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage  # noqa: E402

pytest_plugins = [
    "fixtures.demo_apis",
    "fixtures.redis_server",
    "fixtures.postgres_server",
    "fixtures.prefect_server",
    "fixtures.pocketbase_server",
    "fixtures.mockoon_server",
    "fixtures.mongo_server",
]

# Every stage backend; the Mongo stage on SecantusDB, and on the user's own server too where MONGO_URL names one.
# SecantusDB is slow to write (a Python server): its runs are integration tests, out of the fast loop.
_MONGO = [] if not os.environ.get("MONGO_URL") else [pytest.param("mongo-url", marks=pytest.mark.integration)]
STAGES = ["memory", "redis", pytest.param("mongo", marks=pytest.mark.integration), *_MONGO]


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[Path]:
    """One temporary Prefect server and database for the whole session (Prefect's own harness).

    Yields the path of the harness's SQLite database file.
    """
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL
    from prefect.testing.utilities import prefect_test_harness

    # A deadline, not a speed check: on a loaded machine the temporary server takes minutes to answer.
    with prefect_test_harness(server_startup_timeout=180):
        url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
        yield Path(url.split(":///", 1)[1])


@pytest.fixture(scope="session")
def prefect_home() -> Path:
    return _HOME / "prefect"


@pytest.fixture
def etl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh audit database (SQLite) and memory stage for one test."""
    monkeypatch.setenv("RESTFUL_ETL_HOME", str(tmp_path))
    monkeypatch.delenv("RESTFUL_ETL_AUDIT_URL", raising=False)
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", "memory://")
    return tmp_path


@pytest.fixture(params=STAGES)
async def stage(request: pytest.FixtureRequest) -> AsyncIterator[Stage]:
    """Each stage backend in turn: Redis on an emptied database of the session's redis-server, MongoDB on a
    database of the test's own (the session's SecantusDB, and the `MONGO_URL` server where it is set)."""
    if request.param == "memory":
        yield MemoryStage()
        return
    opened: RedisStage | MongoStage
    if request.param == "redis":
        opened = RedisStage.from_url(request.getfixturevalue("redis_url"))
    else:
        fixture = "mongo_url" if request.param == "mongo" else "external_mongo_url"
        opened = MongoStage.from_url(request.getfixturevalue(fixture))
    async with opened:
        yield opened


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each audit database in turn: a SQLite file of the test's own, and an empty database of the session's
    PostgreSQL server (an integration test: `-m "not integration"` leaves it out)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("postgres_url"))
