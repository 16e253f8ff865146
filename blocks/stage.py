"""The stage Block: which Redis or MongoDB holds a batch's records between jobs, under which prefix, for how long."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from prefect.blocks.core import Block
from prefect_redis import RedisDatabase
from pydantic import ConfigDict, Field, SecretStr, model_validator

from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.settings import Settings
from prefect_restful_etl.tasks.engine.stage.base import DEFAULT_TTL
from prefect_restful_etl.tasks.engine.stage.url import open_stage_url, stage_kind

if TYPE_CHECKING:
    from prefect_restful_etl.tasks.engine.stage.mongo import MongoStage
    from prefect_restful_etl.tasks.engine.stage.redis import RedisStage

_SERVER_SCHEMES = "redis://, rediss://, mongodb:// or mongodb+srv://"


class EtlStage(Block):
    """Where a batch's records rest between its jobs: a Redis database, or a MongoDB database, shared by the workers.

    Either outlives a failed or cancelled batch, so a retry or a `resume_batch_id` run continues it on any
    worker; it expires after `ttl_seconds` and is removed when its batch completes.

    Example:
        Save one, then name it in the workers' environment (`RESTFUL_ETL_STAGE_BLOCK=etl-stage`):
        ```python
        from prefect_redis import RedisDatabase
        from prefect_restful_etl.blocks.stage import EtlStage

        EtlStage(redis=RedisDatabase(host="redis.internal", db=2), ttl_seconds=3 * 24 * 3600).save("etl-stage")
        ```

        Or on MongoDB (the URL's database, else `restful_etl`):
        ```python
        from pydantic import SecretStr
        from prefect_restful_etl.blocks.stage import EtlStage

        EtlStage(url=SecretStr("mongodb://etl:PASSWORD@mongo.internal:27017/etl_stage")).save("etl-stage")
        ```

        Load it and open the stage:
        ```python
        from prefect_restful_etl.blocks.stage import EtlStage

        etl_stage = EtlStage.load("BLOCK_NAME")
        async with etl_stage.get_stage() as stage:
            print(await stage.count(key))
        ```
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # no error quotes a value given

    _block_type_name = "RESTful ETL Stage"
    _logo_url = "https://raw.githubusercontent.com/PrefectHQ/prefect/420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/redis.png"  # type: ignore[assignment]
    _documentation_url = "https://docs.prefect.io/v3/develop/blocks"  # type: ignore[assignment]
    _description = "The Redis or MongoDB stage of restful-etl batches: connection, key prefix, expiry and cleanup."

    redis: RedisDatabase | None = Field(
        default=None, description="A Redis Database block (prefect-redis) to stage in; or give `url`."
    )
    url: SecretStr | None = Field(
        default=None,
        description="`redis://[:password@]host:port/db` (or rediss://), or `mongodb://[user:password@]host:port/database`"
        " (or mongodb+srv://), when no Redis block is given.",
    )
    key_prefix: str = Field(default="restful-etl", description="First part of every stage key.")
    ttl_seconds: int | None = Field(
        default=DEFAULT_TTL, ge=1, description="Seconds staged records live after their last write; None: forever."
    )
    keep_after_success: bool = Field(
        default=False, description="Keep a completed batch's staged records until they expire."
    )

    @model_validator(mode="after")
    def _one_connection(self) -> EtlStage:
        if (self.redis is None) == (self.url is None):
            raise ValueError("give either redis (a Redis Database block) or url, not both and not neither")
        if self.url is not None and stage_kind(self.url.get_secret_value()) not in ("redis", "mongo"):
            raise ValueError(f"url: must start with {_SERVER_SCHEMES}")
        return self

    def stage_url(self) -> SecretStr:
        """The connection as one URL; the password inside stays a secret."""
        if self.url is not None:
            return self.url
        assert self.redis is not None
        return SecretStr(_url_of(self.redis))

    def apply(self, settings: Settings) -> Settings:
        """The settings a batch runs with when it stages here."""
        update: dict[str, Any] = {
            "stage_url": self.stage_url(),
            "stage_prefix": self.key_prefix,
            "stage_ttl": self.ttl_seconds,
            "keep_stage": self.keep_after_success,
        }
        return settings.model_copy(update=update)

    def get_stage(self) -> RedisStage | MongoStage:
        """A RedisStage or MongoStage on a client of its own; close it with `aclose()` (or use it as `async with`)."""
        url = self.stage_url().get_secret_value()
        stage = open_stage_url(url, prefix=self.key_prefix, ttl=self.ttl_seconds, field="url")
        return cast("RedisStage | MongoStage", stage)  # _one_connection admits Redis and MongoDB URLs only


def _url_of(redis: RedisDatabase) -> str:
    if redis.connection_url is not None:
        url = redis.connection_url.get_secret_value()
        if not url.startswith(("redis://", "rediss://")):
            # a Sentinel URL needs prefect-redis' own client; RedisStage opens plain connections
            raise ConfigError("redis.connection_url", "the stage takes redis:// or rediss:// URLs, not Sentinel")
        return url
    scheme = "rediss" if redis.ssl else "redis"
    user = quote(redis.username.get_secret_value(), safe="") if redis.username else ""
    password = quote(redis.password.get_secret_value(), safe="") if redis.password else ""
    auth = f"{user}:{password}@" if (user or password) else ""
    return f"{scheme}://{auth}{redis.host}:{redis.port}/{redis.db}"
