"""The per-tenant token bucket."""

from __future__ import annotations

from prefect_restful_etl.tasks.engine.hooks.config import Rate
from prefect_restful_etl.tasks.engine.hooks.rate import TokenBuckets


def test_a_bucket_holds_its_burst_then_refills_at_its_rate() -> None:
    now = [0.0]
    buckets, rate = TokenBuckets(clock=lambda: now[0]), Rate(per_second=2, burst=3)
    assert [buckets.take(("t1", "bt"), rate) for _ in range(4)] == [True, True, True, False]
    assert buckets.take(("t2", "bt"), rate)  # another tenant has its own bucket
    assert buckets.retry_after(("t1", "bt"), rate) == 0.5
    now[0] = 0.5
    assert buckets.take(("t1", "bt"), rate) and not buckets.take(("t1", "bt"), rate)
    now[0] = 100.0
    assert [buckets.take(("t1", "bt"), rate) for _ in range(4)] == [True, True, True, False]
