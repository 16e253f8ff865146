"""Hooks accepted per tenant: a token bucket per tenant and batch type, in the receiver's memory."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect_restful_etl.tasks.engine.hooks.config import Rate


class TokenBuckets:
    """`take(key)` is True while the key's bucket holds a token: `burst` at most, refilled at `per_second`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: tuple[str, str], rate: Rate) -> bool:
        now = self.clock()
        tokens, then = self._buckets.get(key, (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + (now - then) * rate.per_second)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True

    def retry_after(self, key: tuple[str, str], rate: Rate) -> float:
        """Seconds until the key's bucket holds a token again."""
        tokens, _ = self._buckets.get(key, (float(rate.burst), 0.0))
        return max(0.0, (1 - tokens) / rate.per_second)
