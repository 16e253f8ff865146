"""Rate limits held across workers: one schedule on the stage's Redis for every client, process and worker of an
API (or of one tenant's use of it), and the process's own schedule where the stage is not Redis."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import textwrap

import httpx
import pytest
import redis.asyncio as aioredis
import respx

from prefect_restful_etl.flows.resources import open_clients, rate_limiters
from prefect_restful_etl.tasks.engine.exceptions import StageUnavailable
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.ratelimit import RateLimiter, RedisRateLimiter, limit_key
from prefect_restful_etl.tasks.engine.stage.base import StageKey
from prefect_restful_etl.tasks.engine.stage.memory import MemoryStage
from prefect_restful_etl.tasks.engine.stage.redis import RedisStage

BASE = "http://127.0.0.1:8999/api"
SECOND = 1_000_000  # the schedule's unit: microseconds on the Redis server's clock


class Waits:
    """A limiter's pauses, recorded instead of slept."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def apis(rate: float, scope: str = "api") -> dict[str, ApiConfig]:
    return {"crm": ApiConfig(name="crm", base_url=BASE, rate_limit=rate, rate_limit_scope=scope)}  # type: ignore[arg-type]


@pytest.mark.integration
async def test_two_workers_share_one_schedule_on_redis(redis_url: str) -> None:
    """Two workers (each its own Redis connection) reserve the API's requests on one schedule: at one request a
    second, twenty requests take twenty seconds' worth of moments, each one second after the one before."""
    key = limit_key("restful-etl", "crm", BASE)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    waits = [Waits(), Waits()]
    limiters = [RedisRateLimiter(c, key, 1.0, sleep=w) for c, w in zip(clients, waits, strict=True)]
    moments: list[int] = []

    async def send(limiter: RedisRateLimiter) -> None:
        for _ in range(10):
            await limiter.wait()
            moments.append(limiter.reserved[-1])

    try:
        await asyncio.gather(*(send(limiter) for limiter in limiters))
    finally:
        for client in clients:
            await client.aclose()
    moments.sort()
    assert [later - earlier for earlier, later in itertools.pairwise(moments)] == [SECOND] * 19
    assert len(waits[0].delays) + len(waits[1].delays) == 19  # all but the first request wait their turn


@pytest.mark.integration
def test_processes_share_one_schedule_on_redis(redis_url: str) -> None:
    """Three processes, as three workers on three machines would: their moments interleave on one schedule."""
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        import redis.asyncio as aioredis
        from prefect_restful_etl.tasks.engine.http.ratelimit import RedisRateLimiter

        async def main(url, key):
            client = aioredis.Redis.from_url(url)
            async def recorded(delay):
                pass
            limiter, moments = RedisRateLimiter(client, key, 2.0, sleep=recorded), []
            for _ in range(5):
                await limiter.wait()
                moments.append(limiter.reserved[-1])
            await client.aclose()
            print(json.dumps(moments))

        asyncio.run(main(sys.argv[1], sys.argv[2]))
        """
    )
    key = limit_key("restful-etl", "crm", BASE)
    workers = [
        subprocess.Popen([sys.executable, "-c", script, redis_url, key], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    moments = sorted(m for worker in workers for m in json.loads(worker.communicate(timeout=60)[0]))
    assert [later - earlier for earlier, later in itertools.pairwise(moments)] == [SECOND // 2] * 14


@pytest.mark.integration
async def test_batches_on_a_redis_stage_hold_the_rate_together(redis_url: str) -> None:
    """What a batch builds (`rate_limiters` on its stage, then `open_clients`): two batches on two workers, each
    with its own stage connection, send their requests on one schedule; another API server has its own."""
    stages = [RedisStage.from_url(redis_url) for _ in range(2)]
    try:
        limiters = [rate_limiters(apis(1.0), "acme", stage) for stage in stages]
        other = rate_limiters(
            {"crm": ApiConfig(name="crm", base_url="http://127.0.0.1:9/v2", rate_limit=1.0)}, "acme", stages[0]
        )
        assert all(isinstance(limiter["crm"], RedisRateLimiter) for limiter in [*limiters, other])
        waits = Waits()
        for limiter in (*limiters, other):
            limiter["crm"]._sleep = waits  # type: ignore[union-attr]
        with respx.mock:
            respx.get(url__startswith=BASE).mock(return_value=httpx.Response(200, json={}))
            for batch in limiters:
                async with open_clients(apis(1.0), {}, batch)["crm"] as client:
                    for _ in range(3):
                        await client.request("GET", "/customers")
        reserved = [*limiters[0]["crm"].reserved, *limiters[1]["crm"].reserved]  # type: ignore[union-attr]
        assert len(reserved) == 6 and max(reserved) - min(reserved) == 5 * SECOND
        await other["crm"].wait()
        assert other["crm"].reserved[-1] < max(reserved)  # type: ignore[union-attr] # the other server's: afresh
    finally:
        for stage in stages:
            await stage.aclose()


@pytest.mark.integration
async def test_a_tenant_scoped_limit_holds_per_tenant(redis_url: str) -> None:
    async with RedisStage.from_url(redis_url) as stage:
        acme, globex = (rate_limiters(apis(1.0, "tenant"), tenant, stage)["crm"] for tenant in ("acme", "globex"))
        shared = rate_limiters(apis(1.0), "acme", stage)["crm"]
    assert isinstance(acme, RedisRateLimiter) and isinstance(globex, RedisRateLimiter)
    assert acme.key.endswith(":acme") and globex.key.endswith(":globex") and acme.key != globex.key
    assert isinstance(shared, RedisRateLimiter) and not shared.key.endswith(":acme")


async def test_without_redis_every_batch_of_the_process_shares_the_process_schedule() -> None:
    first, second = (rate_limiters(apis(5.0), tenant, MemoryStage())["crm"] for tenant in ("acme", "globex"))
    assert first is second and isinstance(first, RateLimiter) and first.rate == 5.0
    assert rate_limiters(apis(7.0), "acme", MemoryStage())["crm"].rate == 7.0  # type: ignore[union-attr]
    assert rate_limiters({"crm": ApiConfig(name="crm", base_url=BASE)}, "acme", MemoryStage()) == {}


async def test_a_redis_limiter_whose_server_is_gone_says_where_never_the_password() -> None:
    client = aioredis.Redis.from_url("redis://:s3cret-pw@127.0.0.1:9/0", socket_connect_timeout=2)
    limiter = RedisRateLimiter(client, "restful-etl::rate:crm:abc123", 1.0, where="redis://127.0.0.1:9/0")
    try:
        with pytest.raises(
            StageUnavailable, match=r"rate limit of restful-etl::rate:crm:abc123 failed: redis://127.0.0.1:9/0"
        ) as caught:
            await limiter.wait()
        assert "s3cret-pw" not in str(caught.value)
    finally:
        await client.aclose()


def test_limit_keys_name_the_api_its_server_and_the_tenant() -> None:
    key = limit_key("restful-etl", "crm", "https://crm.example.com/api")
    assert key.startswith("restful-etl::rate:crm:") and len(key.rsplit(":", 1)[1]) == 6
    assert limit_key("restful-etl", "crm", "https://crm.example.com/api", "acme") == f"{key}:acme"
    assert limit_key("restful-etl", "crm", "https://other.example.com/api") != key


@pytest.mark.parametrize("tenant_id", ["rate", "acme"])
def test_limit_keys_lie_outside_every_tenants_keys(tenant_id: str) -> None:
    # A tenant called "rate" must not own (nor drop with its batch "crm") the API's schedule, nor scans of a
    # tenant's stage keys find it.
    key = limit_key("restful-etl", "crm", "https://crm.example.com/api", tenant_id)
    assert not key.startswith(StageKey(tenant_id, "crm", "").batch_prefix)
    assert not key.startswith(f"restful-etl:{tenant_id}:")


def test_two_limiters_in_one_process_are_one_when_shared() -> None:
    assert RateLimiter.shared("k1", 3.0) is RateLimiter.shared("k1", 3.0)
    assert RateLimiter.shared("k1", 3.0) is not RateLimiter.shared("k2", 3.0)
