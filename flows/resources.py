"""A batch's resources: audit store, stage and API clients, resolved from settings and the run's parameters."""

from __future__ import annotations

from pydantic import ValidationError

from prefect_restful_etl.blocks.api import RestApi
from prefect_restful_etl.blocks.audit import AuditDatabase
from prefect_restful_etl.blocks.stage import EtlStage
from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.http.ratelimit import Limiter, RateLimiter, RedisRateLimiter, limit_key
from prefect_restful_etl.tasks.engine.jobtypes import BatchType
from prefect_restful_etl.tasks.engine.settings import Settings
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage
from prefect_restful_etl.tasks.engine.stage.url import open_stage_url


async def stage_settings(settings: Settings) -> Settings:
    """The settings with a named `EtlStage` block's stage in place of the `RESTFUL_ETL_STAGE_*` ones."""
    if not settings.stage_block:
        return settings
    try:
        block: EtlStage = await EtlStage.aload(settings.stage_block)
    except ValueError as ex:  # Prefect's "Unable to find block document named ..."
        raise ConfigError("RESTFUL_ETL_STAGE_BLOCK", f"no EtlStage block named {settings.stage_block!r}") from ex
    return block.apply(settings)


def open_stage(settings: Settings) -> Stage:
    """The stage `RESTFUL_ETL_STAGE_URL` names (memory, Redis or MongoDB), with its prefix and TTL."""
    url = settings.stage_url.get_secret_value()
    where = "RESTFUL_ETL_STAGE_BLOCK" if settings.stage_block else "RESTFUL_ETL_STAGE_URL"
    return open_stage_url(url, prefix=settings.stage_prefix, ttl=settings.stage_ttl, field=where)


async def close_stage(stage: Stage) -> None:
    """Close the stage's connection, if it has one (a Redis or MongoDB stage does; memory does not)."""
    aclose = getattr(stage, "aclose", None)
    if aclose is not None:
        await aclose()


async def open_audit(settings: Settings) -> AuditStore:
    """The audit database the settings name; a URL SQLAlchemy cannot read is named, never shown."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        return await AuditStore.open(settings.audit_database())
    except (ArgumentError, NoSuchModuleError) as ex:
        problem = type(ex).__name__
    where = "RESTFUL_ETL_AUDIT_BLOCK" if settings.audit_block else "RESTFUL_ETL_AUDIT_URL"
    raise ConfigError(where, f"is not a database URL SQLAlchemy can open ({problem})")


async def audit_settings(settings: Settings) -> Settings:
    """The settings with a named `AuditDatabase` block's URL in place of `RESTFUL_ETL_AUDIT_URL`."""
    if not settings.audit_block:
        return settings
    try:
        block: AuditDatabase = await AuditDatabase.aload(settings.audit_block)
    except ValueError as ex:  # Prefect's "Unable to find block document named ..."
        raise ConfigError("RESTFUL_ETL_AUDIT_BLOCK", f"no AuditDatabase block named {settings.audit_block!r}") from ex
    return settings.model_copy(update={"audit_url": block.url})


async def load_api_blocks(names: dict[str, str] | None) -> dict[str, ApiConfig]:
    """Per API name, the configuration held by the named `RestApi` block (`{"crm": "crm-production"}`)."""
    configs = {}
    for api, block_name in (names or {}).items():
        try:
            block: RestApi = await RestApi.aload(block_name)
        except ValueError:
            raise ConfigError(f"api_blocks.{api}", "names no RestApi block there is") from None
        configs[api] = block.to_config().model_copy(update={"name": api})
    return configs


def api_configs(
    batch_type: BatchType, base_urls: dict[str, str] | None, blocks: dict[str, ApiConfig] | None = None
) -> dict[str, ApiConfig]:
    """The batch type's APIs, replaced by RestApi blocks where named, then with base URLs overridden per run
    (another environment, the demo's ports)."""
    base_urls, blocks = base_urls or {}, blocks or {}
    for parameter, names in (("base_urls", base_urls), ("api_blocks", blocks)):
        unknown = set(names) - set(batch_type.apis)
        if unknown:
            raise ConfigError(parameter, f"names no API of {batch_type.name}: {sorted(unknown)}")
    apis = {name: blocks.get(name, api) for name, api in batch_type.apis.items()}
    return {
        name: _with_base_url(api, base_urls[name], name) if name in base_urls else api for name, api in apis.items()
    }


def _with_base_url(api: ApiConfig, base_url: str, name: str) -> ApiConfig:
    try:
        return api.model_validate({**api.model_dump(), "base_url": base_url})
    except ValidationError as ex:
        message = ex.errors(include_input=False, include_url=False)[0]["msg"]
    raise ConfigError(f"base_urls.{name}", message)


def rate_limiters(apis: dict[str, ApiConfig], tenant_id: str, stage: Stage) -> dict[str, Limiter]:
    """Per API with a `rate_limit`, its limiter: on the stage's Redis when the stage is Redis (one schedule for
    every worker and process), else the process's own (every batch of the process shares it)."""
    prefix = getattr(stage, "prefix", StageKey.prefix)
    limiters: dict[str, Limiter] = {}
    for name, api in apis.items():
        if api.rate_limit is None:
            continue
        key = limit_key(prefix, name, api.url, tenant_id if api.rate_limit_scope == "tenant" else None)
        if isinstance(stage, RedisStage):
            limiters[name] = RedisRateLimiter(stage.client, key, api.rate_limit, where=stage.where)
        else:
            limiters[name] = RateLimiter.shared(key, api.rate_limit)
    return limiters


def open_clients(
    apis: dict[str, ApiConfig], credentials: dict[str, Credentials], limiters: dict[str, Limiter] | None = None
) -> dict[str, RestClient]:
    """One client per API; each checks its credentials now, so a missing secret fails before any request.
    `limiters` (`rate_limiters`) holds each API's rate limit; without one an API's is the run's own."""
    unknown = set(credentials) - set(apis)
    if unknown:
        raise ConfigError("credentials", f"names no API of this batch type: {sorted(unknown)}")
    for name, api in apis.items():
        api.auth.build(credentials.get(name), name)  # every API checked before any client is opened
    return {
        name: RestClient(
            api, credentials.get(name), rate_limiter=(limiters or {}).get(name) or RateLimiter(api.rate_limit)
        )
        for name, api in apis.items()
    }
