"""The receiver's configuration, checked before it listens: batch types and jobs known, secrets opened (sealed
or a Prefect Secret block) and never quoted, a durable stage required."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from prefect_restful_etl.deployments.hook_serve import (
    load_config,
    open_endpoints,
    open_intake_stage,
    open_secret,
    parse_config,
    seal_secret,
)
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, generate_key, seal
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.hooks.config import BlockSecret, SealedSecret

SECRET = "whsec-never-shown-7f3a"


def config(key: str, **endpoint: Any) -> dict[str, Any]:
    tenant = {"secret": {"sealed": seal_secret(SECRET, key)}}
    return {"endpoints": [{"batch_type": "crm-to-accounting", "tenants": {"acme": tenant}, **endpoint}]}


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    made = generate_key()
    monkeypatch.setenv(SEAL_KEY_ENV, made)
    return made


async def test_a_configuration_opens_into_endpoints_with_their_feed_and_secrets(key: str, tmp_path: Path) -> None:
    path = tmp_path / "hooks.yaml"
    path.write_text(__import__("json").dumps(config(key, records="data.object")))
    [endpoint] = await open_endpoints(load_config(path))
    assert endpoint.secrets["acme"].get_secret_value() == SECRET
    assert endpoint.feed.job == "Extract CRM customers"
    assert (endpoint.feed.version_field, endpoint.feed.version_type) == ("updated_at", "datetime")
    assert endpoint.config.url_path == "/hooks/crm-to-accounting/{tenant}"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_type": "no-such-type"}, "endpoints.0.batch_type"),
        ({"job": "Load accounting customers"}, "endpoints.0.job"),
        ({"ids": "data.id"}, "endpoints.0"),  # ids without fetch
        ({"signature": {"type": "rsa"}}, "endpoints.0.signature"),
        ({"tenants": {"a:b": {"secret": {"sealed": "x"}}}}, "endpoints.0"),
    ],
    ids=["unknown-batch-type", "not-an-extract", "ids-without-fetch", "signature-type", "tenant-with-colon"],
)
async def test_a_bad_configuration_names_its_field(key: str, change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        await open_endpoints(parse_config(config(key, **change)))
    assert refused.value.field.startswith(field)


async def test_a_secret_that_cannot_be_opened_fails_naming_the_tenant_never_the_value(key: str) -> None:
    other = generate_key()
    wrong = {
        "endpoints": [
            {"batch_type": "crm-to-accounting", "tenants": {"acme": {"secret": {"sealed": seal_secret(SECRET, other)}}}}
        ]
    }
    with pytest.raises(ConfigError, match=r"endpoints.0.tenants.acme.secret: cannot be opened") as refused:
        await open_endpoints(parse_config(wrong))
    not_a_hook = seal({"crm": {"token": SECRET}}, tenant_id="acme", hosts={"crm": ["https://crm.example.com"]}, key=key)
    with pytest.raises(ConfigError, match=r"endpoints.0.tenants.acme.secret") as as_credentials:
        await open_secret(SealedSecret(sealed=not_a_hook), "endpoints.0.tenants.acme.secret")
    assert SECRET not in str(refused.value) + str(as_credentials.value)


async def test_a_secret_block_holds_the_signing_secret(prefect_harness: Path) -> None:
    from prefect.blocks.system import Secret

    await Secret(value=SECRET).save("acme-hooks-secret", overwrite=True)
    opened = await open_secret(BlockSecret(block="acme-hooks-secret"), "endpoints.0.tenants.acme.secret")
    assert opened.get_secret_value() == SECRET
    with pytest.raises(ConfigError, match="no Secret block named 'missing'"):
        await open_secret(BlockSecret(block="missing"), "endpoints.0.tenants.acme.secret")


async def test_the_intake_needs_a_durable_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTFUL_ETL_STAGE_URL", "memory://")
    with pytest.raises(ConfigError, match="durable"):
        await open_intake_stage()
    assert await open_intake_stage(allow_memory=True) is not None
