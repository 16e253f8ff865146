"""The stage servers a benchmark runs on: a private redis-server, and SecantusDB or the `MONGO_URL` server.

Benchmarks are run from the repository's root (`python -m benchmarks.bench_stage`), so the test servers import
as `tests.fixtures.servers.*`. SecantusDB is a MongoDB-wire server written in Python: its figures say how the Mongo
stage behaves (flat memory, chunked reads), not how fast MongoDB is; set `MONGO_URL` to measure a real mongod.
"""

from __future__ import annotations

import os
import uuid
from contextlib import ExitStack
from urllib.parse import urlsplit

from tests.fixtures.servers.redis import RedisServer
from tests.fixtures.servers.secantus import SecantusServer


def stage_servers(stack: ExitStack, stages: list[str]) -> dict[str, str]:
    """Per stage asked for, in order, the URL to stage at; the servers started stop when `stack` closes."""
    urls: dict[str, str] = {}
    for stage in stages:
        if stage == "memory":
            urls[stage] = "memory://"
        elif stage == "redis":
            urls[stage] = stack.enter_context(RedisServer()).url
        elif os.environ.get("MONGO_URL"):
            urls[stage] = _own_database(stack, os.environ["MONGO_URL"])
        else:
            # in memory, the cache holds all the data: 200,000 records and their bookkeeping pass 256 MiB
            urls[stage] = stack.enter_context(SecantusServer(cache_size="4G")).url_for("bench")
    return urls


def _own_database(stack: ExitStack, url: str) -> str:
    """A database of this run's on the user's server, dropped when the run ends."""
    import pymongo

    own = urlsplit(url)._replace(path=f"/restful_etl_bench_{uuid.uuid4().hex[:8]}").geturl()

    def drop() -> None:
        with pymongo.MongoClient(own) as client:
            client.drop_database(client.get_default_database())

    stack.callback(drop)
    return own
