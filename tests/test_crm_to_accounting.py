"""The batch type end to end: a real Prefect flow against the bundled demo APIs on real sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from prefect_restful_etl.deployments.demo_apis import DemoApis
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.tasks.engine.audit import AuditStore
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError

pytestmark = pytest.mark.integration


def parameters(apis: DemoApis, tenant_id: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "credentials": {
            "crm": Credentials(token=SecretStr(apis.crm_token)),
            "accounting": Credentials(api_key=SecretStr(apis.accounting_api_key)),
        },
        "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
    }


def crm_customers(apis: DemoApis) -> list[dict[str, Any]]:
    with httpx.Client(base_url=apis.crm_url, headers={"Authorization": f"Bearer {apis.crm_token}"}) as crm:
        return crm.get("/all/customers").raise_for_status().json()


def accounting_customers(apis: DemoApis) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=apis.accounting_url) as accounting:
        dump = accounting.get("/_control/dump").raise_for_status().json()
    return {c["external_id"]: c for c in dump["customers"]}


def expected(customer: dict[str, Any]) -> dict[str, Any]:
    """What the batch type's transform makes of a CRM customer."""
    return {
        "external_id": str(customer["id"]),
        "name": customer["company"],
        "email": customer["email"],
        "country": customer["country"],
        "phone": customer["phone"],
        "lifetime_value": str(customer["lifetime_value"]),
        "status": customer.get("status") or "active",
    }


@pytest.fixture
def fresh_apis(demo_apis: DemoApis) -> DemoApis:
    demo_apis.reset()
    return demo_apis


async def test_full_sync_then_rerun_then_incremental_change(prefect_harness: Path, etl_home: Path,
                                                              fresh_apis: DemoApis) -> None:
    params = parameters(fresh_apis, "acme")

    first = await crm_to_accounting(**params, full_refresh=True)
    source = crm_customers(fresh_apis)
    assert first.status == "COMPLETED"
    assert first.counts["extracted"] == len(source) and first.counts["inserted"] == len(source)
    destination = accounting_customers(fresh_apis)
    assert {k: {f: v[f] for f in expected(source[0])} for k, v in destination.items()} == {
        str(c["id"]): expected(c) for c in source
    }

    again = await crm_to_accounting(**params)
    assert again.status == "COMPLETED"
    assert (again.counts["inserted"], again.counts["updated"]) == (0, 0)

    with httpx.Client(base_url=fresh_apis.crm_url, headers={"Authorization": f"Bearer {fresh_apis.crm_token}"}) as crm:
        crm.patch("/customers/5", json={"email": "changed@example.org"}).raise_for_status()
    third = await crm_to_accounting(**params)
    assert third.counts["extracted"] >= 1 and third.counts["extracted"] < len(source)
    assert (third.counts["inserted"], third.counts["updated"]) == (0, 1)
    assert accounting_customers(fresh_apis)["5"]["email"] == "changed@example.org"

    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        batches = await audit.batches("acme")
        assert [b.status for b in batches] == ["COMPLETED"] * 3
        assert [len(await audit.jobs(b.batch_id)) for b in batches] == [3, 3, 3]
        watermark = await audit.get_watermark("acme", "crm-to-accounting", "extract-crm-customers")
        assert watermark is not None and watermark.value is not None
    finally:
        await audit.close()


async def test_a_record_the_destination_refuses_is_an_error_event(prefect_harness: Path, etl_home: Path,
                                                                   fresh_apis: DemoApis) -> None:
    with httpx.Client(base_url=fresh_apis.crm_url, headers={"Authorization": f"Bearer {fresh_apis.crm_token}"}) as crm:
        crm.patch("/customers/9", json={"email": "not-an-email"}).raise_for_status()
    report = await crm_to_accounting(**parameters(fresh_apis, "bolt"), full_refresh=True)

    assert report.status == "COMPLETED"
    assert report.counts["failed_writes"] == 1
    assert report.counts["inserted"] == report.counts["extracted"] - 1
    assert "9" not in accounting_customers(fresh_apis)
    audit = await AuditStore.open(f"sqlite:///{etl_home / 'audit.db'}")
    try:
        [event] = await audit.error_events(report.batch_id)
        assert (event.tenant_id, event.screen, event.natural_key) == ("bolt", "load", "9")
        assert "422" in event.message and "email" in event.message
    finally:
        await audit.close()


@pytest.mark.parametrize(
    "change,field",
    [
        ({"base_urls": {"erp": "http://127.0.0.1:1"}}, "base_urls"),
        ({"credentials": {"crm": Credentials(api_key=SecretStr("x"))}}, "credentials.crm.token"),
        ({"credentials": {}}, "credentials.crm.token"),
    ],
    ids=["unknown-api", "wrong-secret-kind", "no-credentials"],
)
async def test_a_bad_configuration_fails_before_any_request(prefect_harness: Path, etl_home: Path,
                                                            fresh_apis: DemoApis, change: dict, field: str) -> None:
    with httpx.Client(base_url=fresh_apis.crm_url) as crm:
        crm.post("/_control/reset-stats").raise_for_status()
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            await crm_to_accounting(**(parameters(fresh_apis, "oops") | change))
        stats = crm.get("/_control/stats").raise_for_status().json()
    assert not any(path.startswith("/customers") or "customers" in path for path in _paths(stats))


def _paths(stats: dict[str, Any]) -> list[str]:
    return [key for key in stats.get("requests", stats) if "_control" not in key]
