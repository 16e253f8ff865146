"""What a running job needs: the batch's identity, its stage, audit store, API clients and error sink."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prefect_restful_etl.tasks.engine.audit.store import AuditStore
from prefect_restful_etl.tasks.engine.audit.tables import EtlErrorEvent, utcnow
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.client import RestClient
from prefect_restful_etl.tasks.engine.report import JobReport
from prefect_restful_etl.tasks.engine.stage.base import Stage, StageKey

_MAX_VALUE_CHARS = 200


@dataclass
class BatchContext:
    """One batch's live resources; never persisted, so it may hold API clients (and so credentials)."""

    tenant_id: str
    batch_id: str
    batch_type: str
    stage: Stage
    audit: AuditStore
    clients: dict[str, RestClient]
    full_refresh: bool = False
    secrets: list[str] = field(default_factory=list, repr=False)
    # A resumed batch reads the output of jobs it reuses where the batch it resumes staged them.
    resumed_keys: dict[str, StageKey] = field(default_factory=dict)
    stage_epoch: str | None = None  # names this batch's staged data; a new one means it was lost
    progress: Callable[[JobReport], Awaitable[None]] | None = field(default=None, repr=False)
    dry_run: bool = False  # loads compute and report their changes but write nothing
    effective_at: datetime = field(default_factory=utcnow)  # when type 2 versions written by this batch begin
    key_prefix: str = "restful-etl"  # the stage's, so that audit rows name keys as the stage holds them

    async def report_progress(self, report: JobReport) -> None:
        """Runners call this after each page or chunk; the Prefect layer turns it into events (see `progress`)."""
        if self.progress is not None:
            await self.progress(report)

    def client(self, api: str) -> RestClient:
        try:
            return self.clients[api]
        except KeyError:
            raise ConfigError("api", f"{api!r} has no client in this batch") from None

    def stage_key(self, job_slug: str) -> StageKey:
        return self.resumed_keys.get(job_slug) or StageKey(self.tenant_id, self.batch_id, job_slug, self.key_prefix)


class ErrorSink:
    """Collects one job's error events and writes them in batches, not one insert per bad record."""

    def __init__(self, ctx: BatchContext, job: str, job_id: str | None, flush_every: int = 500) -> None:
        self._ctx, self._job, self._job_id, self._flush_every = ctx, job, job_id, flush_every
        self._pending: list[EtlErrorEvent] = []
        self.count = 0

    async def add(
        self,
        *,
        screen: str,
        message: str,
        natural_key: str | None = None,
        column: str | None = None,
        value: Any = None,
        severity: int = 5,
        action: str = "reject",
    ) -> None:
        self._pending.append(
            EtlErrorEvent(
                batch_id=self._ctx.batch_id,
                job_id=self._job_id,
                tenant_id=self._ctx.tenant_id,
                job=self._job,
                screen=screen,
                severity=severity,
                action=action,
                natural_key=None if natural_key is None else self.scrub(natural_key),  # a key may hold a secret
                column=column,
                value=self._safe(value),
                message=self.scrub(message),
            )
        )
        self.count += 1
        if len(self._pending) >= self._flush_every:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        await self._ctx.audit.add_error_events(pending)

    def scrub(self, text: str) -> str:
        """`text` with every secret of the batch masked: for what reaches error events or a raised error."""
        for secret in self._ctx.secrets:
            if secret and secret in text:
                text = text.replace(secret, "**********")
        return text

    def _safe(self, value: Any) -> str | None:
        if value is None:
            return None
        return self.scrub(str(value))[:_MAX_VALUE_CHARS]
