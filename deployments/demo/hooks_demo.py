"""The demo's last act: a change in the CRM pushed by a signed hook, through the receiver and a micro-batch, into
the accounting API within seconds (no polling run involved)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
from rich.console import Console

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.deployments.hook_serve import parse_config, running_receiver, seal_secret
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, generate_key, seal

TENANT, HOOK_SECRET = "demo", "demo-crm-hook-secret"


def demo_config(apis: DemoApis, key: str) -> dict[str, Any]:
    credentials = {"crm": {"token": apis.crm_token}, "accounting": {"api_key": apis.accounting_api_key}}
    return {
        "port": 0,
        "endpoints": [
            {
                "batch_type": "crm-to-accounting",
                "signature": {"type": "timestamped", "header": "Crm-Signature"},
                "records": "data.object",
                "debounce_seconds": 1,
                "tenants": {
                    TENANT: {
                        "secret": {"sealed": seal_secret(HOOK_SECRET, key)},
                        "sealed_credentials": seal(
                            credentials,
                            tenant_id=TENANT,
                            hosts={"crm": [apis.crm_url], "accounting": [apis.accounting_url]},
                            key=key,
                        ),
                        "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
                    }
                },
            }
        ],
    }


async def push_one_change(apis: DemoApis, console: Console) -> bool:
    """Start the receiver here, subscribe it to the CRM's hooks, change one customer, wait until it lands;
    whether it did."""
    key = os.environ.setdefault(SEAL_KEY_ENV, generate_key())  # the demo's own: sealed and opened in this process
    durable = os.environ.get("RESTFUL_ETL_STAGE_URL", "memory://").startswith(("redis", "mongodb"))
    config = parse_config(demo_config(apis, key))
    async with running_receiver(config, in_process=True, allow_memory=not durable) as (url, _):
        endpoint = f"{url}/hooks/crm-to-accounting/{TENANT}"
        console.print(f"hook receiver at {url} ({'durable stage' if durable else 'memory stage: the demo only'})")
        async with httpx.AsyncClient(timeout=10) as http:
            subscribed = await http.post(
                f"{apis.crm_url}/_control/hooks", json={"url": endpoint, "secret": HOOK_SECRET}
            )
            subscribed.raise_for_status()
            started = time.monotonic()
            change = {"email": "pushed@hooked.example"}
            crm_headers = {"Authorization": f"Bearer {apis.crm_token}"}
            (await http.patch(f"{apis.crm_url}/customers/5", json=change, headers=crm_headers)).raise_for_status()
            console.print(f"changed in the CRM: customer 5: {change}; the CRM sends a signed hook")
            landed = await _landed(http, apis, "5", change["email"], deadline=started + 120)
            await http.delete(f"{apis.crm_url}/_control/hooks")
    seconds = time.monotonic() - started
    if landed:
        console.print(f"customer 5 reached the accounting API by hook in {seconds:.1f} s (a micro-batch, no polling)")
    else:
        console.print(f"[red]customer 5 did not reach the accounting API within {seconds:.0f} s[/red]")
    return landed


async def _landed(http: httpx.AsyncClient, apis: DemoApis, key: str, email: str, deadline: float) -> bool:
    headers = {"X-API-Key": apis.accounting_api_key}
    while time.monotonic() < deadline:
        found = await http.get(f"{apis.accounting_url}/customers", params={"external_id": key}, headers=headers)
        if any(row.get("email") == email for row in found.json().get("data", [])):
            return True
        await asyncio.sleep(0.1)
    return False
