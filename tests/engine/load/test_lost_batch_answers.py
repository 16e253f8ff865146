"""Bulk writes to a batch API (`item: "request"`, sub-requests that carry creates) whose answers get lost: the API
applies the batch, then answers 429 or 5xx or drops the connection. A batch holding creates is sent again only
after their keys were looked up, and then without the creates that landed: no key is written twice.

The demo accounting API has no batch endpoint, so a PocketBase-like one is kept in memory behind respx.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from engine_support import batch_context
from pydantic import SecretStr

from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import RetriableError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.load.job import LoadJob, run_load
from prefect_restful_etl.tasks.engine.report import JobReport

BASE = "https://batch.example.com"
API = ApiConfig.model_validate(
    {
        "name": "dest",
        "base_url": BASE,
        "auth": {"type": "api_key"},
        "max_attempts": 3,
        "backoff_base": 0,
        "paginator": {"type": "page_number", "page_size": 50, "total_path": "total"},
    }
)
BATCH = {"path": "/batch", "item": "request", "envelope": "requests", "id_path": "body.id", "batch_size": 10}


def job(**bulk: Any) -> LoadJob:
    return LoadJob.model_validate(
        {
            "kind": "load",
            "name": "Load",
            "source": "Shape",
            "api": "dest",
            "endpoint": {"path": "/customers", "records_path": "data"},
            "natural_key": ["external_id"],
            "compare": ["name"],
            "bulk": BATCH | bulk,
        }
    )


class BatchApi:
    """A batch API in memory: `GET /customers` (filtered by external_id) and `POST /batch` of sub-requests, each
    applied in turn; `lose` makes the next batches land and then lose their answers (a status, or a cut)."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.lose: list[int | None] = []  # per coming batch: a status to answer after it landed, None: a cut
        self.refuse: list[int] = []  # per coming batch: a status to answer before anything is applied
        self.batches: list[Counter[str]] = []  # the sub-requests of each batch received, by method
        router.get(f"{BASE}/customers").mock(side_effect=self._list)
        router.post(f"{BASE}/batch").mock(side_effect=self._batch)

    def _list(self, request: httpx.Request) -> httpx.Response:
        wanted = request.url.params.get("external_id")
        rows = [r for r in self.rows.values() if wanted is None or r["external_id"] == wanted]
        return httpx.Response(200, json={"data": rows, "total": len(rows)})

    def _batch(self, request: httpx.Request) -> httpx.Response:
        subs = json.loads(request.content)["requests"]
        self.batches.append(Counter(s["method"] for s in subs))
        if self.refuse:
            return httpx.Response(self.refuse.pop(0), json={"message": "slow down"})
        answers = [{"status": 200, "body": self._apply(s)} for s in subs]
        if self.lose:
            status = self.lose.pop(0)
            if status is None:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            return httpx.Response(status, json={"message": "lost"})
        return httpx.Response(200, json=answers)

    def _apply(self, sub: dict[str, Any]) -> dict[str, Any]:
        if sub["method"] == "POST":
            row_id = f"r{len(self.rows) + 1}"
            self.rows[row_id] = {"id": row_id, **sub["body"]}
        else:
            row_id = sub["url"].rsplit("/", 1)[1]
            self.rows[row_id] = {"id": row_id, **sub["body"]}
        return self.rows[row_id]

    def keys(self) -> Counter[str]:
        return Counter(r["external_id"] for r in self.rows.values())


async def load(tmp_path: Path, load_job: LoadJob, staged: list[dict[str, Any]]) -> JobReport:
    async with batch_context(tmp_path, {"dest": (API, Credentials(api_key=SecretStr("batch-key-1234")))}) as ctx:
        await ctx.stage.append(ctx.stage_key("shape"), staged)
        report = JobReport(job="Load", kind="load", job_id="j1")
        await run_load(load_job, ctx, report, ErrorSink(ctx, "Load", "j1"), source=ctx.stage_key("shape"))
        return report


def customer(n: int, name: str = "") -> dict[str, Any]:
    return {"external_id": str(n), "name": name or f"Co {n}"}


# Keys 1-4 are there already, two of them renamed: a batch of 2 updates and 4 creates (keys 5-8).
STAGED = [customer(1), customer(2, "Renamed 2"), customer(3), customer(4, "Renamed 4"), *map(customer, range(5, 9))]


@pytest.mark.parametrize(
    "transactional,lose,refuse,batches",
    [
        # landed, answer lost: the creates are looked up and found; the updates are sent again (harmless), or not
        # at all where the batch is one transaction (a create of it landed, so all of it did)
        (False, [429], [], [{"PUT": 2, "POST": 4}, {"PUT": 2}]),
        (False, [503], [], [{"PUT": 2, "POST": 4}, {"PUT": 2}]),
        (False, [None], [], [{"PUT": 2, "POST": 4}, {"PUT": 2}]),
        (True, [429], [], [{"PUT": 2, "POST": 4}]),
        # refused before it was applied (a rate limiter's 429): nothing found, the whole batch is sent again
        (False, [], [429], [{"PUT": 2, "POST": 4}, {"PUT": 2, "POST": 4}]),
        (True, [], [503], [{"PUT": 2, "POST": 4}, {"PUT": 2, "POST": 4}]),
    ],
    ids=["landed-429", "landed-5xx", "landed-dropped", "transactional-landed-429", "refused-429", "refused-5xx"],
)
@respx.mock
async def test_a_batch_of_creates_whose_answer_was_lost_writes_each_key_once(
    tmp_path: Path, transactional: bool, lose: list[int | None], refuse: list[int], batches: list[dict[str, int]]
) -> None:
    api = BatchApi(respx.mock)
    await load(tmp_path, job(), [customer(n) for n in range(1, 5)])
    api.batches.clear()
    api.lose, api.refuse = list(lose), list(refuse)

    report = await load(tmp_path, job(transactional=transactional), STAGED)

    assert api.keys() == Counter(str(n) for n in range(1, 9)), "every key once: no duplicate, nothing missing"
    assert {r["external_id"]: r["name"] for r in api.rows.values()} == {s["external_id"]: s["name"] for s in STAGED}
    assert api.batches == [Counter(b) for b in batches]
    assert (report.counts["inserted"], report.counts["updated"], report.counts["unchanged"]) == (4, 2, 2)
    rerun = await load(tmp_path, job(transactional=transactional), STAGED)
    assert rerun.counts["unchanged"] == 8 and len(api.batches) == len(batches)


@respx.mock
async def test_a_batch_refused_at_every_attempt_fails_the_job_and_its_rerun_converges(tmp_path: Path) -> None:
    api = BatchApi(respx.mock)
    api.refuse = [503] * API.max_attempts
    with pytest.raises(RetriableError):
        await load(tmp_path, job(), STAGED[4:])
    assert len(api.batches) == API.max_attempts and not api.rows
    report = await load(tmp_path, job(), STAGED[4:])
    assert api.keys() == Counter(str(n) for n in range(5, 9)) and report.counts["inserted"] == 4
