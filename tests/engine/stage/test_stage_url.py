"""Which stage a URL names, how it is shown (never its password), and a URL no stage takes."""

from __future__ import annotations

import pytest

from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage
from prefect_restful_etl.tasks.engine.stage.mongo import MongoStage
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage
from prefect_restful_etl.tasks.engine.stage.url import open_stage_url, shown_url, stage_kind


@pytest.mark.parametrize(
    "url,kind,shown",
    [
        ("memory://", "memory", "memory://"),
        ("redis://:pw-1@r.internal:6380/2", "redis", "redis://r.internal:6380/2"),
        ("rediss://etl:pw-1@r:6379/0?ssl_cert_reqs=none", "rediss", "rediss://r:6379/0"),
        ("mongodb://etl:pw-1@127.0.0.1:27017/etl?authSource=admin", "mongo", "mongodb://127.0.0.1:27017/etl"),
        ("mongodb://etl:p%40ss@h1:27017,h2:27018/?replicaSet=rs0", "mongo", "mongodb://h1:27017,h2:27018/restful_etl"),
        ("mongodb+srv://etl:pw-1@cluster0.example.net/stage", "mongo", "mongodb+srv://cluster0.example.net/stage"),
        ("postgresql://u:pw-1@h/db", None, "(not a stage URL)"),
    ],
    ids=["memory", "redis", "rediss", "mongodb", "mongodb-no-database", "mongodb-srv", "unknown"],
)
def test_a_url_names_its_stage_and_is_shown_without_user_or_password(url: str, kind: str | None, shown: str) -> None:
    assert stage_kind(url) == ("redis" if kind == "rediss" else kind)
    assert shown_url(url) == shown
    assert "pw-1" not in shown and "p%40ss" not in shown


@pytest.mark.parametrize(
    "url,opened",
    [("memory://", MemoryStage), ("redis://127.0.0.1:1/0", RedisStage), ("mongodb://127.0.0.1:1/x", MongoStage)],
    ids=["memory", "redis", "mongodb"],
)
async def test_open_stage_url_opens_the_stage_the_url_names(url: str, opened: type) -> None:
    stage = open_stage_url(url, prefix="p", ttl=60)  # no connection yet: neither client connects before its first call
    assert isinstance(stage, opened)
    if not isinstance(stage, MemoryStage):
        assert stage.prefix == "p"
        await stage.aclose()


@pytest.mark.parametrize(
    "url,match",
    [
        ("postgresql://u:s3cr3t@h/db", "RESTFUL_ETL_STAGE_URL: must start with memory://"),
        ("mongodb://u:s3cr3t@h:notaport/db", "RESTFUL_ETL_STAGE_URL: is not a MongoDB URL pymongo accepts"),
    ],
    ids=["unknown-scheme", "bad-mongodb-url"],
)
def test_a_url_no_stage_takes_fails_naming_the_setting_never_the_url(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        open_stage_url(url, prefix="p", ttl=60)
    assert "s3cr3t" not in str(caught.value) and caught.value.__cause__ is None
