"""The demo CRM API: deterministic customers and their bills, in six pagination styles behind four auth styles.

It also holds the `/_control` pieces both demo APIs share (request stats, injected faults, JSON responses), and
the CRM's own: dirty records, cursor stamps set verbatim, writes that land while a page is being served.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import time
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from secrets import compare_digest, token_urlsafe
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTROL_PREFIX = "/_control"
MAX_PAGE_SIZE = 1000
DEFAULT_ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)

Record = dict[str, Any]


# --- shared by both demo APIs: JSON responses, stats and faults -------------------------------------------


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """orjson straight to bytes: a 1,000-record page never goes through pydantic."""
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


async def read_json(request: Request) -> Any:
    """The request body as JSON, or a 400 saying it is not JSON."""
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as ex:
        raise HTTPException(400, "body: not valid JSON") from ex


def next_link(request: Request, **params: Any) -> dict[str, str]:
    """An RFC 8288 `Link` header to this URL with `params` changed and every other parameter kept."""
    return {"Link": f'<{request.url.include_query_params(**params)}>; rel="next"'}


class FaultSpec(BaseModel):
    """`POST /_control/faults`: the matching requests to fail, and how: before they reach any handler, or with
    `after` once the handler has run, so that a write lands and its answer is lost (a 5xx, or no response)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, description="Exact request path; any path when omitted.")
    method: str | None = Field(default=None, description="HTTP method; any method when omitted.")
    status: int = Field(default=500, ge=400, le=599)
    times: int = Field(default=1, ge=1, description="How many matching requests fail in a row.")
    fail_nth: int = Field(default=1, ge=1, description="The first failure is the Nth matching request from now.")
    retry_after: str | int | None = Field(default=None, description="`Retry-After`: seconds or an HTTP date.")
    drop: bool = Field(default=False, description="Close the connection without any response.")
    after: bool = Field(default=False, description="Run the request's handler first (a write lands), then fail.")


@dataclass
class _Fault:
    spec: FaultSpec
    seen: int = 0
    failed: int = 0

    def matches(self, method: str, path: str) -> bool:
        spec = self.spec
        return (spec.method is None or spec.method.upper() == method) and (spec.path is None or spec.path == path)


@dataclass
class ControlState:
    """What `/_control` reports and sets: request counts, successful writes and pending faults."""

    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    faults: list[_Fault] = field(default_factory=list)

    def stats(self) -> dict[str, dict[str, int]]:
        return {"requests": dict(self.requests), "statuses": dict(self.statuses), "writes": dict(self.writes)}

    def reset_stats(self) -> None:
        for counter in (self.requests, self.statuses, self.writes):
            counter.clear()

    def take_fault(self, method: str, path: str) -> FaultSpec | None:
        """Count this request against every matching fault; the first that is due fires."""
        due = None
        for fault in [f for f in self.faults if f.matches(method, path)]:
            fault.seen += 1
            if due is None and fault.seen >= fault.spec.fail_nth:
                due, fault.failed = fault, fault.failed + 1
                if fault.failed >= fault.spec.times:
                    self.faults.remove(fault)
        return due.spec if due else None


class ControlMiddleware:
    """Counts every request outside `/_control` by method and route template, and fails those a fault matches."""

    def __init__(self, app: ASGIApp, control: ControlState, routes: list[BaseRoute]) -> None:
        self.app, self.control, self.routes = app, control, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        self.control.requests[f"{method} {self._template(scope)}"] += 1
        fault = self.control.take_fault(method, scope["path"])
        if fault is not None and fault.after:
            await self.app(scope, receive, _discard)  # the handler runs and its write lands; its answer is lost
        if fault is not None and fault.drop:
            self.control.statuses["dropped"] += 1
            await drop_connection(receive)
        elif fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            response = json_response({"detail": f"injected fault: {fault.status}"}, fault.status, headers)
            self.control.statuses[str(fault.status)] += 1
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, self._counting(send))

    def _template(self, scope: Scope) -> str:
        for route in self.routes:
            if route.matches(scope)[0] is not Match.NONE:
                return str(getattr(route, "path", scope["path"]))
        return str(scope["path"])

    def _counting(self, send: Send) -> Callable[[Message], Awaitable[None]]:
        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.control.statuses[str(message["status"])] += 1
            await send(message)

        return counting_send


async def _discard(message: Message) -> None:
    """A `send` that loses the handler's answer."""


async def drop_connection(receive: Receive) -> None:
    """Close the TCP connection without a response, as a crashed proxy would.

    ASGI has no word for this, so it reaches the transport through uvicorn's request cycle (the object
    behind `receive`); then it waits for the disconnect, which uvicorn lets pass without a 500 or a log line.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("dropping a connection needs uvicorn's transport")
    transport.abort()
    while (await receive())["type"] != "http.disconnect":
        pass


def control_router(control: ControlState) -> APIRouter:
    """`/_control/stats`, `/_control/reset-stats` and `/_control/faults`: no auth, demo only."""
    router = APIRouter(prefix=CONTROL_PREFIX, tags=["control"])

    @router.get("/stats")
    async def stats() -> Response:
        return json_response(control.stats())

    @router.post("/reset-stats")
    async def reset_stats() -> Response:
        control.reset_stats()
        return json_response(control.stats())

    @router.post("/faults", status_code=201)
    async def add_fault(spec: FaultSpec) -> Response:
        control.faults.append(_Fault(spec))
        return json_response({"faults": len(control.faults)}, 201)

    @router.delete("/faults")
    async def clear_faults() -> Response:
        control.faults.clear()
        return json_response({"faults": 0})

    return router


def add_control(app: FastAPI, control: ControlState, routers: Iterable[APIRouter]) -> None:
    """The shared `/_control` endpoints, and the middleware that counts and fails requests to `routers`' routes.

    The middleware matches the routers' own routes: FastAPI keeps included routers nested, so `app.routes`
    does not list their templates.
    """
    routes = [route for router in routers for route in router.routes]
    app.add_middleware(ControlMiddleware, control=control, routes=routes)
    app.include_router(control_router(control))


# --- the data: customers and bills, generated from a seed ---------------------------------------------------

_COUNTRIES = {
    "US": "USD",
    "GB": "GBP",
    "DE": "EUR",
    "FR": "EUR",
    "NL": "EUR",
    "ES": "EUR",
    "SE": "SEK",
    "CA": "CAD",
    "AU": "AUD",
    "JP": "JPY",
}
COUNTRY_CODES = tuple(_COUNTRIES)
_DIAL = {
    "US": "+1",
    "GB": "+44",
    "DE": "+49",
    "FR": "+33",
    "NL": "+31",
    "ES": "+34",
    "SE": "+46",
    "CA": "+1",
    "AU": "+61",
    "JP": "+81",
}
_FIRST = (
    "Ada",
    "Ben",
    "Chloe",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jonas",
    "Keiko",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pablo",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wei",
    "Yara",
    "Zoe",
)
_LAST = (
    "Andersen",
    "Baker",
    "Costa",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ito",
    "Jansen",
    "Kowalski",
    "Larsen",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Vogel",
    "Weber",
    "Young",
)
_COMPANY = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Tyrell",
    "Soylent",
    "Cyberdyne",
    "Wonka",
    "Aperture",
    "Gringotts",
    "Monarch",
    "Oscorp",
)
_SUFFIX = ("Ltd", "GmbH", "SA", "BV", "AB", "Inc", "KK", "Pty")
_DOMAINS = ("example.com", "example.org", "example.net")


def iso(moment: datetime) -> str:
    """The CRM's one timestamp form: UTC, whole seconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalise_timestamp(value: str) -> str:
    """Any ISO 8601 date or time (`Z`, an offset, fractions, naive meaning UTC) in the CRM's form.

    Fractions round up: stored stamps are whole seconds, so `>=` keeps its meaning.
    """
    text = re.sub(r" (\d\d:?\d\d)$", r"+\1", value.strip())  # a raw `+` in a URL arrives as a space
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" and text else text)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment.microsecond:
        moment = moment.replace(microsecond=0) + timedelta(seconds=1)
    return iso(moment)


def generate_customers(count: int = 200, seed: int = 42, anchor: datetime = DEFAULT_ANCHOR) -> list[Record]:
    """`count` customers, the same for the same seed, updated over the 90 days before `anchor`."""
    rng = random.Random(seed)
    customers, updated = [], anchor
    for customer_id in range(1, count + 1):
        if customer_id == 1 or rng.random() >= 0.1:  # one in ten shares the previous stamp: ids break the tie
            updated = anchor - timedelta(minutes=rng.randint(1, 90 * 24 * 60))
        customers.append(_customer(rng, customer_id, updated))
    return customers


def _customer(rng: random.Random, customer_id: int, updated: datetime) -> Record:
    first, last, country = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(COUNTRY_CODES)
    stamp = iso(updated)
    return {
        "id": customer_id,
        "email": f"{first}.{last}.{customer_id}@{rng.choice(_DOMAINS)}".lower(),
        "first_name": first,
        "last_name": last,
        "company": f"{rng.choice(_COMPANY)} {rng.choice(_SUFFIX)}",
        "country": country,
        "phone": f"{_DIAL[country]} {rng.randint(100, 999)} {rng.randint(100000, 999999)}",
        "lifetime_value": round(rng.uniform(0, 25_000), 2),
        "status": "active" if rng.random() < 0.85 else "inactive",
        "created_at": iso(updated - timedelta(minutes=rng.randint(0, 3 * 365 * 24 * 60))),
        "updated_at": stamp,
        "meta": {"updated_at": stamp, "source": "crm"},
    }


def generate_bills(customer_id: int, country: str, seed: int = 42, anchor: datetime = DEFAULT_ANCHOR) -> list[Record]:
    """0 to 3 bills of one customer, the same for the same seed and id; bill ids are `customer_id * 10 + n`."""
    rng = random.Random(f"{seed}:bills:{customer_id}")
    bills = []
    for n in range(1, rng.randint(0, 3) + 1):
        issued = anchor - timedelta(days=rng.randint(1, 400))
        bills.append(
            {
                "id": customer_id * 10 + n,
                "customer_id": customer_id,
                "number": f"INV-{customer_id:06d}-{n}",
                "amount": round(rng.uniform(20, 5_000), 2),
                "currency": _COUNTRIES.get(country, "EUR"),
                "issued_on": issued.date().isoformat(),
                "updated_at": iso(issued + timedelta(minutes=rng.randint(0, 30 * 24 * 60))),
            }
        )
    return sorted(bills, key=lambda bill: (bill["updated_at"], bill["id"]))


def dirty_customers(first_id: int, stamp: str) -> list[Record]:
    """Four customers that quality screens must catch, in this order: no email, a malformed email,
    a negative lifetime value, an unknown country."""

    def customer(customer_id: int, **changes: Any) -> Record:
        record = {
            "id": customer_id,
            "email": f"dirty.{customer_id}@example.com",
            "first_name": "Dirty",
            "last_name": f"Record{customer_id}",
            "company": "Dirty Data Ltd",
            "country": "GB",
            "phone": "+44 20 7946 0000",
            "lifetime_value": 100.0,
            "status": "active",
            "created_at": stamp,
            "updated_at": stamp,
            "meta": {"updated_at": stamp, "source": "crm"},
        }
        return {k: v for k, v in {**record, **changes}.items() if v is not _ABSENT}

    return [
        customer(first_id, email=_ABSENT),
        customer(first_id + 1, email="not-an-email"),
        customer(first_id + 2, lifetime_value=-250.0),
        customer(first_id + 3, country="ZZ"),
    ]


_ABSENT = object()


class CustomerStore:
    """The customers by id, with their (updated_at, id) keys kept sorted so filters and cursors bisect."""

    def __init__(self, customers: Iterable[Record], seed: int, anchor: datetime) -> None:
        self.seed, self.anchor = seed, anchor
        self.on_change: list[Callable[[str, Record], None]] = []  # the outgoing hooks (crm_hooks.py)
        self.reset(customers)

    def reset(self, customers: Iterable[Record]) -> None:
        self.records = {c["id"]: c for c in customers}
        self.keys = sorted((c["updated_at"], c["id"]) for c in self.records.values())
        self.last_id = max(self.records, default=0)
        self._bills: dict[int, list[Record]] = {}

    def since(self, updated_since: str | None) -> int:
        """The position of the first customer updated at or after `updated_since` (normalised)."""
        return bisect_left(self.keys, (updated_since, 0)) if updated_since else 0

    def after(self, key: tuple[str, int]) -> int:
        return bisect_right(self.keys, key)

    def window(self, start: int, stop: int) -> list[Record]:
        return [self.records[customer_id] for _, customer_id in self.keys[start:stop]]

    def fresh_stamp(self) -> str:
        """Now, but never before the newest stamp, so a write always lands at the end of the sort."""
        now = iso(datetime.now(UTC))
        return max(now, self.keys[-1][0]) if self.keys else now

    def put(self, record: Record) -> Record:
        old = self.records.get(record["id"])
        if old is not None:
            del self.keys[bisect_left(self.keys, (old["updated_at"], old["id"]))]
        self.records[record["id"]] = record
        insort(self.keys, (record["updated_at"], record["id"]))
        self.last_id = max(self.last_id, record["id"])
        for listener in self.on_change:
            listener("customer.created" if old is None else "customer.updated", record)
        return record

    def remove(self, customer_id: int) -> bool:
        old = self.records.pop(customer_id, None)
        if old is not None:
            del self.keys[bisect_left(self.keys, (old["updated_at"], old["id"]))]
        return old is not None

    def bills(self, customer_id: int) -> list[Record]:
        if customer_id not in self._bills:
            country = self.records[customer_id].get("country", "")
            self._bills[customer_id] = generate_bills(customer_id, country, self.seed, self.anchor)
        return self._bills[customer_id]


def stamped(record: Record, stamp: str) -> Record:
    """The record with `updated_at` (and `meta.updated_at`) set to `stamp`; the server owns both."""
    meta = record.get("meta")
    if not isinstance(meta, dict):
        meta = {"source": "crm"}
    return {**record, "updated_at": stamp, "meta": {**meta, "updated_at": stamp}}


class PageWriteSpec(BaseModel):
    """`POST /_control/write-during-page`: writes that land while a matching page is served, as another
    writer's would: the page is read first, then the writes land, then the page is sent. A patched customer
    is stamped now, so it moves to the end of the (updated_at, id) order and the customers after its old
    place move one place up: a reader by page number or offset then skips one of them.

    `{"path": "/customers", "params": {"page": "3"}, "patch": {"5": {"phone": "+1 555 0100"}}, "times": 1}`
    """

    model_config = ConfigDict(extra="forbid")

    path: str = Field(default="/customers", description="The listing whose page triggers the writes.")
    params: dict[str, str] = Field(default_factory=dict, description="Query parameters the page must have.")
    patch: dict[int, dict[str, Any]] = Field(default_factory=dict, description="Customer id -> changes (a PATCH).")
    delete: list[int] = Field(default_factory=list, description="Customer ids to delete.")
    times: int = Field(default=1, ge=1, description="How many matching pages each write once.")
    after: int = Field(default=0, ge=0, description="How many matching pages pass before the first write.")


class OddPageSpec(BaseModel):
    """`POST /_control/odd-page`: the matching page contradicts its stream, as a faulty API's would:
    `empty` (`"data": []`), `null` (`"data": null`), `short` (half its records), `object` (an object where the
    list belongs), all with the total and `has_more` of the real page.

    `{"path": "/customers", "params": {"page": "3"}, "shape": "empty"}`
    """

    model_config = ConfigDict(extra="forbid")

    path: str = "/customers"
    params: dict[str, str] = Field(default_factory=dict)
    shape: Literal["empty", "null", "short", "object"]
    times: int = Field(default=1, ge=1)
    after: int = Field(default=0, ge=0)


class PageWrites:
    """The pending `PageWriteSpec`s and `OddPageSpec`s; every listing route calls `fire` once it has read its
    page, and `reshape` on the body it answers."""

    def __init__(self, store: CustomerStore) -> None:
        self.store = store
        self.pending: list[PageWriteSpec] = []
        self.odd: list[OddPageSpec] = []

    def clear(self) -> None:
        self.pending.clear()
        self.odd.clear()

    def reshape(self, request: Request, body: Record, records_key: str) -> Record:
        for spec in _due(self.odd, request):
            data = body[records_key]
            shapes = {"empty": [], "null": None, "short": data[: len(data) // 2], "object": {"error": "busy"}}
            body = {**body, records_key: shapes[spec.shape]}
        return body

    def fire(self, request: Request) -> None:
        for spec in _due(self.pending, request):
            for customer_id, changes in spec.patch.items():
                old = self.store.records.get(customer_id)
                if old is not None:
                    self.store.put(stamped({**old, **changes, "id": customer_id}, self.store.fresh_stamp()))
            for customer_id in spec.delete:
                self.store.remove(customer_id)


def _due(specs: list[Any], request: Request) -> list[Any]:
    """The specs that match the request (path and parameters), each counted once against its `times`."""
    query, due = request.query_params, []
    for spec in list(specs):
        if spec.path == request.url.path and all(query.get(k) == v for k, v in spec.params.items()):
            if spec.after:
                spec.after -= 1
                continue
            due.append(spec)
            spec.times -= 1
            if not spec.times:
                specs.remove(spec)
    return due


# --- auth ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrmSecrets:
    """What the CRM accepts: a static bearer token, HTTP Basic, an `api_key` parameter, OAuth2 client credentials."""

    token: str = "demo-crm-token"
    username: str = "demo"
    password: str = "demo-password"
    api_key: str = "demo-crm-api-key"
    client_id: str = "demo-client"
    client_secret: str = "demo-client-secret"


class TokenBook:
    """The OAuth2 access tokens the CRM issued, with when each expires (monotonic seconds)."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self._expiry: dict[str, float] = {}

    def issue(self) -> str:
        token = token_urlsafe(24)
        self._expiry[token] = time.monotonic() + self.ttl
        return token

    def status(self, token: str) -> str:
        """ "valid", "expired" or "unknown"."""
        expiry = self._expiry.get(token)
        return "unknown" if expiry is None else "valid" if time.monotonic() < expiry else "expired"

    def expire_all(self) -> int:
        self._expiry = dict.fromkeys(self._expiry, 0.0)
        return len(self._expiry)


def _same(given: str | None, expected: str) -> bool:
    return given is not None and compare_digest(given.encode(), expected.encode())


def basic_pair(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic ...` header, or None."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _unauthorized(detail: str, challenge: str = 'Bearer realm="demo-crm"') -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def authenticator(secrets: CrmSecrets, tokens: TokenBook) -> Callable[[Request], Awaitable[None]]:
    """The dependency every CRM data endpoint shares: any one valid credential lets the request in."""

    async def authenticate(request: Request) -> None:
        api_key = request.query_params.get("api_key")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        bearer = value.strip() if scheme.lower() == "bearer" else None
        basic = basic_pair(request.headers.get("authorization"))
        if api_key is None and bearer is None and basic is None:
            raise _unauthorized("missing credentials: send a bearer token, HTTP Basic or an api_key parameter")
        if _same(api_key, secrets.api_key) or _same(bearer, secrets.token):
            return
        if basic and _same(basic[0], secrets.username) and _same(basic[1], secrets.password):
            return
        oauth = tokens.status(bearer) if bearer else "unknown"
        if oauth == "valid":
            return
        if oauth == "expired":
            raise _unauthorized(
                "the access token expired", 'Bearer error="invalid_token", error_description="the access token expired"'
            )
        raise _unauthorized("invalid credentials")

    return authenticate


def oauth_router(secrets: CrmSecrets, tokens: TokenBook) -> APIRouter:
    """`POST /oauth/token`: the client credentials grant (RFC 6749 4.4), form-encoded, client in the form or Basic."""
    router = APIRouter(tags=["oauth"])

    @router.post("/oauth/token")
    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(errors="replace")))
        client_id, client_secret = basic_pair(request.headers.get("authorization")) or (
            form.get("client_id"),
            form.get("client_secret"),
        )
        if form.get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, 400)
        if not (_same(client_id, secrets.client_id) and _same(client_secret, secrets.client_secret)):
            return json_response({"error": "invalid_client"}, 401)
        return json_response({"access_token": tokens.issue(), "token_type": "bearer", "expires_in": tokens.ttl})

    return router


# --- routes ---------------------------------------------------------------------------------------------------

PageNumber = Annotated[int, Query(ge=1)]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def _since(
    updated_since: Annotated[str | None, Query(description="Updated at or after (ISO 8601).")] = None,
) -> str | None:
    try:
        return normalise_timestamp(updated_since) if updated_since is not None else None
    except ValueError as ex:
        raise HTTPException(422, "updated_since: not an ISO 8601 date or time") from ex


Since = Annotated[str | None, Depends(_since)]


def encode_cursor(key: tuple[str, int]) -> str:
    """An opaque cursor: the (updated_at, id) of the last record served, so pages stay stable under writes."""
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        stamp, customer_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(stamp, str) and isinstance(customer_id, int):
            return stamp, customer_id
    except (ValueError, TypeError):
        pass
    raise HTTPException(400, "cursor: not a cursor this API issued")


def _keyset(store: CustomerStore, since: str | None, cursor: str | None, limit: int) -> tuple[list[Record], str | None]:
    """One page after `cursor`, and the cursor of the next page (None on the last)."""
    start = store.since(since)
    if cursor:
        start = max(start, store.after(decode_cursor(cursor)))
    stop = start + limit
    return store.window(start, stop), encode_cursor(store.keys[stop - 1]) if stop < len(store.keys) else None


def numbered_page(
    request: Request,
    data: list[Record],
    page: int,
    per_page: int,
    total: int,
    reshape: Callable[[Record], Record] | None = None,
) -> Response:
    """`{"data", "page", "per_page", "total", "has_more"}` and a `Link` to the next page when there is one."""
    has_more = page * per_page < total
    body = {"data": data, "page": page, "per_page": per_page, "total": total, "has_more": has_more}
    body = reshape(body) if reshape else body
    return json_response(body, headers=next_link(request, page=page + 1) if has_more else None)


def customer_routes(store: CustomerStore, writes: PageWrites) -> APIRouter:
    """The customers in every pagination style, all with the same filter and the same (updated_at, id) order.

    `/text-cursor/customers` pages by number like `/customers`, but compares `updated_since` with each stamp as
    text, as many APIs do (`2030-01-01T00:00:00Z` sorts after `2030-01-01T00:00:00.500Z` there).
    """
    router = APIRouter(tags=["customers"])

    @router.get("/customers")
    async def by_page(request: Request, since: Since, page: PageNumber = 1, per_page: PageSize = 100) -> Response:
        start = store.since(since)
        first = start + (page - 1) * per_page
        body, total = store.window(first, first + per_page), len(store.keys) - start
        writes.fire(request)  # after the page is read: the writes land while it is on the wire
        return numbered_page(request, body, page, per_page, total, lambda b: writes.reshape(request, b, "data"))

    @router.get("/text-cursor/customers")
    async def by_text(
        request: Request, updated_since: str = "", page: PageNumber = 1, per_page: PageSize = 100
    ) -> Response:
        start = store.since(updated_since)  # the keys sort by the stamps' text: bisecting on it compares as text
        first = start + (page - 1) * per_page
        return numbered_page(request, store.window(first, first + per_page), page, per_page, len(store.keys) - start)

    @router.get("/offset/customers")
    async def by_offset(
        request: Request, since: Since, offset: Annotated[int, Query(ge=0)] = 0, limit: PageSize = 100
    ) -> Response:
        start = store.since(since) + offset
        body = {
            "items": store.window(start, start + limit),
            "offset": offset,
            "limit": limit,
            "total": len(store.keys) - store.since(since),
        }
        writes.fire(request)
        return json_response(writes.reshape(request, body, "items"))

    @router.get("/cursor/customers")
    async def by_cursor(request: Request, since: Since, cursor: str | None = None, limit: PageSize = 100) -> Response:
        records, next_cursor = _keyset(store, since, cursor, limit)
        writes.fire(request)
        return json_response({"results": {"items": records}, "next_cursor": next_cursor})

    @router.get("/next-url/customers")
    async def by_next_url(request: Request, since: Since, cursor: str | None = None, limit: PageSize = 100) -> Response:
        records, next_cursor = _keyset(store, since, cursor, limit)
        next_url = str(request.url.include_query_params(cursor=next_cursor)) if next_cursor else None
        return json_response({"data": records, "links": {"next": next_url}})

    @router.get("/header-cursor/customers")
    async def by_header_cursor(since: Since, cursor: str | None = None, limit: PageSize = 100) -> Response:
        records, next_cursor = _keyset(store, since, cursor, limit)
        return json_response(records, headers={"X-Next-Cursor": next_cursor} if next_cursor else None)

    @router.get("/all/customers")
    async def everything(since: Since) -> Response:
        return json_response(store.window(store.since(since), len(store.keys)))

    @router.get("/customers/{customer_id}")
    async def one(customer_id: int) -> Response:
        return json_response(_existing(store, customer_id))

    @router.get("/customers/{customer_id}/bills")
    async def bills(request: Request, customer_id: int, page: PageNumber = 1, per_page: PageSize = 100) -> Response:
        _existing(store, customer_id)
        rows = store.bills(customer_id)
        return numbered_page(request, rows[(page - 1) * per_page : page * per_page], page, per_page, len(rows))

    return router


def header_total_routes(store: CustomerStore) -> APIRouter:
    """`/header-total/customers?page=2&per_page=100`: numbered pages of a bare list, the total in a header
    (`X-Total-Count`, as json-server, Mockoon and many Rails and Django APIs send it), no body around the records."""
    router = APIRouter(tags=["customers"])

    @router.get("/header-total/customers")
    async def by_header_total(since: Since, page: PageNumber = 1, per_page: PageSize = 100) -> Response:
        start = store.since(since)
        first = start + (page - 1) * per_page
        total = len(store.keys) - start
        return json_response(store.window(first, first + per_page), headers={"X-Total-Count": str(total)})

    return router


def _existing(store: CustomerStore, customer_id: int) -> Record:
    if customer_id not in store.records:
        raise HTTPException(404, f"customer {customer_id} not found")
    return store.records[customer_id]


async def json_object(request: Request) -> Record:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise HTTPException(422, "body: expected a JSON object")
    return body


def write_routes(store: CustomerStore, control: ControlState) -> APIRouter:
    """Admin writes, for the demo's "edit the CRM" step and for tests; the server stamps `updated_at`."""
    router = APIRouter(tags=["customers"])

    @router.post("/customers", status_code=201)
    async def create(request: Request) -> Response:
        stamp = store.fresh_stamp()
        body = {k: v for k, v in (await json_object(request)).items() if k != "id"}
        record = stamped({"id": store.last_id + 1, **body, "created_at": stamp}, stamp)
        control.writes["POST"] += 1
        return json_response(store.put(record), 201)

    @router.patch("/customers/{customer_id}")
    async def merge(request: Request, customer_id: int) -> Response:
        old, changes = _existing(store, customer_id), await json_object(request)
        control.writes["PATCH"] += 1
        return json_response(store.put(stamped({**old, **changes, "id": customer_id}, store.fresh_stamp())))

    @router.delete("/customers/{customer_id}", status_code=204)
    async def delete(customer_id: int) -> Response:
        _existing(store, customer_id)
        store.remove(customer_id)
        control.writes["DELETE"] += 1
        return Response(status_code=204)

    return router


def customer_schema() -> Record:
    """The JSON Schema (draft 2020-12) of a CRM customer, as shipped in `schemas/crm_customer.json`."""
    return orjson.loads(resources.files(__package__).joinpath("schemas", "crm_customer.json").read_bytes())


def schema_router() -> APIRouter:
    router, schema = APIRouter(tags=["schemas"]), customer_schema()

    @router.get("/schemas/customer.json")
    async def customer() -> Response:
        return json_response(schema, headers={"Content-Type": "application/schema+json"})

    return router


class RawFieldSpec(BaseModel):
    """`POST /_control/raw-field`: `{"id": 17, "field": "score", "json_text": "NaN"}` serves that field as this
    JSON text verbatim, for values no JSON encoder writes: `NaN`, `1e400`, `"\\ud800"`, 100,000 nested lists."""

    model_config = ConfigDict(extra="forbid")

    id: int
    field: str = Field(min_length=1)
    json_text: str = Field(min_length=1)


class StampSpec(BaseModel):
    """`POST /_control/stamp`: `{"id": 17, "updated_at": "2030-01-01T00:00:00.000Z"}` sets a customer's stamp to
    that text exactly (both `updated_at` and `meta.updated_at`), for cursors in another form than the CRM's."""

    model_config = ConfigDict(extra="forbid")

    id: int
    updated_at: str


def crm_control_router(store: CustomerStore, tokens: TokenBook, writes: PageWrites) -> APIRouter:
    """The CRM's own `/_control` endpoints: dirty records, expired tokens, stamps set verbatim, writes during a
    page, back to the generated data."""
    router = APIRouter(prefix=CONTROL_PREFIX, tags=["control"])
    generated = list(store.records.values())  # records are replaced on write, never changed in place

    @router.post("/dirty", status_code=201)
    async def dirty() -> Response:
        records = [store.put(r) for r in dirty_customers(store.last_id + 1, store.fresh_stamp())]
        return json_response({"data": records}, 201)

    @router.post("/expire-tokens")
    async def expire_tokens() -> Response:
        return json_response({"expired": tokens.expire_all()})

    @router.post("/stamp")
    async def stamp(spec: StampSpec) -> Response:
        return json_response(store.put(stamped(_existing(store, spec.id), spec.updated_at)))

    @router.post("/write-during-page", status_code=201)
    async def write_during_page(spec: PageWriteSpec) -> Response:
        writes.pending.append(spec)
        return json_response({"pending": len(writes.pending)}, 201)

    @router.post("/odd-page", status_code=201)
    async def odd_page(spec: OddPageSpec) -> Response:
        writes.odd.append(spec)
        return json_response({"pending": len(writes.odd)}, 201)

    @router.post("/raw-field")
    async def raw_field(spec: RawFieldSpec) -> Response:
        record = _existing(store, spec.id)
        store.put({**record, spec.field: orjson.Fragment(spec.json_text.encode("utf-8", "surrogatepass"))})
        return json_response({"id": spec.id, "field": spec.field})

    @router.post("/reset")
    async def reset() -> Response:
        store.reset(generated)
        writes.clear()
        return json_response({"customers": len(store.records)})

    return router


def create_crm_app(
    secrets: CrmSecrets | None = None,
    *,
    customers: int = 200,
    seed: int = 42,
    token_ttl: int = 3600,
    anchor: datetime = DEFAULT_ANCHOR,
) -> FastAPI:
    """The demo CRM with `customers` customers generated from `seed`.

    Every endpoint but `/oauth/token` and `/_control/*` needs one of the credentials in `secrets`.
    """
    secrets = secrets or CrmSecrets()
    store = CustomerStore(generate_customers(customers, seed, anchor), seed, anchor)
    tokens, control = TokenBook(token_ttl), ControlState()
    app = FastAPI(title="Demo CRM", summary="restful-etl's bundled demo source API (in memory).")
    writes = PageWrites(store)
    guarded = [
        customer_routes(store, writes),
        header_total_routes(store),
        write_routes(store, control),
        schema_router(),
    ]
    oauth = oauth_router(secrets, tokens)
    for router in guarded:
        app.include_router(router, dependencies=[Depends(authenticator(secrets, tokens))])
    app.include_router(oauth)
    app.include_router(crm_control_router(store, tokens, writes))
    add_control(app, control, [*guarded, oauth])
    # --- outgoing hooks: `POST /_control/hooks` subscribes a URL to signed hooks of every change (crm_hooks.py)
    from prefect_restful_etl.deployments.demo.crm_hooks import HookSender, hooks_router

    sender = HookSender()
    store.on_change.append(sender.changed)
    app.include_router(hooks_router(sender, CONTROL_PREFIX))
    return app
