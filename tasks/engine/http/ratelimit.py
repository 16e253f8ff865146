"""Rate limits: an API's `rate_limit` (requests per second, spread evenly) held across every batch, worker and
process that talks to it.

The requests of every client of one API reserve their moments on one schedule. With a Redis stage the schedule
lives on that Redis server (`RedisRateLimiter`: one atomic script per request, on the server's clock), so two
workers on two machines send the rate, not twice it. Without one, each process keeps its own schedule
(`RateLimiter`, embedded: `RateLimiter.shared`), which every batch of the process shares.

Which requests share a schedule is the API's `rate_limit_scope`: `"api"` (every tenant's requests to the API
at that base URL) or `"tenant"` (each tenant's own, for an API that limits each account):
```json
{"name": "crm", "base_url": "https://crm.example.com/api", "rate_limit": 10, "rate_limit_scope": "tenant"}
```
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Protocol

from redis.exceptions import RedisError

from prefect_restful_etl.tasks.engine.exceptions import StageUnavailable


class Limiter(Protocol):
    """Waits until the caller may send its next request."""

    async def wait(self) -> None: ...


class RateLimiter:
    """At most `rate` requests per second, spread evenly, shared by every client (and job) that holds it.

    The bookkeeping sits behind a `threading.Lock`, never awaited, so one limiter may serve jobs that
    run in different threads and event loops; each caller then sleeps in its own loop.
    """

    _shared: ClassVar[dict[str, RateLimiter]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self._interval = 1.0 / rate if rate else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, key: str, rate: float) -> RateLimiter:
        """The process's one limiter for `key` (a new rate for the key replaces the old schedule)."""
        with cls._shared_lock:
            limiter = cls._shared.get(key)
            if limiter is None or limiter.rate != rate:
                limiter = cls._shared[key] = cls(rate)
            return limiter

    async def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = self._clock()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            await self._sleep(delay)


# Reserve the next moment on the key's schedule, on the server's clock (one clock for every worker): the moment
# is the later of now and the key's next free moment, which moves on by one interval. Returns the microseconds
# to wait, then the moment reserved (for tests). The key expires a second after its schedule is past.
_RESERVE = """
local interval = tonumber(ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
if free < now then free = now end
local expiry = math.ceil((free + interval - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', free + interval), 'PX', expiry)
return {string.format('%.0f', free - now), string.format('%.0f', free)}
"""


class RedisRateLimiter:
    """At most `rate` requests per second for everyone holding `key` on one Redis server (every worker and
    process), spread evenly; `where` names the server in errors (never a password)."""

    def __init__(
        self,
        client: Any,
        key: str,
        rate: float,
        *,
        where: str = "redis",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate, self.key, self._where, self._sleep = rate, key, where, sleep
        self._interval_us = max(1, round(1_000_000 / rate))
        self._reserve = client.register_script(_RESERVE)
        self.reserved: list[int] = []  # the moments this limiter reserved (server microseconds), newest last

    async def wait(self) -> None:
        try:
            delay_us, moment = await self._reserve(keys=[self.key], args=[self._interval_us])
        except (RedisError, OSError) as ex:
            raise StageUnavailable("rate limit", self.key, f"{self._where}: {type(ex).__name__}") from None
        self.reserved = [*self.reserved[-99:], int(moment)]
        if int(delay_us) > 0:
            await self._sleep(int(delay_us) / 1_000_000)


def limit_key(prefix: str, api_name: str, base_url: str, tenant_id: str | None = None) -> str:
    """`<prefix>::rate:<api>:<6 hex of the base URL>[:<tenant>]`: one schedule per API server (and tenant).

    The base URL is in it so that two batch types whose APIs share a name but not a server never share a limit,
    while a run pointed at another server (`base_urls`) gets that server's own. The empty part after the prefix
    is where a stage key holds its tenant, which is never empty: no tenant's keys (`<prefix>:<tenant>:...`)
    include a schedule, so none of a tenant's scans or drops can reach one."""
    server = hashlib.sha256(base_url.encode()).hexdigest()[:6]
    return f"{prefix}::rate:{api_name}:{server}" + (f":{tenant_id}" if tenant_id is not None else "")
