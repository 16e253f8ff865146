"""The demo accounting API: customers and bills in memory, in insertion order, behind an `X-API-Key` header.

Records keep whatever JSON fields they are given (SCD2 or audit columns too); only a few fields are validated.
A create sent with an `Idempotency-Key` header it has seen before is answered with the row that key made,
and nothing is created (`Idempotent-Replayed: true`). `POST /_control/representation {"mode": "own"}` makes
it store every value it is sent in its own representation, as many real APIs do (see `own_representation`);
`POST /_control/latency {"seconds": 0.1}` makes every write wait that long (a slow destination), and
`POST /_control/refuse-key {"external_id": "20", "status": 503, "times": 5}` refuses the creates of one key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from secrets import compare_digest
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from prefect_restful_etl.deployments.demo.crm import (
    CONTROL_PREFIX,
    MAX_PAGE_SIZE,
    ControlState,
    Record,
    add_control,
    json_object,
    json_response,
    next_link,
    read_json,
)

MAX_BULK = 100
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

Validator = Callable[[Record], str | None]


class Invalid(Exception):
    """A record the API refuses: the message names the field and why."""


_KEPT = frozenset({"id", "external_id"})  # ids and the natural key stay as sent: they are matched as text
_DECIMAL_TEXT = re.compile(r"^-?\d+\.\d+$")
_OWN_OFFSET = timezone(timedelta(hours=1))


def own_representation(value: Any) -> Any:
    """How a destination that keeps values its own way stores `value`: the same meaning, spelt differently.

    `0` -> `0.0` and `2.0` -> `2`; decimal text `"1234.50"` -> the number `1234.5`; a date and time ->
    the same instant at +01:00 with milliseconds (`2026-03-01T00:00:00Z` -> `2026-03-01T01:00:00.000+01:00`);
    a null member -> left out; an object's members in reverse order. Booleans and other text stay as they are.
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return _own_text(value)
    if isinstance(value, dict):
        return {k: own_representation(v) for k, v in reversed(value.items()) if v is not None}
    if isinstance(value, list):
        return [own_representation(v) for v in value]
    return value


def _own_text(text: str) -> Any:
    if _DECIMAL_TEXT.match(text):
        return float(text)
    if len(text) >= 16 and text[4] == "-" and text[10] in "Tt ":
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return text
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return moment.astimezone(_OWN_OFFSET).isoformat(timespec="milliseconds")
    return text


def _own_record(body: Record) -> Record:
    return {k: v if k in _KEPT else own_representation(v) for k, v in reversed(body.items()) if v is not None}


class Collection:
    """One kind of record: ids like `AC-000001` in insertion order, and an index on `external_id`."""

    def __init__(self, prefix: str, noun: str, validate: Validator) -> None:
        self.prefix, self.noun, self.validate = prefix, noun, validate
        self.reset()

    def reset(self) -> None:
        self.records: dict[str, Record] = {}
        self._by_external: dict[str, dict[str, None]] = {}  # str(external_id) -> ids, as an ordered set
        self._next = 1
        self.own_representation = False  # store values as sent
        self.idempotency: dict[str, str] = {}  # Idempotency-Key -> the id of the row its create made
        self.replays = 0
        self.refusals: dict[str, list[int]] = {}  # external_id -> [status, times left]: creates of it refused

    def refusal(self, body: Record) -> int | None:
        """The status a create of this body is refused with now (`/_control/refuse-key`), if any."""
        left = self.refusals.get(str(body.get("external_id")))
        if not left or left[1] <= 0:
            return None
        left[1] -= 1
        return left[0]

    def arriving(self, body: Record) -> Record:
        """A body as this collection stores it (its own representation, when that mode is on)."""
        return _own_record(body) if self.own_representation else body

    def get(self, record_id: str) -> Record:
        if record_id not in self.records:
            raise HTTPException(404, f"{self.noun} {record_id} not found")
        return self.records[record_id]

    def matching(self, filters: dict[str, str]) -> Iterator[Record]:
        """Records whose fields equal every filter (compared as text, so `?external_id=7` finds 7 and "7")."""
        external = filters.get("external_id")
        pool = (
            (self.records[i] for i in self._by_external.get(external, ()))
            if external is not None
            else (iter(self.records.values()))
        )
        return (r for r in pool if all(str(r.get(k)) == v for k, v in filters.items()))

    def create(self, body: Record) -> Record:
        record_id = f"{self.prefix}-{self._next:06d}"
        record = self._store(_with_id(record_id, self.arriving(body)))
        self._next += 1
        return record

    def replace(self, record_id: str, body: Record) -> Record:
        self.get(record_id)
        return self._store(_with_id(record_id, self.arriving(body)))

    def merge(self, record_id: str, changes: Record) -> Record:
        old = self.get(record_id)
        if self.own_representation:  # the changed members as it stores them: a null one is left out
            kept = {k: v for k, v in old.items() if k not in changes}
            return self._store(_with_id(record_id, {**kept, **self.arriving(changes)}))
        return self._store(_with_id(record_id, {**old, **changes}))

    def replayed(self, key: str | None) -> Record | None:
        """The row an earlier create with this Idempotency-Key made (None: a key not seen, or its row is gone)."""
        record_id = self.idempotency.get(key) if key else None
        if record_id is None or record_id not in self.records:
            return None
        self.replays += 1
        return self.records[record_id]

    def delete(self, record_id: str) -> None:
        self._unindex(self.get(record_id))
        del self.records[record_id]

    def upsert(self, item: Any) -> Record:
        """One bulk item: update the one record with its `external_id`, or create one; a per-item result."""
        try:
            if not isinstance(item, dict) or item.get("external_id") in (None, ""):
                raise Invalid("external_id: every bulk item needs one")
            found = list(self._by_external.get(str(item["external_id"]), ()))
            if len(found) > 1:
                raise Invalid(f"external_id: {item['external_id']!r} matches {len(found)} {self.noun}s")
            record = self.merge(found[0], item) if found else self.create(item)
        except Invalid as ex:
            return {"id": None, "status": "error", "detail": str(ex)}
        return {"id": record["id"], "status": "updated" if found else "created", "detail": None}

    def _store(self, record: Record) -> Record:
        problem = self.validate(record)
        if problem:
            raise Invalid(problem)
        old = self.records.get(record["id"])
        if old is not None:
            self._unindex(old)
        self.records[record["id"]] = record  # a replaced record keeps its place in the insertion order
        if record.get("external_id") is not None:
            self._by_external.setdefault(str(record["external_id"]), {})[record["id"]] = None
        return record

    def _unindex(self, record: Record) -> None:
        if record.get("external_id") is not None:
            self._by_external.get(str(record["external_id"]), {}).pop(record["id"], None)


def _with_id(record_id: str, body: Record) -> Record:
    """The server's id first, whatever `id` the client sent."""
    return {"id": record_id, **{k: v for k, v in body.items() if k != "id"}}


def validate_customer(record: Record) -> str | None:
    name, email = record.get("name"), record.get("email")
    if not isinstance(name, str) or not name.strip():
        return "name: is required and must be a non-empty string"
    if not isinstance(email, str) or not _EMAIL.match(email):
        return f"email: {email!r} is not a valid email address"
    return None


def bill_validator(customers: Collection) -> Validator:
    def validate_bill(record: Record) -> str | None:
        if record.get("customer_id") not in customers.records:
            return f"customer_id: {record.get('customer_id')!r} is not an existing customer id"
        amount = record.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            return f"amount: {amount!r} is not a number"
        return None

    return validate_bill


def collection_routes(path: str, collection: Collection, control: ControlState, filters: tuple[str, ...]) -> APIRouter:
    """List (filtered, paged), read, create, replace, merge, delete and bulk upsert under `path`."""
    router = APIRouter(prefix=path, tags=[path.strip("/")])

    @router.get("")
    async def listing(
        request: Request,
        page: Annotated[int, Query(ge=1)] = 1,
        per_page: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    ) -> Response:
        wanted = {k: v for k, v in request.query_params.items() if k in filters}
        rows = list(collection.matching(wanted)) if wanted else collection.records.values()
        data = list(islice(rows, (page - 1) * per_page, page * per_page))
        total = len(rows)
        headers = next_link(request, page=page + 1) if page * per_page < total else None
        return json_response({"data": data, "page": page, "per_page": per_page, "total": total}, headers=headers)

    @router.post("/bulk")
    async def bulk(request: Request) -> Response:
        items = await read_json(request)
        if not isinstance(items, list) or len(items) > MAX_BULK:
            raise HTTPException(422, f"body: expected a JSON list of at most {MAX_BULK} records")
        results = [collection.upsert(item) for item in items]
        if any(r["status"] != "error" for r in results):
            control.writes["POST"] += 1
        return json_response(results)

    @router.get("/{record_id}")
    async def one(record_id: str) -> Response:
        return json_response(collection.get(record_id))

    @router.post("", status_code=201)
    async def create(request: Request) -> Response:
        body = await json_object(request)
        refused = collection.refusal(body)
        if refused is not None:
            return json_response({"detail": f"injected fault: {refused}"}, refused)
        key = request.headers.get("idempotency-key")
        earlier = collection.replayed(key)
        if earlier is not None:
            return json_response(earlier, 201, headers={"Idempotent-Replayed": "true"})
        response = _written(control, "POST", 201, lambda: collection.create(body))
        if key:
            collection.idempotency[key] = orjson.loads(response.body)["id"]
        return response

    @router.put("/{record_id}")
    async def replace(request: Request, record_id: str) -> Response:
        body = await json_object(request)
        return _written(control, "PUT", 200, lambda: collection.replace(record_id, body))

    @router.patch("/{record_id}")
    async def merge(request: Request, record_id: str) -> Response:
        changes = await json_object(request)
        return _written(control, "PATCH", 200, lambda: collection.merge(record_id, changes))

    @router.delete("/{record_id}", status_code=204)
    async def delete(record_id: str) -> Response:
        collection.delete(record_id)
        control.writes["DELETE"] += 1
        return Response(status_code=204)

    return router


def _written(control: ControlState, method: str, status: int, act: Callable[[], Record]) -> Response:
    """Run one write: a refused record is a 422 naming the field; a stored one is counted and returned."""
    try:
        record = act()
    except Invalid as ex:
        raise HTTPException(422, str(ex)) from ex
    control.writes[method] += 1
    return json_response(record, status)


def api_key_guard(api_key: str) -> Callable[[Request], Awaitable[None]]:
    async def require_api_key(request: Request) -> None:
        given = request.headers.get("x-api-key")
        if given is None or not compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "missing or invalid X-API-Key header")

    return require_api_key


@dataclass
class Latency:
    """`POST /_control/latency {"seconds": 0.05}`: each write waits this long before the API acts on it (a slow
    destination: a batch that loads for a while, so that tests can start another while it runs)."""

    seconds: float = 0.0


class LatencyMiddleware:
    """Holds every write (not a GET, not `/_control`) for `latency.seconds` before it reaches its handler."""

    def __init__(self, app: ASGIApp, latency: Latency) -> None:
        self.app, self.latency = app, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.latency.seconds
            and scope["method"] != "GET"
            and not scope["path"].startswith(CONTROL_PREFIX)
        ):
            await asyncio.sleep(self.latency.seconds)
        await self.app(scope, receive, send)


def accounting_control_router(customers: Collection, bills: Collection, latency: Latency) -> APIRouter:
    """`/_control/dump` (everything stored, for tests to compare), `/_control/reset` (empty both, as sent, no
    latency), `/_control/idempotency`, `/_control/representation` and `/_control/latency`."""
    router = APIRouter(prefix=CONTROL_PREFIX, tags=["control"])

    @router.post("/latency")
    async def set_latency(request: Request) -> Response:
        seconds = (await json_object(request)).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 10:
            raise HTTPException(422, "seconds: a number from 0 to 10")
        latency.seconds = float(seconds)
        return json_response({"seconds": latency.seconds})

    @router.get("/dump")
    async def dump() -> Response:
        return json_response({"customers": list(customers.records.values()), "bills": list(bills.records.values())})

    @router.get("/idempotency")
    async def idempotency() -> Response:
        """How many Idempotency-Keys the creates brought, and how many creates were answered from one."""
        keys, replays = (sum(len(c.idempotency) for c in (customers, bills)), customers.replays + bills.replays)
        return json_response({"keys": keys, "replays": replays})

    @router.post("/representation")
    async def representation(request: Request) -> Response:
        """`{"mode": "own"}`: store every value sent in the API's own representation; `{"mode": "as_sent"}`."""
        mode = (await json_object(request)).get("mode")
        if mode not in ("own", "as_sent"):
            raise HTTPException(422, 'mode: "own" or "as_sent"')
        customers.own_representation = bills.own_representation = mode == "own"
        return json_response({"mode": mode})

    @router.post("/refuse-key")
    async def refuse_key(request: Request) -> Response:
        """`{"external_id": "20", "status": 503, "times": 5}`: the next creates of that key are refused, `times`
        of them, before anything is stored (a fault that follows one record, whatever the order of the writes)."""
        spec = await json_object(request)
        status, times = spec.get("status", 503), spec.get("times", 1)
        if not isinstance(status, int) or not 400 <= status <= 599 or not isinstance(times, int) or times < 1:
            raise HTTPException(422, "status: 400 to 599; times: at least 1")
        customers.refusals[str(spec.get("external_id"))] = [status, times]
        return json_response({"external_id": str(spec.get("external_id")), "status": status, "times": times})

    @router.post("/reset")
    async def reset() -> Response:
        customers.reset()
        bills.reset()
        latency.seconds = 0.0
        return json_response({"customers": 0, "bills": 0})

    return router


def create_accounting_app(api_key: str = "demo-accounting-api-key") -> FastAPI:
    """The demo accounting API, empty; every endpoint but `/_control/*` needs `X-API-Key: <api_key>`."""
    customers = Collection("AC", "customer", validate_customer)
    bills = Collection("BL", "bill", bill_validator(customers))
    control = ControlState()
    app = FastAPI(title="Demo accounting", summary="restful-etl's bundled demo destination API (in memory).")
    routers = [
        collection_routes("/customers", customers, control, ("external_id",)),
        collection_routes("/bills", bills, control, ("external_id", "customer_id")),
    ]
    for router in routers:
        app.include_router(router, dependencies=[Depends(api_key_guard(api_key))])
    latency = Latency()
    app.include_router(accounting_control_router(customers, bills, latency))
    add_control(app, control, routers)
    app.add_middleware(LatencyMiddleware, latency=latency)
    return app
