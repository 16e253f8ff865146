"""Which stage a URL names: `memory://`, Redis (`redis://`, `rediss://`, `unix://`) or MongoDB (`mongodb://`,
`mongodb+srv://`), opened with a key prefix and an expiry."""

from __future__ import annotations

from typing import Literal

from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.stage.base import Stage

StageKind = Literal["memory", "redis", "mongo"]
SCHEMES: dict[StageKind, tuple[str, ...]] = {
    "memory": ("memory:",),
    "redis": ("redis://", "rediss://", "unix://"),
    "mongo": ("mongodb://", "mongodb+srv://"),
}
SCHEMES_TEXT = "memory://, redis://, rediss://, mongodb:// or mongodb+srv://"


def stage_kind(url: str) -> StageKind | None:
    """The stage a URL names, by its scheme; None for one no stage takes."""
    for kind, schemes in SCHEMES.items():
        if url.startswith(schemes):
            return kind
    return None


def open_stage_url(url: str, *, prefix: str, ttl: int | None, field: str = "RESTFUL_ETL_STAGE_URL") -> Stage:
    """The stage `url` names, on a client of its own (close it with `aclose()`, where it has one).

    A URL no stage takes, or one its client refuses, fails naming `field`, never quoting the URL (it may hold a
    password).
    """
    kind = stage_kind(url)
    if kind == "memory":
        from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage

        return MemoryStage()
    if kind == "redis":
        from prefect_restful_etl.tasks.engine.stage.redis import RedisStage

        return RedisStage.from_url(url, prefix=prefix, ttl=ttl)
    if kind == "mongo":
        from prefect_restful_etl.tasks.engine.stage.mongo import MongoStage

        try:
            return MongoStage.from_url(url, prefix=prefix, ttl=ttl)
        except ConfigError as ex:
            if ex.field != "url":
                raise
            raise ConfigError(field, str(ex).removeprefix("url: ")) from None
    raise ConfigError(field, f"must start with {SCHEMES_TEXT}")


def shown_url(url: str) -> str:
    """Where a stage URL points, fit to print: no user, no password, no options (`mongodb://127.0.0.1:27017/etl`;
    a MongoDB URL naming no database shows the one the stage takes)."""
    kind = stage_kind(url)
    if kind is None:
        return "(not a stage URL)"
    if kind == "memory":
        return "memory://"
    scheme, _, rest = url.partition("://")
    netloc, _, path = rest.partition("/")
    hosts = netloc.split("?", 1)[0].rpartition("@")[2]
    path = path.split("?", 1)[0]
    if kind == "mongo" and not path:
        from prefect_restful_etl.tasks.engine.stage.mongo import DEFAULT_DATABASE

        path = DEFAULT_DATABASE
    return f"{scheme}://{hosts}/{path}"
