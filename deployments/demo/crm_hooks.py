"""The demo CRM's outgoing hooks: once subscribed through `POST /_control/hooks`, every customer it creates or
changes is POSTed to the subscriber's URL, signed as Stripe signs (`Crm-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`):

```json
{"id": "evt_3f1c9a...", "type": "customer.updated", "created": 1767225600,
 "data": {"object": {"id": 7, "email": "...", "updated_at": "2026-03-01T10:00:00.000Z", ...}}}
```
With `"mode": "id"` the hook carries only `"data": {"id": 7}` and the receiver reads the customer by key.
A hook the subscriber does not accept (a network error, 5xx, 429) is sent again, up to `attempts` times.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid
from collections import Counter
from typing import Any, Literal

import httpx
import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Record = dict[str, Any]


class HookSubscription(BaseModel):
    """`POST /_control/hooks` `{"url": "http://127.0.0.1:8787/hooks/crm-to-accounting/demo", "secret": "..."}`."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = Field(min_length=1)
    secret: str = Field(min_length=1, repr=False)
    mode: Literal["record", "id"] = "record"
    header: str = "Crm-Signature"
    attempts: int = Field(default=5, ge=1, le=20)


class HookSender:
    """Sends a hook per change to every subscriber, in the background: a write never waits for a subscriber."""

    def __init__(self) -> None:
        self.subscriptions: list[HookSubscription] = []
        self.counts: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def changed(self, kind: str, record: Record) -> None:
        for subscription in self.subscriptions:
            body = hook_body(kind, record, subscription.mode)
            task = asyncio.get_running_loop().create_task(self._send(subscription, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, subscription: HookSubscription, body: bytes) -> None:
        self._client = self._client or httpx.AsyncClient(timeout=10)
        for attempt in range(subscription.attempts):
            headers = {"Content-Type": "application/json", **signed(subscription, body)}
            try:
                response = await self._client.post(subscription.url, content=body, headers=headers)
                if response.status_code < 500 and response.status_code != 429:
                    self.counts["sent" if response.is_success else "refused"] += 1
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
        self.counts["failed"] += 1

    def clear(self) -> None:
        self.subscriptions.clear()
        self.counts.clear()


def hook_body(kind: str, record: Record, mode: str) -> bytes:
    data = {"id": record["id"]} if mode == "id" else {"object": record}
    event = {"id": f"evt_{uuid.uuid4().hex}", "type": kind, "created": int(time.time()), "data": data}
    return orjson.dumps(event)


def signed(subscription: HookSubscription, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(subscription.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {subscription.header: f"t={stamp},v1={digest}"}


def hooks_router(sender: HookSender, prefix: str) -> APIRouter:
    """`POST /_control/hooks` subscribes, `DELETE` ends every subscription, `GET` counts what was sent."""
    router = APIRouter(prefix=prefix, tags=["control"])

    @router.post("/hooks", status_code=201)
    async def subscribe(request: Request) -> Response:
        try:
            subscription = HookSubscription.model_validate(orjson.loads(await request.body()))
        except (orjson.JSONDecodeError, ValidationError):
            return Response(b'{"detail": "body: url and secret are required"}', 422, media_type="application/json")
        sender.subscriptions.append(subscription)
        return Response(orjson.dumps({"subscriptions": len(sender.subscriptions)}), 201, media_type="application/json")

    @router.delete("/hooks")
    async def unsubscribe() -> Response:
        sender.clear()
        return Response(orjson.dumps({"subscriptions": 0}), media_type="application/json")

    @router.get("/hooks")
    async def sent() -> Response:
        body = {"subscriptions": len(sender.subscriptions), **sender.counts, "in_flight": len(sender._tasks)}
        return Response(orjson.dumps(body), media_type="application/json")

    return router
