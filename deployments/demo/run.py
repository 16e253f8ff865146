"""The demo: the bundled CRM and accounting APIs on loopback, one full sync, some CRM edits, one incremental sync.

Run it with `make demo` (or `python -m prefect_restful_etl.deployments.demo`); nothing to start by hand.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.deployments.demo.hooks_demo import push_one_change
from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.flows.resources import stage_settings
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlErrorEvent
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.report import BatchReport
from prefect_restful_etl.tasks.engine.settings import Settings
from prefect_restful_etl.tasks.engine.stage.url import shown_url

console = Console()
_COLUMNS = (
    "extracted",
    "transformed",
    "filtered",
    "rejected",
    "inserted",
    "updated",
    "unchanged",
    "duplicates",
    "failed_writes",
)
_QUALITY = ("flagged", "quality_score", "max_severity")


def show(title: str, report: BatchReport) -> None:
    """One column per job and one for the batch, one row per count: fits a narrow terminal."""
    table = Table(title=f"{title}: {report.batch_type} for tenant {report.tenant_id!r}: {report.status}")
    table.add_column("records")
    for job in report.jobs:
        table.add_column(job.kind, justify="right")
    table.add_column("batch", justify="right", style="bold")
    for count in _COLUMNS:
        values = [str(job.counts[count]) if count in job.counts else "" for job in report.jobs]
        table.add_row(count.replace("_", " "), *values, str(report.counts.get(count, 0)))
    for figure in _QUALITY if report.quality else ():  # the transform's screens: what etl_batch records
        values = [_shown(job.quality.get(figure, "")) for job in report.jobs]
        table.add_row(figure.replace("_", " "), *values, _shown(report.quality.get(figure)))
    table.add_row("seconds", *(f"{job.seconds:.2f}" for job in report.jobs), f"{report.seconds:.2f}")
    console.print(table)
    for job in report.jobs:
        console.print(f"  {job.kind}: {job.job}")
    console.print(f"batch id {report.batch_id}\naudit database: {report.audit_database}\n")


def _shown(figure: Any) -> str:
    return "-" if figure is None else str(figure)


def edit_crm(apis: DemoApis) -> list[str]:
    """Change three customers and add one through the CRM's own API, as its users would; add four dirty ones."""
    headers = {"Authorization": f"Bearer {apis.crm_token}"}
    with httpx.Client(base_url=apis.crm_url, headers=headers, timeout=10) as crm:
        done = []
        for customer_id, change in (
            (3, {"email": "billing@changed.example"}),
            (7, {"company": "Renamed Ltd"}),
            (11, {"phone": "+44 20 7946 0000"}),
        ):
            crm.patch(f"/customers/{customer_id}", json=change).raise_for_status()
            done.append(f"customer {customer_id}: {change}")
        new = crm.post(
            "/customers",
            json={
                "email": "new@customer.example",
                "first_name": "Nia",
                "last_name": "Okafor",
                "company": "Okafor Trading",
                "country": "GB",
            },
        )
        new.raise_for_status()
        done.append(f"new customer {new.json()['id']} (no phone: the `phone present` screen flags it)")
    dirty = httpx.post(f"{apis.crm_url}/_control/dirty", timeout=10).raise_for_status().json()["data"]
    done.append(
        f"dirty customers {', '.join(str(c['id']) for c in dirty)}: no email, a malformed email, "
        "a negative lifetime value, country 'ZZ'"
    )
    return done


def show_error_events(report: BatchReport) -> None:
    """The batch's rows of `etl_error_event`: what the screens rejected or flagged, and why."""
    events = asyncio.run(error_events(report.batch_id))
    if not events:
        return
    table = Table(title=f"etl_error_event for batch {report.batch_id}")
    table.add_column("screen", no_wrap=True)
    for column in ("key", "sev.", "action", "column", "value"):
        table.add_column(column)
    for event in events:
        table.add_row(
            event.screen,
            event.natural_key or "",
            str(event.severity),
            event.action,
            event.column or "",
            "null" if event.value is None else repr(event.value),
        )
    console.print(table)


async def error_events(batch_id: str) -> list[EtlErrorEvent]:
    audit = await AuditStore.open(Settings().audit_database())
    try:
        return list(await audit.error_events(batch_id))
    finally:
        await audit.close()


def main() -> None:
    with DemoApis(crm_customers=200) as apis:
        console.print(f"demo CRM at {apis.crm_url}, demo accounting at {apis.accounting_url}")
        # RESTFUL_ETL_STAGE_URL (or _BLOCK) picks the stage, as for any batch: memory, Redis or MongoDB
        staging = asyncio.run(stage_settings(Settings())).stage_url.get_secret_value()
        console.print(f"stage: {shown_url(staging)}\n")
        parameters: dict[str, Any] = {
            "tenant_id": "demo",
            "credentials": {
                "crm": Credentials(token=SecretStr(apis.crm_token)),
                "accounting": Credentials(api_key=SecretStr(apis.accounting_api_key)),
            },
            "base_urls": {"crm": apis.crm_url, "accounting": apis.accounting_url},
        }
        started = time.monotonic()
        first = asyncio.run(crm_to_accounting(**parameters, full_refresh=True))
        show("Full sync", first)
        for line in edit_crm(apis):
            console.print(f"changed in the CRM: {line}")
        console.print()
        second = asyncio.run(crm_to_accounting(**parameters))
        show("Incremental sync", second)
        show_error_events(second)
        written = second.counts["inserted"] + second.counts["updated"]
        console.print(
            f"The second batch read {second.counts['extracted']} changed CRM records and wrote {written} "
            f"({second.counts['inserted']} inserted, {second.counts['updated']} updated); "
            f"demo took {time.monotonic() - started:.1f}s."
        )
        console.print()
        if not asyncio.run(push_one_change(apis, console)):  # real time: a hook, not the next poll (hooks_demo.py)
            raise SystemExit(1)  # the demo shows the hook land, or fails saying it did not


if __name__ == "__main__":
    main()
