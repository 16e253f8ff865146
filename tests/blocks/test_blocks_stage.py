"""The EtlStage block: Prefect's block checks, its connection URL, and a batch that stages where it says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
import redis
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect_redis import RedisDatabase
from pydantic import SecretStr, ValidationError

from prefect_restful_etl.blocks.stage import EtlStage
from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.settings import Settings
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.mongo import RECORDS, MongoStage


class TestEtlStageIsAStandardBlock(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[EtlStage]:
        return EtlStage

    def test_has_a_valid_image(self, block: type[EtlStage]) -> None:
        pytest.skip("downloads the logo: no network here")


@pytest.mark.parametrize(
    "redis_block,url",
    [
        (RedisDatabase(host="10.0.0.5", port=6380, db=3), "redis://10.0.0.5:6380/3"),
        (RedisDatabase(host="r", password=SecretStr("p@ss/w:rd")), "redis://:p%40ss%2Fw%3Ard@r:6379/0"),
        (
            RedisDatabase(host="r", username=SecretStr("etl"), password=SecretStr("pw"), ssl=True),
            "rediss://etl:pw@r:6379/0",
        ),
        (RedisDatabase(connection_url=SecretStr("redis://:pw@r:7000/2")), "redis://:pw@r:7000/2"),
    ],
    ids=["host-port-db", "password-quoted", "user-and-tls", "connection-url"],
)
def test_the_stage_url_comes_from_the_redis_block(redis_block: RedisDatabase, url: str) -> None:
    stage = EtlStage(redis=redis_block)
    assert stage.stage_url().get_secret_value() == url
    assert "pw" not in str(stage.stage_url()) and "pw" not in repr(stage)


def test_a_sentinel_url_is_refused_with_the_field_named() -> None:
    block = EtlStage(redis=RedisDatabase(connection_url=SecretStr("redis+sentinel://s1:26379/mymaster")))
    with pytest.raises(ConfigError, match=r"redis\.connection_url"):
        block.stage_url()


@pytest.mark.parametrize(
    "fields,match",
    [
        ({}, "either redis .* or url"),
        ({"url": SecretStr("redis://r/0"), "redis": RedisDatabase(host="r")}, "either redis .* or url"),
        ({"url": SecretStr("memory://")}, "url: must start with redis://, rediss://, mongodb://"),
        ({"url": SecretStr("redis://r/0"), "ttl_seconds": 0}, "ttl_seconds"),
    ],
    ids=["neither", "both", "not-redis", "zero-ttl"],
)
def test_a_bad_block_is_refused(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        EtlStage(**fields)


def test_the_block_replaces_the_stage_settings() -> None:
    block = EtlStage(url=SecretStr("redis://r:1/2"), key_prefix="etl-prod", ttl_seconds=60, keep_after_success=True)
    settings = block.apply(Settings(_env_file=None))
    assert settings.stage_url.get_secret_value() == "redis://r:1/2"
    assert (settings.stage_prefix, settings.stage_ttl, settings.keep_stage) == ("etl-prod", 60, True)


async def test_get_stage_opens_a_redis_stage_with_the_blocks_prefix_and_ttl(redis_url: str) -> None:
    block = EtlStage(url=SecretStr(redis_url), key_prefix="from-block", ttl_seconds=120)
    async with block.get_stage() as stage:
        await stage.append(StageKey("t", "b", "job"), [{"id": 1}])
        assert [chunk async for chunk in stage.read(StageKey("t", "b", "job"))] == [[{"id": 1}]]
    with redis.Redis.from_url(redis_url) as client:
        assert 0 < client.ttl("from-block:t:b:job") <= 120


@pytest.mark.integration
async def test_get_stage_opens_a_mongo_stage_with_the_blocks_prefix_and_ttl(mongo_url: str) -> None:
    block = EtlStage(url=SecretStr(mongo_url), key_prefix="from-block", ttl_seconds=120)
    async with block.get_stage() as stage:
        assert isinstance(stage, MongoStage)
        await stage.append(StageKey("t", "b", "job"), [{"id": 1}])
        assert [chunk async for chunk in stage.read(StageKey("t", "b", "job"))] == [[{"id": 1}]]
    with pymongo.MongoClient(mongo_url, tz_aware=True) as client:
        (doc,) = client.get_default_database()[RECORDS].find({})
        assert doc["key"] == "from-block:t:b:job"
        assert timedelta(0) < doc["expires"] - datetime.now(UTC) <= timedelta(seconds=120)


def connected_clients(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.info("clients")["connected_clients"])


@pytest.mark.integration
async def test_a_batch_stages_where_the_named_block_says_and_closes_its_client(
    prefect_harness: Path,
    etl_home: Path,
    redis_url: str,
    demo_state: DemoApis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, port_db = redis_url.removeprefix("redis://").split(":")
    port, db = port_db.split("/")
    redis_block = RedisDatabase(host=host, port=int(port), db=int(db))
    await EtlStage(redis=redis_block, key_prefix="blocked", ttl_seconds=3600, keep_after_success=True).save(
        "test-stage", overwrite=True
    )
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", "memory://")  # the block wins over the URL
    monkeypatch.setenv("RESTFUL_ETL_STAGE_BLOCK", "test-stage")
    before = connected_clients(redis_url)

    report = await crm_to_accounting(
        tenant_id="blocked",
        credentials={
            "crm": Credentials(token=SecretStr(demo_state.crm_token)),
            "accounting": Credentials(api_key=SecretStr(demo_state.accounting_api_key)),
        },
        base_urls={"crm": demo_state.crm_url, "accounting": demo_state.accounting_url},
    )

    assert report.status == "COMPLETED" and report.counts["inserted"] > 0
    with redis.Redis.from_url(redis_url) as client:
        kept = [key.decode() for key in client.scan_iter(match=f"blocked:blocked:{report.batch_id}:*")]
        assert f"blocked:blocked:{report.batch_id}:extract-crm-customers" in kept  # kept after success
        assert all(0 < client.ttl(key) <= 3600 for key in kept)  # and expires
    assert connected_clients(redis_url) == before  # the batch closed its Redis client


@pytest.mark.integration
async def test_an_unknown_block_name_fails_the_batch_naming_the_setting(
    prefect_harness: Path, etl_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTFUL_ETL_STAGE_BLOCK", "no-such-stage")
    with pytest.raises(ConfigError, match="RESTFUL_ETL_STAGE_BLOCK: no EtlStage block named 'no-such-stage'"):
        await crm_to_accounting(
            tenant_id="nobody",
            credentials={"crm": Credentials(token=SecretStr("t")), "accounting": Credentials(api_key=SecretStr("k"))},
        )
