"""`restful-etl hooks serve`: the receiver's configuration read and checked, its secrets opened, uvicorn started.

Everything a configuration can get wrong fails here, before the port opens: an unknown batch type or job,
a secret that cannot be opened, a stage that is not durable. Secrets are opened in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from pydantic import SecretStr, ValidationError

from prefect_restful_etl.deployments.hook_runs import DeploymentDispatcher, Dispatcher, InProcessDispatcher
from prefect_restful_etl.deployments.hooks import Endpoint, HookReceiver
from prefect_restful_etl.flows.hooks import batch_type_named, hooked_job
from prefect_restful_etl.flows.resources import close_stage, open_stage, stage_settings
from prefect_restful_etl.flows.sealing import seal_value, unseal_value
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.hooks.config import BlockSecret, HooksConfig, SealedSecret
from prefect_restful_etl.tasks.engine.hooks.intake import Intake
from prefect_restful_etl.tasks.engine.settings import Settings
from prefect_restful_etl.tasks.engine.stage.base import Stage
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage

HOOK_SECRET = "hook signing secret"  # the purpose a receiver's signing secret is sealed for


def load_config(path: Path) -> HooksConfig:
    """A JSON or YAML file; a mistake names its field, never a value."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as ex:
        raise ConfigError(str(path), f"cannot be read as JSON or YAML ({type(ex).__name__})") from None
    return parse_config(raw)


def parse_config(raw: Any) -> HooksConfig:
    try:
        return HooksConfig.model_validate(raw)
    except ValidationError as ex:
        first = ex.errors(include_input=False, include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "hooks configuration"
    raise ConfigError(field, first["msg"])


def seal_secret(secret: str, key: str | None = None, *, public_key: str | None = None) -> str:
    """A signing secret sealed for a receiver's configuration (`{"secret": {"sealed": ...}}`), with the Fernet
    key or the workers' public key."""
    return seal_value(HOOK_SECRET, secret, public_key=public_key, key=key)


async def open_secret(given: SealedSecret | BlockSecret, where: str) -> SecretStr:
    if isinstance(given, SealedSecret):
        try:
            return unseal_value(given.sealed, HOOK_SECRET)
        except ConfigError as ex:
            raise ConfigError(where, str(ex).split(": ", 1)[-1]) from None
    from prefect.blocks.system import Secret

    try:
        block: Secret[Any] = await Secret.aload(given.block)
    except ValueError:
        raise ConfigError(where, f"no Secret block named {given.block!r}") from None
    return SecretStr(str(block.get()))


async def open_endpoints(config: HooksConfig) -> list[Endpoint]:
    """Each endpoint against its batch type, and each tenant's secret opened."""
    opened = []
    for index, endpoint in enumerate(config.endpoints):
        where = f"endpoints.{index}"
        try:
            job = hooked_job(batch_type_named(endpoint.batch_type), endpoint.job)
        except ConfigError as ex:
            raise ConfigError(f"{where}.{ex.field}", str(ex).split(": ", 1)[1]) from None
        cursor = job.incremental
        feed = endpoint.feed(job.name, cursor.cursor_field if cursor else None, cursor.cursor_type if cursor else None)
        secrets = {
            tenant: await open_secret(hooks.secret, f"{where}.tenants.{tenant}.secret")
            for tenant, hooks in endpoint.tenants.items()
        }
        opened.append(Endpoint(endpoint, feed, secrets))
    return opened


async def open_intake_stage(*, allow_memory: bool = False) -> Stage:
    """The stage the settings name (`RESTFUL_ETL_STAGE_URL`, `RESTFUL_ETL_STAGE_BLOCK`); durable unless allowed."""
    stage = open_stage(await stage_settings(Settings()))
    if isinstance(stage, MemoryStage) and not allow_memory:
        raise ConfigError(
            "RESTFUL_ETL_STAGE_URL", "hooks need a durable stage (redis://...): memory forgets them with its process"
        )
    return stage


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


@contextlib.asynccontextmanager
async def running_receiver(
    config: HooksConfig, *, in_process: bool = False, allow_memory: bool = False
) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """The receiver served on this loop: yields its URL once it listens, and uvicorn's task (ending on SIGTERM
    or SIGINT); stops it, and its work, on exit."""
    endpoints = await open_endpoints(config)
    stage = await open_intake_stage(allow_memory=allow_memory)
    dispatcher: Dispatcher = InProcessDispatcher() if in_process else DeploymentDispatcher()
    intake = Intake(stage, config.receiver, dedupe_days=config.dedupe_days)
    receiver = HookReceiver(config, endpoints, intake, dispatcher, emit=True)
    sock = _socket(config.host, config.port)
    server = uvicorn.Server(
        uvicorn.Config(receiver.app, log_level="warning", access_log=False, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task
                raise ConfigError("hooks", "the receiver stopped before it listened")
            await asyncio.sleep(0.01)
        host, port = sock.getsockname()[:2]
        yield f"http://{host}:{port}", task
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await close_stage(stage)


async def serve_hooks(config: HooksConfig, *, in_process: bool = False, allow_memory: bool = False) -> None:
    """Serve until SIGTERM or SIGINT; prints `{"hooks": "http://host:port", "pid": ...}` once it listens."""
    async with running_receiver(config, in_process=in_process, allow_memory=allow_memory) as (url, served):
        print(json.dumps({"hooks": url, "pid": os.getpid()}), flush=True)
        await served


def run(config: HooksConfig, *, in_process: bool = False, allow_memory: bool = False) -> None:
    """Blocks until interrupted (Ctrl-C, SIGTERM): uvicorn ends its requests, then the receiver its work."""
    asyncio.run(serve_hooks(config, in_process=in_process, allow_memory=allow_memory))
