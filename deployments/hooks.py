"""The hook receiver: an ASGI app (Starlette) with one URL per batch type and tenant, in front of the intake.

Each request is checked in this order, and every refusal is counted: body size (413), JSON (400), tenant
(404), signature (401: wrong, missing or stale), rate (429, with `Retry-After`), shape (422: no record or id
where the endpoint says). An accepted hook rests on the stage before the answer, 202 `{"status": "accepted"}`;
a repeat of an event id already stored is answered 200 `{"status": "duplicate"}` and dropped. A stage that
cannot be written is 503, so the source retries. The receiver never waits for a batch: micro-batches start from
the debouncer, in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from prefect_restful_etl.deployments.hook_runs import Dispatcher
from prefect_restful_etl.tasks.engine.exceptions import StageError
from prefect_restful_etl.tasks.engine.hooks.config import HookEndpoint, HookFeed, HooksConfig
from prefect_restful_etl.tasks.engine.hooks.counts import (
    ACCEPTED,
    BATCHED,
    DUPLICATES,
    FAILED,
    MICRO_BATCHES,
    REFUSED,
    IntakeCounts,
)
from prefect_restful_etl.tasks.engine.hooks.debounce import Debouncer, Group
from prefect_restful_etl.tasks.engine.hooks.intake import Intake
from prefect_restful_etl.tasks.engine.hooks.rate import TokenBuckets
from prefect_restful_etl.tasks.engine.hooks.signature import SignatureRefused, verify
from prefect_restful_etl.tasks.engine.http.paths import get_path

logger = logging.getLogger(__name__)
RECEIVED, BATCHED_EVENT = "restful-etl.hook.received", "restful-etl.hook.batched"
_MAX_EVENT_ID = 200
MAX_SEGMENTS = 4  # segments a micro-batch takes (each about max_events events at most)
_UNSET = object()


class Refused(Exception):
    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.reason, self.headers = status, reason, headers
        super().__init__(message)


@dataclass
class Endpoint:
    """An endpoint with what the receiver opened for it: the micro-batch's feed, and each tenant's secret."""

    config: HookEndpoint
    feed: HookFeed
    secrets: dict[str, SecretStr]


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


class HookReceiver:
    """`receiver.app` is the ASGI app; its lifespan recovers stored events, flushes counts and stops cleanly."""

    def __init__(
        self, config: HooksConfig, endpoints: list[Endpoint], intake: Intake, dispatcher: Dispatcher, *, emit: bool
    ) -> None:
        self.config, self.intake, self.dispatcher, self.emit = config, intake, dispatcher, emit
        self.endpoints = {endpoint.config.batch_type: endpoint for endpoint in endpoints}
        self.counts = IntakeCounts(intake)
        self.unknown: Counter[str] = Counter()  # refusals before a tenant was known, `<batch type>.<reason>`
        self.buckets = TokenBuckets()
        self.debouncer = Debouncer(self._fire)
        self.runs: list[dict[str, Any]] = []  # the micro-batches started, newest last (the status page's)
        routes = [Route(e.config.url_path, self._handler(e), methods=["POST"]) for e in endpoints]
        routes.append(Route("/_status", self._status, methods=["GET"]))
        self.app = Starlette(routes=routes, lifespan=self._lifespan)
        self._flusher: asyncio.Task[None] | None = None
        self._sealing: set[asyncio.Task[list[str]]] = set()

    # --- lifespan ----------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        """Events stored before a restart (open or sealed segments) get their micro-batch."""
        for batch_type, endpoint in self.endpoints.items():
            for tenant in endpoint.config.tenants:
                waiting = await self.intake.waiting(tenant, batch_type)
                if waiting:
                    logger.info("%s/%s: %d stored events waiting", batch_type, tenant, waiting)
                    self._notify(endpoint, tenant, waiting)
        self._flusher = asyncio.create_task(self._flush_every_second())

    async def stop(self) -> None:
        await self.debouncer.close()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(StageError):
            await self.counts.flush()

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.counts.flush()
            except StageError as ex:
                logger.warning("intake counts not written: %s", ex)

    # --- one hook ------------------------------------------------------------------------------------------------

    def _handler(self, endpoint: Endpoint) -> Any:
        async def handle(request: Request) -> Response:
            return await self._receive(endpoint, request)

        return handle

    async def _receive(self, endpoint: Endpoint, request: Request) -> Response:
        config = endpoint.config
        tenant = self._tenant(config, request)
        known = tenant if tenant in config.tenants else None
        try:
            body, parsed = await _body(request, config.max_body_bytes), _UNSET
            if config.tenant.type == "body":
                parsed = _parse(body)
                tenant = _text(get_path(parsed, config.tenant.path)) if isinstance(parsed, dict) else None
                known = tenant if tenant in config.tenants else None
            if known is None:
                raise Refused(404, "unknown_tenant", "no such tenant for this batch type's hooks")
            return await self._accept(endpoint, known, request, body, parsed)
        except Refused as ex:
            if known is None:
                self.unknown[f"{config.batch_type}.{ex.reason}"] += 1
            else:
                self.counts.add(known, config.batch_type, f"{REFUSED}.{ex.reason}")
            return _json({"status": "refused", "reason": ex.reason, "detail": str(ex)}, ex.status, ex.headers)

    async def _accept(self, endpoint: Endpoint, tenant: str, request: Request, body: bytes, parsed: Any) -> Response:
        config, group = endpoint.config, (tenant, endpoint.config.batch_type)
        try:
            verify(config.signature, endpoint.secrets[tenant].get_secret_value(), body, request.headers)
        except SignatureRefused as ex:
            raise Refused(401, ex.reason, str(ex)) from None
        payload = _parse(body) if parsed is _UNSET else parsed
        if not isinstance(payload, dict):
            raise Refused(400, "not_json", "the body is not a JSON object")
        if not self.buckets.take(group, config.rate):
            wait = max(1, round(self.buckets.retry_after(group, config.rate)))
            raise Refused(429, "rate", "over this tenant's rate of hooks", {"Retry-After": str(wait)})
        event_id = _event_id(config, request, payload, body)
        entry = {**_carried(config, payload), "received_at": datetime.now(UTC).isoformat()}
        try:
            segment = await self.intake.accept(tenant, config.batch_type, event_id, entry)
        except StageError as ex:
            logger.warning("hook of %s/%s not stored: %s", config.batch_type, tenant, ex)
            raise Refused(503, "stage", "the hook could not be stored; send it again", {"Retry-After": "5"}) from None
        if segment is None:
            self.counts.add(tenant, config.batch_type, DUPLICATES)
            return _json({"status": "duplicate", "event_id": event_id}, 200)
        self.counts.add(tenant, config.batch_type, ACCEPTED)
        self._notify(endpoint, tenant)
        self._emit(RECEIVED, tenant, config.batch_type, {"event_id": event_id, "segment": segment})
        return _json({"status": "accepted", "event_id": event_id}, 202)

    def _tenant(self, config: HookEndpoint, request: Request) -> str | None:
        if config.tenant.type == "path":
            return str(request.path_params.get("tenant") or "") or None
        if config.tenant.type == "header":
            return request.headers.get(config.tenant.name) or None
        return None

    # --- micro-batches -----------------------------------------------------------------------------------------

    def _notify(self, endpoint: Endpoint, tenant: str, count: int = 1) -> None:
        config = endpoint.config
        group = (tenant, config.batch_type)
        before = self.debouncer.waiting(group)
        self.debouncer.notify(group, delay=config.debounce_seconds, max_events=config.max_events, count=count)
        if before // config.max_events < self.debouncer.waiting(group) // config.max_events:
            # a segment holds about max_events at most, even while a micro-batch runs: each run's share is bounded
            task = asyncio.create_task(self.intake.seal(tenant, config.batch_type))
            self._sealing.add(task)
            task.add_done_callback(self._sealing.discard)

    async def _fire(self, group: Group, waiting: int) -> bool:
        """Seal what waits, run one micro-batch of it, and forget it once the run completed."""
        tenant, batch_type = group
        endpoint = self.endpoints[batch_type]
        waiting_segments = await self.intake.seal(tenant, batch_type)
        if not waiting_segments:
            return True
        segments = waiting_segments[:MAX_SEGMENTS]  # a backlog goes in runs of bounded size, oldest first
        hooks = endpoint.config.tenants[tenant]
        parameters = {
            "tenant_id": tenant,
            "batch_type": batch_type,
            "segments": segments,
            "feed": endpoint.feed.model_dump(mode="json"),
            "receiver": self.intake.receiver,
            "sealed_credentials": hooks.sealed_credentials,
            "base_urls": hooks.base_urls,
            "api_blocks": hooks.api_blocks,
        }
        parameters = {name: value for name, value in parameters.items() if value is not None}
        tags = [f"tenant:{tenant}", f"batch-type:{batch_type}", "hooks"]
        self.counts.add(tenant, batch_type, BATCHED, waiting)
        self.counts.add(tenant, batch_type, MICRO_BATCHES)
        run = {"tenant": tenant, "batch_type": batch_type, "segments": len(segments), "events": waiting}
        self.runs = [*self.runs[-99:], run]
        run_id, state = await self.dispatcher.run(parameters, tags)
        run.update(run_id=run_id, state=state)
        self._emit(BATCHED_EVENT, tenant, batch_type, {"events": waiting, "segments": segments, "batch_id": run_id,
                                                       "state": state})  # fmt: skip
        if state != "COMPLETED":
            self.counts.add(tenant, batch_type, FAILED)
            logger.warning("micro-batch %s of %s/%s ended %s: tried again later", run_id, batch_type, tenant, state)
            return False
        await self.intake.done(tenant, batch_type, segments)
        if len(waiting_segments) > len(segments):
            self._notify(endpoint, tenant)  # the rest of a backlog: its own micro-batch, at once
        return True

    def _emit(self, name: str, tenant: str, batch_type: str, payload: dict[str, Any]) -> None:
        if not self.emit:
            return
        from prefect.events import emit_event

        related = [
            {"prefect.resource.id": f"restful-etl.tenant.{tenant}", "prefect.resource.role": "tenant"},
            {"prefect.resource.id": f"restful-etl.batch-type.{batch_type}", "prefect.resource.role": "batch-type"},
        ]
        resource = {"prefect.resource.id": f"restful-etl.hooks.{batch_type}.{tenant}", "restful-etl.tenant": tenant}
        try:
            emit_event(name, resource=resource, related=related, payload={"tenant_id": tenant, **payload})
        except Exception as ex:  # an event is news, not the record: the hook is stored already
            logger.warning("event %s not emitted: %s", name, type(ex).__name__)

    async def _status(self, request: Request) -> Response:
        """This receiver's counts and micro-batches, for an operator on its own machine: it names tenants, so a
        client from elsewhere (the sources reach the receiver) is answered 404."""
        if request.client is None or request.client.host not in ("127.0.0.1", "::1"):
            return _json({"detail": "Not Found"}, 404)
        waiting = {
            f"{bt}/{t}": self.debouncer.waiting((t, bt)) for bt, e in self.endpoints.items() for t in e.config.tenants
        }
        body = {
            "receiver": self.intake.receiver,
            "counts": self.counts.snapshot(),
            "unknown_tenant": dict(self.unknown),
            "waiting": waiting,
            "micro_batches": self.runs[-20:],
        }
        return _json(body, 200)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, "too_large", f"the body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, "too_large", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Refused(400, "not_json", "the body is not JSON") from None


def _text(value: Any) -> str | None:
    return None if value is None or isinstance(value, (dict, list)) else str(value)


def _event_id(config: HookEndpoint, request: Request, payload: dict[str, Any], body: bytes) -> str:
    """The source's event id, or the body's SHA-256 (a retry sends the same body)."""
    ref, found = config.event_id, None
    if ref is not None:
        found = (
            request.headers.get(ref.name) if ref.type == "header" and ref.name else _text(get_path(payload, ref.path))
        )
    if not found or len(found) > _MAX_EVENT_ID:
        return "sha256:" + hashlib.sha256(body if not found else found.encode()).hexdigest()
    return found


def _carried(config: HookEndpoint, payload: dict[str, Any]) -> dict[str, Any]:
    """What the event carries for its micro-batch: records, or ids to fetch."""
    if config.ids is not None:
        ids = get_path(payload, config.ids)
        ids = ids if isinstance(ids, list) else [ids]
        if not ids or any(ident is None or isinstance(ident, (dict, list)) for ident in ids):
            raise Refused(422, "shape", f"no id at {config.ids}")
        return {"ids": ids}
    records = get_path(payload, config.records)
    records = records if isinstance(records, list) else [records]
    if not records or not all(isinstance(record, dict) for record in records):
        raise Refused(422, "shape", f"no record at {config.records or 'the body'}")
    return {"records": records}
