from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from engine_support import batch_context
from pydantic import SecretStr, ValidationError

from prefect_restful_etl.tasks.engine.context import ErrorSink
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import DestinationDataError, LoadLimitExceeded, RetriableError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.client import RateLimiter, RestClient
from prefect_restful_etl.tasks.engine.load.job import LoadJob, run_load
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey

BASE = "https://acct.example.com"
KEY = "acct-key-123456"
AT = datetime(2026, 3, 1, tzinfo=UTC)
AT_TEXT = "2026-03-01T00:00:00.000000Z"
API = ApiConfig.model_validate(
    {
        "name": "acct",
        "base_url": BASE,
        "auth": {"type": "api_key"},
        "max_attempts": 2,
        "backoff_base": 0,
        "paginator": {"type": "page_number", "page_size": 2, "total_path": "total"},
    }
)
JOB: dict[str, Any] = {
    "kind": "load",
    "name": "Load",
    "source": "Extract",
    "api": "acct",
    "endpoint": {"path": "/customers", "records_path": "data"},
    "natural_key": ["external_id"],
    "compare": ["name", "email"],
}


def job(**changes: Any) -> LoadJob:
    return LoadJob.model_validate(JOB | changes)


class FakeDestination:
    """A destination API in memory behind respx: list (paged, filtered by external_id), create, PUT, PATCH, DELETE."""

    def __init__(self, router: respx.MockRouter, rows: list[dict[str, Any]] | None = None) -> None:
        self.rows = {r["id"]: dict(r) for r in rows or []}
        self.calls: list[tuple[str, str]] = []
        self.refuse: set[str] = set()  # external ids whose writes answer 422
        self.refuse_once: set[str] = set()  # row ids whose next PUT/PATCH/DELETE answers 422
        self.in_flight = self.peak = 0
        router.get(f"{BASE}/customers").mock(side_effect=self._list)
        router.post(f"{BASE}/customers").mock(side_effect=self._create)
        router.route(method__in=["PUT", "PATCH", "DELETE"], url__regex=rf"{BASE}/customers/[^/]+$").mock(
            side_effect=self._one
        )

    def _list(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(("GET", str(request.url.params)))
        page, size = int(request.url.params.get("page", 1)), int(request.url.params.get("per_page", 2))
        wanted = request.url.params.get("external_id")
        rows = [r for r in self.rows.values() if wanted is None or r.get("external_id") == wanted]
        return httpx.Response(200, json={"data": rows[(page - 1) * size : page * size], "total": len(rows)})

    async def _create(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(("POST", body["external_id"]))
        if body["external_id"] in self.refuse:
            return httpx.Response(422, json={"detail": "email: is not valid"})
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        for _ in range(5):
            await asyncio.sleep(0)  # let the other writes in, so the peak shows what the load allows
        self.in_flight -= 1
        row_id = f"AC-{len(self.rows) + 1}"
        self.rows[row_id] = {"id": row_id, **body}
        return httpx.Response(201, json=self.rows[row_id])

    def _one(self, request: httpx.Request) -> httpx.Response:
        row_id = request.url.path.rsplit("/", 1)[1]
        self.calls.append((request.method, row_id))
        if row_id not in self.rows:
            return httpx.Response(404, json={"detail": "not found"})
        if row_id in self.refuse_once:
            self.refuse_once.discard(row_id)
            return httpx.Response(422, json={"detail": "valid_to: refused"})
        if request.method == "DELETE":
            del self.rows[row_id]
            return httpx.Response(204)
        body = json.loads(request.content)
        self.rows[row_id] = {"id": row_id, **body} if request.method == "PUT" else {**self.rows[row_id], **body}
        return httpx.Response(200, json=self.rows[row_id])

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "GET"]


async def load(
    tmp_path: Path,
    load_job: LoadJob,
    staged: list[dict],
    *,
    full_refresh: bool = False,
    dry_run: bool = False,
    limiter: RateLimiter | None = None,
    chunk: int | None = None,
    stage: Stage | None = None,
) -> tuple[JobReport, list]:
    apis = {"acct": (API, Credentials(api_key=SecretStr(KEY)))}
    async with batch_context(tmp_path, apis, full_refresh=full_refresh) as ctx:
        ctx.dry_run, ctx.effective_at = dry_run, AT
        if limiter is not None:  # the run's limiter for this API, as flows/resources.py shares it
            await ctx.clients["acct"].aclose()
            ctx.clients["acct"] = RestClient(API, Credentials(api_key=SecretStr(KEY)), rate_limiter=limiter)
        ctx.stage = stage or ctx.stage
        if chunk is not None:
            ctx.stage = SmallChunks(ctx.stage, chunk)  # type: ignore[assignment]
        await ctx.stage.append(ctx.stage_key("extract"), staged)
        report = JobReport(job="Load", kind="load", job_id="j1")
        try:
            await run_load(load_job, ctx, report, ErrorSink(ctx, "Load", "j1"), source=ctx.stage_key("extract"))
        finally:
            report.counts["events"] = len(await ctx.audit.error_events(ctx.batch_id))
        return report, list(await ctx.audit.error_events(ctx.batch_id))


class SmallChunks:
    """Reads the stage it wraps in chunks of `size`, so a key can come back in a later chunk of a small test."""

    def __init__(self, stage: Stage, size: int) -> None:
        self.stage, self.size = stage, size

    def read(self, key: StageKey, chunk_size: int = 1000) -> AsyncIterator[list[dict[str, Any]]]:
        return self.stage.read(key, self.size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stage, name)


def row(n: int, email: str | None = None, **more: Any) -> dict[str, Any]:
    return {"id": f"AC-{n}", "external_id": str(n), "name": f"Co {n}", "email": email or f"{n}@co.io", **more}


def staged(n: int, email: str | None = None) -> dict[str, Any]:
    return {"external_id": str(n), "name": f"Co {n}", "email": email or f"{n}@co.io"}


def counts(report: JobReport, *names: str) -> tuple[int, ...]:
    return tuple(report.counts[n] for n in names)


@respx.mock
async def test_type1_inserts_updates_and_skips_across_pages(tmp_path: Path, stage: Stage) -> None:
    dest = FakeDestination(respx.mock, [row(1), row(2, "old@co.io"), row(4)])
    report, errors = await load(tmp_path, job(), [staged(1), staged(2), staged(3)], stage=stage)
    assert counts(report, "read", "inserted", "updated", "unchanged", "failed_writes") == (3, 1, 1, 1, 0)
    assert sorted(dest.writes()) == [("POST", "3"), ("PUT", "AC-2")]
    assert [c for c in dest.calls if c[0] == "GET"] == [("GET", "page=1&per_page=2"), ("GET", "page=2&per_page=2")]
    assert dest.rows["AC-2"]["email"] == "2@co.io" and errors == []


@respx.mock
async def test_rerun_writes_nothing(tmp_path: Path, stage: Stage) -> None:
    dest = FakeDestination(respx.mock)
    for scd_type in (1, 2):
        dest.rows.clear()
        await load(tmp_path, job(scd_type=scd_type), [staged(1), staged(2, "new@co.io")], stage=stage)
        before = len(dest.writes())
        report, _ = await load(tmp_path, job(scd_type=scd_type), [staged(1), staged(2, "new@co.io")], stage=stage)
        assert len(dest.writes()) == before and report.counts["unchanged"] == 2


@respx.mock
async def test_type0_never_touches_an_existing_key(tmp_path: Path) -> None:
    dest = FakeDestination(respx.mock, [row(1, "old@co.io")])
    report, _ = await load(tmp_path, job(scd_type=0), [staged(1), staged(2)])
    assert dest.writes() == [("POST", "2")] and dest.rows["AC-1"]["email"] == "old@co.io"
    assert counts(report, "inserted", "updated", "unchanged") == (1, 0, 1)


@respx.mock
async def test_type2_inserts_the_new_version_then_expires_the_old(tmp_path: Path, stage: Stage) -> None:
    old = row(1, "old@co.io", valid_from="2026-01-01T00:00:00.000000Z", valid_to=None, is_current=True, version=1)
    history = row(
        9,
        "older@co.io",
        valid_from="2025-01-01T00:00:00.000000Z",
        valid_to="2026-01-01T00:00:00.000000Z",
        is_current=False,
        version=0,
    ) | {"external_id": "1"}
    dest = FakeDestination(respx.mock, [history, old])
    report, _ = await load(tmp_path, job(scd_type=2), [staged(1), staged(2)], stage=stage)
    assert counts(report, "inserted", "updated", "expired", "unchanged") == (1, 1, 1, 0)
    assert sorted(dest.writes()) == [("PATCH", "AC-1"), ("POST", "1"), ("POST", "2")]
    assert dest.writes().index(("POST", "1")) < dest.writes().index(("PATCH", "AC-1"))
    versions = sorted((r for r in dest.rows.values() if r["external_id"] == "1"), key=lambda r: r["version"])
    assert [(v["version"], v["is_current"], v["valid_to"]) for v in versions] == [
        (0, False, "2026-01-01T00:00:00.000000Z"),
        (1, False, AT_TEXT),
        (2, True, None),
    ]
    assert versions[2]["valid_from"] == AT_TEXT and versions[2]["email"] == "1@co.io"


@respx.mock
async def test_type2_a_refused_expiry_is_mended_by_the_next_run(tmp_path: Path, stage: Stage) -> None:
    old = row(1, "old@co.io", valid_from="2026-01-01T00:00:00.000000Z", valid_to=None, is_current=True, version=1)
    dest = FakeDestination(respx.mock, [old])
    dest.refuse_once = {"AC-1"}
    report, errors = await load(tmp_path, job(scd_type=2), [staged(1, "a@co.io"), staged(2)], stage=stage)
    assert (report.counts["failed_writes"], len(errors), report.counts["expired"]) == (1, 1, 0)
    assert counts(report, "inserted", "updated") == (1, 1), "key 1's new version landed: it counts"
    assert sum(r["is_current"] for r in dest.rows.values() if r["external_id"] == "1") == 2
    again, _ = await load(tmp_path, job(scd_type=2), [staged(1, "a@co.io"), staged(2)], stage=stage)
    versions = sorted(dest.rows.values(), key=lambda r: (r["external_id"], r["version"]))
    assert [(r["external_id"], r["version"], r["email"], r["is_current"], r["valid_to"]) for r in versions] == [
        ("1", 1, "old@co.io", False, AT_TEXT),
        ("1", 2, "a@co.io", True, None),
        ("2", 1, "2@co.io", True, None),
    ]
    assert counts(again, "unchanged", "expired", "failed_writes") == (2, 1, 0)


TYPE2_ROW = {"valid_from": "2026-01-01T00:00:00.000000Z", "valid_to": None, "is_current": True, "version": 1}


@pytest.mark.parametrize(
    "scd_type,writes",
    [(1, [("POST", "2"), ("PUT", "AC-1")]), (2, [("PATCH", "AC-1"), ("POST", "1"), ("POST", "2")])],
    ids=["type1", "type2"],
)
@respx.mock
async def test_a_key_in_two_chunks_is_written_once_with_its_last_record(
    tmp_path: Path, stage: Stage, scd_type: int, writes: list
) -> None:
    dest = FakeDestination(respx.mock, [row(1, "old@co.io", **(TYPE2_ROW if scd_type == 2 else {}))])
    records = [staged(1, "a@co.io"), staged(2), staged(1, "b@co.io")]  # chunks of two: key 1 in both
    report, _ = await load(tmp_path, job(scd_type=scd_type), records, chunk=2, stage=stage)
    assert sorted(dest.writes()) == writes
    assert counts(report, "read", "inserted", "updated", "unchanged", "duplicates") == (3, 1, 1, 0, 1)
    ones = sorted((r for r in dest.rows.values() if r["external_id"] == "1"), key=lambda r: r.get("version", 0))
    assert [r["email"] for r in ones] == (["b@co.io"] if scd_type == 1 else ["old@co.io", "b@co.io"])
    if scd_type == 2:
        assert [(r["valid_from"], r["valid_to"]) for r in ones] == [(TYPE2_ROW["valid_from"], AT_TEXT), (AT_TEXT, None)]
    again, _ = await load(tmp_path, job(scd_type=scd_type), records, chunk=2, stage=stage)
    assert len(dest.writes()) == len(writes), "a rerun writes nothing"
    assert counts(again, "unchanged", "duplicates") == (2, 1)


@pytest.mark.parametrize(
    "flags,expected",
    [
        (("1", "0", "2", "1"), "unchanged"),
        ((1, 0, 2, 1), "unchanged"),
        (("TRUE", "false", "2", "1"), "unchanged"),
        (("maybe", False, 2, 1), "is_current: destination row 'AC-1': 'maybe' is not a current flag"),
        ((True, False, "two", 1), "version: destination row 'AC-1': 'two' is not a version number"),
    ],
    ids=["text-digits", "numbers", "words", "unreadable-flag", "unreadable-version"],
)
@respx.mock
async def test_type2_reads_the_common_encodings_of_flags_and_versions(
    tmp_path: Path, stage: Stage, flags: tuple, expected: str
) -> None:
    current, closed, current_version, closed_version = flags
    dest = FakeDestination(
        respx.mock,
        [
            row(
                9,
                valid_from="2025-01-01T00:00:00.000000Z",
                valid_to="2026-01-01T00:00:00.000000Z",
                is_current=closed,
                version=closed_version,
            )
            | {"external_id": "1"},
            row(
                1, valid_from="2026-01-01T00:00:00.000000Z", valid_to=None, is_current=current, version=current_version
            ),
        ],
    )
    if expected != "unchanged":
        with pytest.raises(DestinationDataError, match=re.escape(expected)):
            await load(tmp_path, job(scd_type=2), [staged(1), staged(2)], stage=stage)
        assert dest.writes() == [], "nothing is written when a destination row cannot be read"
        return
    report, _ = await load(tmp_path, job(scd_type=2), [staged(1)], stage=stage)
    assert report.counts["unchanged"] == 1 and dest.writes() == []


@pytest.mark.parametrize(
    "missing,scd_type,full_refresh,write,outcome",
    [
        ("delete", 1, True, ("DELETE", "AC-2"), "deleted"),
        (
            {"action": "soft_delete", "soft_delete": {"field": "status", "value": "gone"}},
            1,
            True,
            ("PATCH", "AC-2"),
            "deleted",
        ),
        ("expire", 2, True, ("PATCH", "AC-2"), "expired"),
        ("delete", 1, False, None, None),
        ("ignore", 1, True, None, None),
    ],
    ids=["hard-delete", "soft-delete", "type2-expire", "incremental-batch-keeps-all", "ignore"],
)
@respx.mock
async def test_keys_missing_from_a_full_refresh(
    tmp_path: Path,
    stage: Stage,
    missing: Any,
    scd_type: int,
    full_refresh: bool,
    write: tuple | None,
    outcome: str | None,
) -> None:
    extra = {"valid_from": "2026-01-01T00:00:00.000000Z", "valid_to": None, "is_current": True, "version": 1}
    rows = [row(n, **(extra if scd_type == 2 else {})) for n in (1, 2, 3)]
    dest = FakeDestination(respx.mock, rows)
    report, _ = await load(
        tmp_path,
        job(scd_type=scd_type, missing=missing),
        [staged(1), staged(3)],
        full_refresh=full_refresh,
        stage=stage,
    )
    assert dest.writes() == ([write] if write else [])
    if outcome:
        assert report.counts[outcome] == 1
    if scd_type == 2:
        assert (dest.rows["AC-2"]["valid_to"], dest.rows["AC-2"]["is_current"]) == (AT_TEXT, False)
    _again, _ = await load(
        tmp_path,
        job(scd_type=scd_type, missing=missing),
        [staged(1), staged(3)],
        full_refresh=full_refresh,
        stage=stage,
    )
    assert len(dest.writes()) == (1 if write else 0), "the second full refresh removes nothing more"


@respx.mock
async def test_a_full_refresh_that_would_remove_too_much_removes_nothing(tmp_path: Path, stage: Stage) -> None:
    dest = FakeDestination(respx.mock, [row(n) for n in range(1, 5)])
    with pytest.raises(LoadLimitExceeded, match="3 of the destination's 4 live keys"):
        await load(tmp_path, job(missing="delete"), [staged(1)], full_refresh=True, stage=stage)
    assert dest.writes() == []


@respx.mock
async def test_max_fraction_counts_the_destination_before_this_runs_inserts(tmp_path: Path, stage: Stage) -> None:
    """An extract whose keys all changed form ("7" -> "007") inserts them all: that must not hide that every key
    the destination held is missing."""
    dest = FakeDestination(respx.mock, [row(n) for n in range(1, 5)])
    reformed = [staged(n) | {"external_id": f"00{n}"} for n in range(1, 5)]
    with pytest.raises(LoadLimitExceeded, match="4 of the destination's 4 live keys"):
        await load(tmp_path, job(missing="delete"), reformed, full_refresh=True, stage=stage)
    assert not [w for w in dest.writes() if w[0] == "DELETE"]


@pytest.mark.parametrize(
    "staged_keys,deleted",
    [((1, 2), []), ((1, 2, 3), []), ((1,), ["AC-2"]), ((), None)],
    ids=["every-live-key", "a-soft-deleted-key-comes-back", "half-the-live-keys", "none-of-them"],
)
@respx.mock
async def test_max_fraction_leaves_soft_deleted_keys_out(
    tmp_path: Path, stage: Stage, staged_keys: tuple, deleted: list | None
) -> None:
    """Two live keys and three soft-deleted: a refresh holding the two lacks nothing."""
    soft = {"action": "soft_delete", "soft_delete": {"field": "status", "value": "gone"}}
    dest = FakeDestination(respx.mock, [row(1), row(2)] + [row(n, status="gone") for n in (3, 4, 5)])
    records = [staged(n) for n in staged_keys]
    if deleted is None:
        with pytest.raises(LoadLimitExceeded, match="2 of the destination's 2 live keys"):
            await load(tmp_path, job(missing=soft), records, full_refresh=True, stage=stage)
        return
    report, _ = await load(tmp_path, job(missing=soft), records, full_refresh=True, stage=stage)
    assert [target for method, target in dest.writes() if method == "PATCH"] == deleted
    assert report.counts["deleted"] == len(deleted)


@pytest.mark.parametrize(
    "lookup,n_staged,full_refresh,expected_gets",
    [
        ({"mode": "by_key"}, 2, False, ["external_id=1&page=1&per_page=2", "external_id=2&page=1&per_page=2"]),
        (
            {"mode": "auto", "by_key_max": 2},
            2,
            False,
            ["external_id=1&page=1&per_page=2", "external_id=2&page=1&per_page=2"],
        ),
        ({"mode": "auto", "by_key_max": 1}, 2, False, ["page=1&per_page=2", "page=2&per_page=2"]),
        ({"mode": "by_key", "params": {"external_id": "external_id"}}, 1, False, ["external_id=1&page=1&per_page=2"]),
        ({"mode": "by_key"}, 2, True, ["page=1&per_page=2", "page=2&per_page=2"]),
    ],
    ids=["by-key", "auto-small-stage", "auto-large-stage", "explicit-param", "full-refresh-with-deletes-pulls"],
)
@respx.mock
async def test_lookup_pulls_or_asks_key_by_key(
    tmp_path: Path, stage: Stage, lookup: dict, n_staged: int, full_refresh: bool, expected_gets: list[str]
) -> None:
    dest = FakeDestination(respx.mock, [row(1), row(2, "old@co.io"), row(3)])
    report, _ = await load(
        tmp_path,
        job(lookup=lookup, missing="delete"),
        [staged(n) for n in (1, 2)[:n_staged]],
        full_refresh=full_refresh,
        stage=stage,
    )
    assert sorted(p for m, p in dest.calls if m == "GET") == sorted(expected_gets)
    assert ("PUT", "AC-2") in dest.writes() if n_staged == 2 else dest.writes() == []
    assert report.counts["inserted"] == 0


@respx.mock
async def test_lookup_by_key_ignores_rows_of_other_keys(tmp_path: Path) -> None:
    dest = FakeDestination(respx.mock, [row(1), row(2)])
    respx.get(f"{BASE}/customers").respond(json={"data": [row(1), row(2)], "total": 2})  # the filter is ignored
    report, _ = await load(tmp_path, job(lookup={"mode": "by_key"}), [staged(2, "new@co.io")])
    assert dest.writes() == [("PUT", "AC-2")] and report.counts["updated"] == 1


@respx.mock
async def test_bulk_upserts_in_batches_and_reports_refused_items(tmp_path: Path) -> None:
    FakeDestination(respx.mock, [row(1, "old@co.io")])
    batches: list[list[dict]] = []

    def bulk(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)
        batches.append(items)
        return httpx.Response(
            200,
            json=[
                {"id": None, "status": "error", "detail": "email: 'bad' is not valid"}
                if i["email"] == "bad"
                else {"id": f"AC-{i['external_id']}", "status": "created", "detail": None}
                for i in items
            ],
        )

    respx.post(f"{BASE}/customers/bulk").mock(side_effect=bulk)
    report, errors = await load(
        tmp_path,
        job(bulk={"path": "/customers/bulk", "batch_size": 2}),
        [staged(1), staged(2), staged(3, "bad"), staged(4)],
    )
    assert [len(b) for b in batches] == [2, 2]
    assert {i["external_id"] for b in batches for i in b} == {"1", "2", "3", "4"}
    assert counts(report, "inserted", "updated", "failed_writes") == (2, 1, 1)
    [event] = errors
    assert event.natural_key == "3" and "email: 'bad' is not valid" in event.message


@respx.mock
async def test_dry_run_reports_the_changes_and_writes_nothing(tmp_path: Path, stage: Stage) -> None:
    dest = FakeDestination(respx.mock, [row(1), row(2, "old@co.io"), row(3)])
    report, _ = await load(
        tmp_path, job(missing="delete"), [staged(1), staged(2), staged(4)], full_refresh=True, dry_run=True, stage=stage
    )
    assert dest.writes() == []
    assert counts(report, "inserted", "updated", "deleted", "unchanged", "dry_run") == (1, 1, 1, 1, 1)
    flagged, _ = await load(tmp_path, job(dry_run=True), [staged(5)], stage=stage)
    assert dest.writes() == [] and flagged.counts["inserted"] == 1


@pytest.mark.parametrize(
    "threshold,refused,raises",
    [
        (None, 3, False),
        ({"count": 3}, 3, False),
        ({"count": 2}, 3, True),
        ({"fraction": 0.5}, 2, False),
        ({"fraction": 0.5}, 3, True),
    ],
    ids=["none", "at-count", "past-count", "at-fraction", "past-fraction"],
)
@respx.mock
async def test_error_threshold(tmp_path: Path, threshold: dict | None, refused: int, raises: bool) -> None:
    dest = FakeDestination(respx.mock)
    dest.refuse = {str(n) for n in range(1, refused + 1)}
    records = [staged(n) for n in range(1, 5)]
    if raises:
        with pytest.raises(LoadLimitExceeded, match="threshold"):
            await load(tmp_path, job(error_threshold=threshold, concurrency=1), records)
        return
    report, errors = await load(tmp_path, job(error_threshold=threshold), records)
    assert (report.counts["failed_writes"], len(errors)) == (refused, refused)
    assert all("422" in e.message and "email: is not valid" in e.message and KEY not in e.message for e in errors)


@respx.mock
async def test_too_many_refused_writes_stop_a_full_refresh_before_it_removes_keys(tmp_path: Path, stage: Stage) -> None:
    dest = FakeDestination(respx.mock, [row(9)])
    dest.refuse = {"1", "2"}
    with pytest.raises(LoadLimitExceeded, match=r"threshold\.fraction"):
        await load(
            tmp_path,
            job(missing={"action": "delete", "max_fraction": 1}, error_threshold={"fraction": 0.25}),
            [staged(n) for n in range(1, 5)],
            full_refresh=True,
            stage=stage,
        )
    assert ("DELETE", "AC-9") not in dest.writes() and "AC-9" in dest.rows


@respx.mock
async def test_without_compare_every_staged_field_is_compared(tmp_path: Path, stage: Stage) -> None:
    """Not only the first record's fields: a select step drops absent fields, so records differ in shape."""
    dest = FakeDestination(respx.mock, [row(1), row(2, "old@co.io")])
    first = {"external_id": "1", "name": "Co 1"}  # no email at all
    report, _ = await load(tmp_path, job(compare=None), [first, staged(2, "new@co.io")], stage=stage)
    assert ("PUT", "AC-2") in dest.writes() and dest.rows["AC-2"]["email"] == "new@co.io"
    assert report.counts["updated"] == 2, "record 1 lost its email: a change too"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@respx.mock
async def test_a_field_a_record_lacks_is_written_as_null_so_a_rerun_settles(tmp_path: Path, method: str) -> None:
    """Compared as null, it must be sent as null: a PATCH without it would keep the old value for ever."""
    dest = FakeDestination(respx.mock, [row(1), row(2)])
    lacking = [{"external_id": "1", "name": "Co 1"}, staged(2)]
    first, _ = await load(tmp_path, job(compare=None, update_method=method), lacking)
    again, _ = await load(tmp_path, job(compare=None, update_method=method), lacking)
    assert (first.counts["updated"], again.counts["updated"], again.counts["unchanged"]) == (1, 0, 2)
    assert dest.rows["AC-1"]["email"] is None


@respx.mock
async def test_audit_columns_are_stamped_and_never_compared(tmp_path: Path) -> None:
    dest = FakeDestination(respx.mock)
    audited = job(compare=None, scd_type=2, audit_columns={"batch_id": "etl_batch_id", "loaded_at": "etl_loaded_at"})
    await load(tmp_path, audited, [staged(1)])
    [created] = dest.rows.values()
    assert created["etl_batch_id"] and created["etl_loaded_at"].endswith("Z")
    report, _ = await load(tmp_path, audited, [staged(1)])  # another batch id and time: still unchanged
    assert report.counts["unchanged"] == 1 and len(dest.writes()) == 1
    await load(tmp_path, audited, [staged(1, "new@co.io")])
    expire = dest.rows[created["id"]]
    assert expire["etl_batch_id"] == created["etl_batch_id"], "an expiry PATCH touches only the validity fields"


@respx.mock
async def test_writes_in_flight_are_bounded_by_the_job(tmp_path: Path) -> None:
    dest = FakeDestination(respx.mock)
    report, _ = await load(tmp_path, job(concurrency=3), [staged(n) for n in range(1, 21)])
    assert report.counts["inserted"] == 20 and 1 < dest.peak <= 3


@respx.mock
async def test_writes_wait_for_the_apis_rate_limit(tmp_path: Path) -> None:
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    limiter = RateLimiter(10, clock=lambda: 0.0, sleep=record)  # a frozen clock: each request queues behind the last
    dest = FakeDestination(respx.mock)
    await load(tmp_path, job(concurrency=4), [staged(n) for n in range(1, 6)], limiter=limiter)
    assert len(dest.calls) == 6 and sorted(pauses) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


@respx.mock
async def test_a_delete_already_done_counts_as_done(tmp_path: Path) -> None:
    FakeDestination(respx.mock, [row(1), row(2)])
    respx.delete(f"{BASE}/customers/AC-2").respond(404, json={"detail": "not found"})
    report, errors = await load(
        tmp_path, job(missing={"action": "delete", "max_fraction": 1}), [staged(1)], full_refresh=True
    )
    assert (report.counts["deleted"], errors) == (1, [])


@respx.mock
async def test_a_refused_record_becomes_an_error_event_and_the_load_goes_on(tmp_path: Path) -> None:
    dest = FakeDestination(respx.mock)
    dest.refuse = {"2"}
    report, errors = await load(tmp_path, job(), [staged(1), staged(2), staged(3)])
    assert counts(report, "inserted", "failed_writes") == (2, 1)
    [event] = errors
    assert (event.screen, event.natural_key, event.job) == ("load", "2", "Load")
    assert "422" in event.message and "email: is not valid" in event.message and KEY not in event.message


@respx.mock
async def test_a_key_twice_in_the_stage_is_written_once(tmp_path: Path, stage: Stage) -> None:
    dest = FakeDestination(respx.mock)
    report, _ = await load(tmp_path, job(), [staged(1, "old@co.io"), staged(1, "new@co.io")], stage=stage)
    assert dest.writes() == [("POST", "1")] and [r["email"] for r in dest.rows.values()] == ["new@co.io"]
    assert counts(report, "read", "inserted", "unchanged", "duplicates") == (2, 1, 0, 1)


@respx.mock
async def test_a_destination_that_stays_down_fails_the_job(tmp_path: Path) -> None:
    FakeDestination(respx.mock)
    respx.post(f"{BASE}/customers").respond(503)
    with pytest.raises(RetriableError, match="503"):
        await load(tmp_path, job(), [staged(1)])


class Stop(BaseException):
    """What Prefect raises in a run's process when it is cancelled (its TerminationSignal): no Exception."""


@respx.mock
async def test_a_load_stopped_mid_write_ends_with_the_stop_not_with_the_connections_it_cut(tmp_path: Path) -> None:
    """A write fails with a ReadError (its connection cut as the run's process is stopped) just before the stop
    reaches a sibling write: the job ends with the stop, audited as cancelled, not as a destination failure."""
    FakeDestination(respx.mock)

    async def create(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["external_id"] == "1":
            raise httpx.ReadError("the connection was cut", request=request)
        try:
            await asyncio.Event().wait()  # in flight until the load is torn down
        except asyncio.CancelledError:
            raise Stop() from None
        raise AssertionError("unreachable")

    respx.post(f"{BASE}/customers").mock(side_effect=create)
    with pytest.raises(Stop):
        await load(tmp_path, job(), [staged(1), staged(2)])


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"scd_type": 2, "bulk": {"path": "/customers/bulk"}}, "cannot keep type 2 history"),
        ({"scd_type": 2, "missing": "delete"}, "type 2 keeps history"),
        ({"missing": "expire"}, "closes type 2 versions"),
        ({"scd_type": 2, "compare": ["email", "valid_to"]}, "written by the load itself"),
        ({"audit_columns": {}, "compare": ["etl_loaded_at"]}, "written by the load itself"),
        ({"lookup": {"mode": "sometimes"}}, "lookup.mode"),
    ],
    ids=["type2-bulk", "type2-delete", "type1-expire", "compare-validity", "compare-audit", "unknown-lookup"],
)
def test_configuration_errors(changes: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        job(**changes)
