"""Helpers for the hooks tests and benchmark: a receiver configuration for the demo APIs, the receiver as a
subprocess (`restful-etl hooks serve`) that prints where it listens, and signed hooks to send it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.deployments.hook_serve import seal_secret
from prefect_restful_etl.flows.sealing import seal
from prefect_restful_etl.tasks.engine.hooks.config import TimestampedSignature
from prefect_restful_etl.tasks.engine.hooks.signature import sign

SIGNATURE = TimestampedSignature(header="Crm-Signature", tolerance=300)  # what the demo CRM's hooks carry


def tenant_secret(tenant: str) -> str:
    return f"whsec-{tenant}-0123456789abcdef"


def hooks_config(apis: DemoApis, key: str, tenants: list[str], **endpoint: Any) -> dict[str, Any]:
    """The receiver's configuration for crm-to-accounting on the demo APIs, tenants sealed with `key`."""
    credentials = {"crm": {"token": apis.crm_token}, "accounting": {"api_key": apis.accounting_api_key}}
    base_urls = {"crm": apis.crm_url, "accounting": apis.accounting_url}
    hosts = {api: [url] for api, url in base_urls.items()}
    return {
        "host": "127.0.0.1",
        "port": 0,
        "receiver": endpoint.pop("receiver", "main"),
        "endpoints": [
            {
                "batch_type": "crm-to-accounting",
                "signature": SIGNATURE.model_dump(),
                "records": "data.object",
                "debounce_seconds": 1,
                **endpoint,
                "tenants": {
                    tenant: {
                        "secret": {"sealed": seal_secret(tenant_secret(tenant), key)},
                        "sealed_credentials": seal(credentials, tenant_id=tenant, hosts=hosts, key=key),
                        "base_urls": base_urls,
                    }
                    for tenant in tenants
                },
            }
        ],
    }


def customer(ident: int, **fields: Any) -> dict[str, Any]:
    """A CRM customer as the demo CRM's hooks carry it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {
        "id": ident,
        "email": f"c{ident}@example.com",
        "first_name": "Ada",
        "last_name": f"Number{ident}",
        "company": f"Company {ident}",
        "country": "GB",
        "phone": "+44 20 7946 0000",
        "lifetime_value": 10.0,
        "updated_at": stamp,
        **fields,
    }


def hook(
    record: dict[str, Any], tenant: str, event_id: str | None = None, now: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """A signed hook's body and headers, as the demo CRM sends them."""
    body = orjson.dumps(
        {"id": event_id or f"evt_{uuid.uuid4().hex}", "type": "customer.updated", "data": {"object": record}}
    )
    return body, {"Content-Type": "application/json", **sign(SIGNATURE, tenant_secret(tenant), body, now=now)}


class ReceiverProcess:
    """`restful-etl hooks serve --config <file>` in its own session; `url` once it printed where it listens."""

    def __init__(
        self, config: dict[str, Any], home: Path, env: dict[str, str], name: str = "receiver", *flags: str
    ) -> None:
        self.path, self.log = home / f"{name}.json", home / f"{name}.log"
        self.path.write_text(json.dumps(config))
        self.env, self.url, self.flags = env, "", flags
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> ReceiverProcess:
        command = [sys.executable, "-m", "prefect_restful_etl.deployments.cli.app", "hooks", "serve"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--config", str(self.path), *self.flags],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        lines: queue.Queue[bytes] = queue.Queue()
        stdout = self.process.stdout
        assert stdout is not None
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"the receiver did not start: {self.log.read_text()[-3000:]}") from None
        if not line.strip():
            self.stop()
            raise AssertionError(f"the receiver exited: {self.log.read_text()[-3000:]}")
        self.url = json.loads(line)["hooks"]
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last flush, nothing the receiver could still do."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
