"""Tests of the bundled demo APIs: the real subprocess over real loopback sockets (and one in-process load test)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from prefect_restful_etl.deployments.demo.apis import DemoApis, DemoApisError, crm_secrets_from_env
from prefect_restful_etl.deployments.demo.crm import CrmSecrets, create_crm_app, generate_bills, generate_customers

pytestmark = pytest.mark.integration

Record = dict[str, Any]
PAGE = 37  # 200 customers: five full pages and a short one
MAX_PAGES = 100
SORTED = sorted(generate_customers(200, 42), key=lambda c: (c["updated_at"], c["id"]))


@pytest.fixture(scope="module")
def crm_client(demo_apis: DemoApis) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {demo_apis.crm_token}"}
    with httpx.Client(base_url=demo_apis.crm_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def accounting_client(demo_apis: DemoApis) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=demo_apis.accounting_url, headers={"X-API-Key": demo_apis.accounting_api_key}, timeout=10
    ) as client:
        yield client


@pytest.fixture
def crm(demo_state: DemoApis, crm_client: httpx.Client) -> httpx.Client:
    """The CRM with a bearer token, on a clean slate."""
    return crm_client


@pytest.fixture
def accounting(demo_state: DemoApis, accounting_client: httpx.Client) -> httpx.Client:
    """The accounting API with its key, on a clean slate."""
    return accounting_client


def ok(response: httpx.Response) -> httpx.Response:
    assert response.is_success, (response.status_code, response.text)
    return response


# --- one walker per pagination style ---------------------------------------------------------------------------


def walk_page_number(crm: httpx.Client, params: dict[str, str], size: int = PAGE) -> list[Record]:
    records: list[Record] = []
    for page in range(1, MAX_PAGES):
        body = ok(crm.get("/customers", params={**params, "page": page, "per_page": size})).json()
        records += body["data"]
        if not body["has_more"]:
            return records
    raise AssertionError("no last page")


def walk_link_header(crm: httpx.Client, params: dict[str, str], size: int = PAGE) -> list[Record]:
    response, records = ok(crm.get("/customers", params={**params, "per_page": size})), []
    for _ in range(MAX_PAGES):
        records += response.json()["data"]
        if "next" not in response.links:
            return records
        response = ok(crm.get(response.links["next"]["url"]))
    raise AssertionError("no last page")


def walk_offset(crm: httpx.Client, params: dict[str, str], size: int = PAGE) -> list[Record]:
    records: list[Record] = []
    for offset in range(0, MAX_PAGES * size, size):
        body = ok(crm.get("/offset/customers", params={**params, "offset": offset, "limit": size})).json()
        records += body["items"]
        if offset + size >= body["total"]:
            return records
    raise AssertionError("no last page")


def walk_cursor(crm: httpx.Client, params: dict[str, str], size: int = PAGE) -> list[Record]:
    records: list[Record] = []
    cursor: dict[str, str] = {}
    for _ in range(MAX_PAGES):
        body = ok(crm.get("/cursor/customers", params={**params, **cursor, "limit": size})).json()
        records += body["results"]["items"]
        if body["next_cursor"] is None:
            return records
        cursor = {"cursor": body["next_cursor"]}
    raise AssertionError("no last page")


def walk_next_url(crm: httpx.Client, params: dict[str, str], size: int = PAGE) -> list[Record]:
    response, records = ok(crm.get("/next-url/customers", params={**params, "limit": size})), []
    for _ in range(MAX_PAGES):
        body = response.json()
        records += body["data"]
        if body["links"]["next"] is None:
            return records
        response = ok(crm.get(body["links"]["next"]))
    raise AssertionError("no last page")


def walk_header_cursor(crm: httpx.Client, params: dict[str, str], size: int = PAGE) -> list[Record]:
    records: list[Record] = []
    cursor: dict[str, str] = {}
    for _ in range(MAX_PAGES):
        response = ok(crm.get("/header-cursor/customers", params={**params, **cursor, "limit": size}))
        records += response.json()
        if "X-Next-Cursor" not in response.headers:
            return records
        cursor = {"cursor": response.headers["X-Next-Cursor"]}
    raise AssertionError("no last page")


def walk_header_total(crm: httpx.Client, params: dict[str, str], size: int = PAGE) -> list[Record]:
    records: list[Record] = []
    for page in range(1, MAX_PAGES):
        response = ok(crm.get("/header-total/customers", params={**params, "page": page, "per_page": size}))
        records += response.json()
        if page * size >= int(response.headers["X-Total-Count"]):
            return records
    raise AssertionError("no last page")


def walk_all(crm: httpx.Client, params: dict[str, str], size: int = PAGE) -> list[Record]:
    return list(ok(crm.get("/all/customers", params=params)).json())


Walker = Callable[..., list[Record]]
WALKERS = {
    "page-number": walk_page_number,
    "link-header": walk_link_header,
    "offset": walk_offset,
    "cursor": walk_cursor,
    "next-url": walk_next_url,
    "header-cursor": walk_header_cursor,
    "header-total": walk_header_total,
    "single-page": walk_all,
}
walkers = pytest.mark.parametrize("walk", WALKERS.values(), ids=WALKERS.keys())


@walkers
def test_every_style_returns_every_customer_once_in_order(crm: httpx.Client, walk: Walker) -> None:
    records = walk(crm, {})
    assert sorted(r["id"] for r in records) == list(range(1, 201))
    assert records == SORTED


PATHS = {
    "page-number": "/customers",
    "link-header": "/customers",
    "offset": "/offset/customers",
    "cursor": "/cursor/customers",
    "next-url": "/next-url/customers",
    "header-cursor": "/header-cursor/customers",
    "header-total": "/header-total/customers",
    "single-page": "/all/customers",
}


@pytest.mark.parametrize(
    "size,pages",
    [(50, 4), (40, 5), (200, 1), (1000, 1), (199, 2)],
    ids=["exact-4", "exact-5", "exact-1", "one-big", "one-over"],
)
@pytest.mark.parametrize("style", [s for s in WALKERS if s != "single-page"])
def test_the_last_page_says_so_without_an_extra_request(crm: httpx.Client, style: str, size: int, pages: int) -> None:
    assert len(WALKERS[style](crm, {}, size)) == 200
    assert ok(crm.get("/_control/stats")).json()["requests"] == {f"GET {PATHS[style]}": pages}


@walkers
def test_updated_since_keeps_customers_updated_at_or_after(crm: httpx.Client, walk: Walker) -> None:
    since = SORTED[120]["updated_at"]
    records = walk(crm, {"updated_since": since})
    assert records == [c for c in SORTED if c["updated_at"] >= since]
    assert 0 < len(records) < 200


def _shifted(stamp: str, form: str) -> str:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return {
        "z": stamp,
        "utc-offset": moment.isoformat(),
        "plus-two": moment.astimezone(timezone(timedelta(hours=2))).isoformat(),
        "naive": moment.replace(tzinfo=None).isoformat(),
        "fraction": (moment - timedelta(milliseconds=500)).isoformat().replace("+00:00", "Z"),
    }[form]


@pytest.mark.parametrize("form", ["z", "utc-offset", "plus-two", "naive", "fraction"])
def test_updated_since_accepts_iso_forms(crm: httpx.Client, form: str) -> None:
    since = SORTED[150]["updated_at"]
    body = ok(crm.get("/customers", params={"updated_since": _shifted(since, form), "per_page": 1000})).json()
    assert [r["id"] for r in body["data"]] == [c["id"] for c in SORTED if c["updated_at"] >= since]
    assert body["total"] == len(body["data"])


def test_updated_since_in_the_future_is_an_empty_last_page(crm: httpx.Client) -> None:
    response = ok(crm.get("/customers", params={"updated_since": "2999-01-01T00:00:00Z"}))
    assert response.json() == {"data": [], "page": 1, "per_page": 100, "total": 0, "has_more": False}
    assert "link" not in response.headers


def test_link_header_keeps_the_other_parameters(crm: httpx.Client) -> None:
    response = ok(crm.get("/customers", params={"per_page": 10, "updated_since": "2025-10-01T00:00:00Z"}))
    url = httpx.URL(response.links["next"]["url"])
    assert (url.scheme, url.host, url.port, url.path) == (
        "http",
        "127.0.0.1",
        httpx.URL(str(crm.base_url)).port,
        "/customers",
    )
    assert dict(url.params) == {"per_page": "10", "updated_since": "2025-10-01T00:00:00Z", "page": "2"}


@pytest.mark.parametrize(
    "path,params,status",
    [
        ("/customers", {"updated_since": "yesterday"}, 422),
        ("/customers", {"per_page": 1001}, 422),
        ("/customers", {"page": 0}, 422),
        ("/offset/customers", {"limit": 0}, 422),
        ("/cursor/customers", {"cursor": "not-a-cursor"}, 400),
        ("/header-cursor/customers", {"cursor": "WzFd"}, 400),
        ("/customers", {"per_page": 1000}, 200),
    ],
    ids=["bad-since", "page-too-big", "page-zero", "limit-zero", "bad-cursor", "cursor-wrong-shape", "max-page"],
)
def test_bad_parameters(crm: httpx.Client, path: str, params: dict[str, Any], status: int) -> None:
    assert crm.get(path, params=params).status_code == status


# --- auth ------------------------------------------------------------------------------------------------------


def _oauth_token(apis: DemoApis) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": apis.crm_client_id,
        "client_secret": apis.crm_client_secret,
    }
    return str(ok(httpx.post(f"{apis.crm_url}/oauth/token", data=form)).json()["access_token"])


AUTH_CASES: list[Any] = [
    pytest.param(lambda a: {"headers": {"Authorization": f"Bearer {a.crm_token}"}}, 200, id="bearer"),
    pytest.param(lambda a: {"auth": (a.crm_username, a.crm_password)}, 200, id="basic"),
    pytest.param(lambda a: {"params": {"api_key": a.crm_api_key}}, 200, id="api-key-query"),
    pytest.param(lambda a: {"headers": {"Authorization": f"Bearer {_oauth_token(a)}"}}, 200, id="oauth"),
    pytest.param(lambda a: {}, 401, id="none"),
    pytest.param(lambda a: {"headers": {"Authorization": "Bearer wrong"}}, 401, id="wrong-bearer"),
    pytest.param(lambda a: {"auth": (a.crm_username, "wrong")}, 401, id="wrong-password"),
    pytest.param(lambda a: {"auth": ("someone", a.crm_password)}, 401, id="wrong-user"),
    pytest.param(lambda a: {"params": {"api_key": "wrong"}}, 401, id="wrong-api-key"),
    pytest.param(lambda a: {"headers": {"Authorization": f"Bearer {a.crm_api_key}"}}, 401, id="api-key-as-bearer"),
    pytest.param(lambda a: {"headers": {"X-API-Key": a.crm_api_key}}, 401, id="api-key-in-wrong-place"),
]
GUARDED = [
    "/customers",
    "/offset/customers",
    "/cursor/customers",
    "/next-url/customers",
    "/header-cursor/customers",
    "/all/customers",
    "/customers/1",
    "/customers/1/bills",
    "/schemas/customer.json",
]


@pytest.mark.parametrize("credentials,status", AUTH_CASES)
def test_crm_auth_styles(demo_state: DemoApis, credentials: Callable[[DemoApis], dict[str, Any]], status: int) -> None:
    with httpx.Client(base_url=demo_state.crm_url, timeout=10, **credentials(demo_state)) as client:
        for path in GUARDED:
            response = client.get(path)
            assert response.status_code == status, path
            assert status == 200 or "detail" in response.json()


def test_crm_token_and_control_endpoints_need_no_auth(demo_state: DemoApis) -> None:
    assert ok(httpx.get(f"{demo_state.crm_url}/_control/stats")).json()["requests"] == {}
    assert httpx.post(f"{demo_state.crm_url}/oauth/token", data={"grant_type": "client_credentials"}).status_code == 401


@pytest.mark.parametrize(
    "form,basic,status,error",
    [
        ({"grant_type": "client_credentials", "client_id": "ID", "client_secret": "SECRET"}, False, 200, None),
        ({"grant_type": "client_credentials"}, True, 200, None),
        ({"grant_type": "client_credentials", "client_id": "ID", "client_secret": "no"}, False, 401, "invalid_client"),
        (
            {"grant_type": "password", "client_id": "ID", "client_secret": "SECRET"},
            False,
            400,
            "unsupported_grant_type",
        ),
        ({}, False, 400, "unsupported_grant_type"),
    ],
    ids=["form", "basic-client-auth", "wrong-secret", "wrong-grant", "empty"],
)
def test_oauth_token_endpoint(
    demo_state: DemoApis, form: dict[str, str], basic: bool, status: int, error: str | None
) -> None:
    real = {"ID": demo_state.crm_client_id, "SECRET": demo_state.crm_client_secret}
    data = {k: real.get(v, v) for k, v in form.items()}
    auth = (demo_state.crm_client_id, demo_state.crm_client_secret) if basic else None
    response = httpx.post(f"{demo_state.crm_url}/oauth/token", data=data, auth=auth)
    assert response.status_code == status
    body = response.json()
    if error:
        assert body == {"error": error}
    else:
        assert body["token_type"] == "bearer" and body["expires_in"] > 0 and body["access_token"]


def test_expired_oauth_token_is_refused_until_a_new_one_is_fetched(demo_state: DemoApis) -> None:
    url, token = f"{demo_state.crm_url}/customers", _oauth_token(demo_state)
    ok(httpx.get(url, headers={"Authorization": f"Bearer {token}"}))
    assert ok(httpx.post(f"{demo_state.crm_url}/_control/expire-tokens")).json()["expired"] >= 1
    refused = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    ok(httpx.get(url, headers={"Authorization": f"Bearer {_oauth_token(demo_state)}"}))
    ok(httpx.get(url, headers={"Authorization": f"Bearer {demo_state.crm_token}"}))  # the static token never expires


# --- writes, bills, dirty records, schema ----------------------------------------------------------------------


def test_patch_sets_updated_at_and_moves_the_customer_to_the_end(crm: httpx.Client) -> None:
    newest = SORTED[-1]["updated_at"]
    change = {"company": "Renamed Ltd", "updated_at": "1999-01-01T00:00:00Z"}
    patched = ok(crm.patch("/customers/5", json=change)).json()
    assert patched["company"] == "Renamed Ltd" and patched["id"] == 5
    assert patched["updated_at"] >= newest  # the server's stamp, not the one sent
    assert patched["meta"] == {"updated_at": patched["updated_at"], "source": "crm"}
    changed = walk_cursor(crm, {"updated_since": patched["updated_at"]})
    assert [c["id"] for c in changed] == [5]
    assert walk_all(crm, {})[-1] == patched
    assert crm.patch("/customers/999", json={"company": "x"}).status_code == 404


def test_post_and_delete_customers(crm: httpx.Client) -> None:
    created = ok(
        crm.post(
            "/customers",
            json={"id": 7, "email": "new@example.com", "first_name": "N", "last_name": "O", "country": "GB"},
        )
    ).json()
    assert created["id"] == 201 and created["created_at"] == created["updated_at"]
    assert ok(crm.get("/customers/201")).json() == created
    assert crm.delete("/customers/201").status_code == 204
    assert crm.get("/customers/201").status_code == 404
    assert crm.delete("/customers/201").status_code == 404
    assert ok(crm.get("/customers")).json()["total"] == 200
    assert ok(crm.get("/_control/stats")).json()["writes"] == {"POST": 1, "DELETE": 1}


def test_bills_are_deterministic_and_paged(crm: httpx.Client) -> None:
    counts = {len(generate_bills(c["id"], c["country"])) for c in SORTED}
    assert counts == {0, 1, 2, 3}
    customer = next(c for c in SORTED if len(generate_bills(c["id"], c["country"])) == 3)
    expected = generate_bills(customer["id"], customer["country"])
    first = ok(crm.get(f"/customers/{customer['id']}/bills", params={"per_page": 2}))
    assert first.json() == {"data": expected[:2], "page": 1, "per_page": 2, "total": 3, "has_more": True}
    second = ok(crm.get(first.links["next"]["url"])).json()
    assert second["data"] == expected[2:] and second["has_more"] is False
    assert {b["customer_id"] for b in expected} == {customer["id"]}
    assert crm.get("/customers/999/bills").status_code == 404


def _schema() -> Draft202012Validator:
    text = resources.files("prefect_restful_etl.deployments.demo").joinpath("schemas", "crm_customer.json").read_text()
    return Draft202012Validator(json.loads(text), format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_schema_endpoint_serves_the_shipped_schema(crm: httpx.Client) -> None:
    served = ok(crm.get("/schemas/customer.json")).json()
    assert served == _schema().schema
    assert served["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert served["required"] == ["id", "email", "first_name", "last_name", "country", "updated_at"]
    assert served["properties"]["email"]["format"] == "email"
    assert "minimum" not in served["properties"]["lifetime_value"]  # a business rule, not structure
    Draft202012Validator.check_schema(served)
    assert all(_schema().is_valid(c) for c in walk_all(crm, {}))


@pytest.mark.parametrize(
    "position,flaw,schema_valid",
    [
        (0, lambda c: "email" not in c, False),
        (1, lambda c: c["email"] == "not-an-email", False),
        (2, lambda c: c["lifetime_value"] < 0, True),
        (3, lambda c: c["country"] == "ZZ", True),
    ],
    ids=["no-email", "malformed-email", "negative-lifetime-value", "unknown-country"],
)
def test_dirty_customers(crm: httpx.Client, position: int, flaw: Callable[[Record], bool], schema_valid: bool) -> None:
    dirty = ok(crm.post("/_control/dirty")).json()["data"]
    assert [c["id"] for c in dirty] == [201, 202, 203, 204]
    customer = dirty[position]
    assert flaw(customer)
    assert _schema().is_valid(customer) is schema_valid
    assert customer["updated_at"] >= SORTED[-1]["updated_at"]
    fresh = walk_page_number(crm, {"updated_since": customer["updated_at"]})
    assert customer in fresh


# --- faults and stats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault,statuses,retry_after",
    [
        ({"status": 429, "retry_after": "1"}, [429], "1"),
        ({"status": 429, "retry_after": 2}, [429], "2"),
        ({"status": 429, "retry_after": "Wed, 21 Oct 2026 07:28:00 GMT"}, [429], "Wed, 21 Oct 2026 07:28:00 GMT"),
        ({"status": 503, "times": 2}, [503, 503], None),
        ({"status": 500, "method": "GET"}, [500], None),
        ({"status": 500, "fail_nth": 2}, [200, 500], None),
    ],
    ids=["429-seconds", "429-int-seconds", "429-http-date", "503-twice", "500-get", "500-second"],
)
def test_crm_faults_then_success(
    crm: httpx.Client, fault: Record, statuses: list[int], retry_after: str | None
) -> None:
    assert ok(crm.post("/_control/faults", json={"path": "/customers", **fault})).status_code == 201
    ok(crm.get("/offset/customers"))  # another path is not affected
    responses = [crm.get("/customers") for _ in range(len(statuses) + 1)]
    assert [r.status_code for r in responses] == [*statuses, 200]
    for response in responses:
        assert response.headers.get("retry-after") == (retry_after if response.status_code != 200 else None)
    stats = ok(crm.get("/_control/stats")).json()
    assert stats["requests"] == {"GET /offset/customers": 1, "GET /customers": len(statuses) + 1}
    assert sum(stats["statuses"].values()) == len(statuses) + 2


def test_fault_for_another_method_leaves_gets_alone(crm: httpx.Client) -> None:
    ok(crm.post("/_control/faults", json={"path": "/customers", "method": "POST", "status": 503}))
    ok(crm.get("/customers"))
    assert crm.post("/customers", json={"email": "a@b.co"}).status_code == 503
    assert crm.post("/customers", json={"email": "a@b.co"}).status_code == 201


def test_dropped_connection_then_success(crm: httpx.Client) -> None:
    ok(crm.post("/_control/faults", json={"path": "/cursor/customers", "drop": True}))
    with pytest.raises(httpx.RemoteProtocolError):
        crm.get("/cursor/customers")
    ok(crm.get("/cursor/customers"))
    assert ok(crm.get("/_control/stats")).json()["statuses"] == {"dropped": 1, "200": 1}


@pytest.mark.parametrize(
    "fault",
    [{"status": 200}, {"times": 0}, {"fail_nth": 0}, {"colour": "red"}],
    ids=["not-an-error-status", "zero-times", "zeroth", "unknown-field"],
)
def test_bad_fault_specs_are_refused(crm: httpx.Client, fault: Record) -> None:
    assert crm.post("/_control/faults", json=fault).status_code == 422


def test_stats_count_by_route_template_and_reset(crm: httpx.Client) -> None:
    for customer_id in (1, 2, 3):
        ok(crm.get(f"/customers/{customer_id}/bills"))
    assert crm.get("/customers", headers={"Authorization": ""}).status_code == 401
    stats = ok(crm.get("/_control/stats")).json()
    assert stats["requests"] == {"GET /customers/{customer_id}/bills": 3, "GET /customers": 1}
    assert stats["statuses"] == {"200": 3, "401": 1}
    ok(crm.post("/_control/reset-stats"))
    assert ok(crm.get("/_control/stats")).json() == {"requests": {}, "statuses": {}, "writes": {}}


# --- accounting --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers,status",
    [({}, 401), ({"X-API-Key": "wrong"}, 401), ({"Authorization": "Bearer KEY"}, 401), ({"X-API-Key": "KEY"}, 200)],
    ids=["none", "wrong-key", "key-as-bearer", "right-key"],
)
def test_accounting_auth(demo_state: DemoApis, headers: dict[str, str], status: int) -> None:
    headers = {k: v.replace("KEY", demo_state.accounting_api_key) for k, v in headers.items()}
    allowed = {"/customers": 200, "/bills": 200, "/customers/AC-000001": 404, "/bills/BL-000001": 404}  # none stored
    for path, status_if_allowed in allowed.items():
        response = httpx.get(f"{demo_state.accounting_url}{path}", headers=headers)
        assert response.status_code == (status_if_allowed if status == 200 else status), path
    assert ok(httpx.get(f"{demo_state.accounting_url}/_control/dump")).json() == {"customers": [], "bills": []}


def test_accounting_customer_crud(accounting: httpx.Client) -> None:
    scd2 = {"valid_from": "2026-01-01", "valid_to": None, "is_current": True, "version": 1, "batch_id": "b-1"}
    created = ok(
        accounting.post(
            "/customers", json={"id": "mine", "external_id": "17", "name": "Acme", "email": "ap@acme.example", **scd2}
        )
    )
    assert created.status_code == 201
    record = created.json()
    assert record == {"id": "AC-000001", "external_id": "17", "name": "Acme", "email": "ap@acme.example", **scd2}
    assert ok(accounting.get("/customers/AC-000001")).json() == record
    replaced = ok(accounting.put("/customers/AC-000001", json={"name": "Acme 2", "email": "b@acme.example"})).json()
    assert replaced == {"id": "AC-000001", "name": "Acme 2", "email": "b@acme.example"}
    merged = ok(accounting.patch("/customers/AC-000001", json={"is_current": False})).json()
    assert merged == {**replaced, "is_current": False}
    assert accounting.delete("/customers/AC-000001").status_code == 204
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        body = {"name": "x", "email": "x@y.z"} if method in ("PUT", "PATCH") else None
        assert accounting.request(method, "/customers/AC-000001", json=body).status_code == 404, method
    assert ok(accounting.post("/customers", json={"name": "B", "email": "b@b.io"})).json()["id"] == "AC-000002"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"email": "a@b.io"}, "name"),
        ({"name": "   ", "email": "a@b.io"}, "name"),
        ({"name": 7, "email": "a@b.io"}, "name"),
        ({"name": "A"}, "email"),
        ({"name": "A", "email": "not-an-email"}, "email"),
        ({"name": "A", "email": "a@b"}, "email"),
        ({"name": "A", "email": None}, "email"),
        ([{"name": "A", "email": "a@b.io"}], "body"),
    ],
    ids=["no-name", "blank-name", "name-not-text", "no-email", "malformed-email", "email-no-dot", "null-email", "list"],
)
def test_accounting_customer_validation(accounting: httpx.Client, body: Any, field: str) -> None:
    response = accounting.post("/customers", json=body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"{field}:")
    assert ok(accounting.get("/_control/dump")).json()["customers"] == []


def test_accounting_put_and_patch_validate_the_result(accounting: httpx.Client) -> None:
    ok(accounting.post("/customers", json={"name": "A", "email": "a@b.io"}))
    assert accounting.patch("/customers/AC-000001", json={"email": "broken"}).status_code == 422
    assert accounting.put("/customers/AC-000001", json={"email": "a@b.io"}).status_code == 422
    assert ok(accounting.get("/customers/AC-000001")).json() == {"id": "AC-000001", "name": "A", "email": "a@b.io"}
    assert accounting.post("/customers", content=b"{not json").status_code == 400


@pytest.mark.parametrize(
    "body,status,detail",
    [
        ({"customer_id": "AC-000001", "amount": 12.5}, 201, None),
        ({"customer_id": "AC-000001", "amount": 12}, 201, None),
        ({"customer_id": "AC-999999", "amount": 12.5}, 422, "customer_id:"),
        ({"amount": 12.5}, 422, "customer_id:"),
        ({"customer_id": "AC-000001", "amount": "12.50"}, 422, "amount:"),
        ({"customer_id": "AC-000001", "amount": True}, 422, "amount:"),
    ],
    ids=["ok", "int-amount", "unknown-customer", "no-customer", "amount-text", "amount-bool"],
)
def test_accounting_bills(accounting: httpx.Client, body: Record, status: int, detail: str | None) -> None:
    ok(accounting.post("/customers", json={"name": "A", "email": "a@b.io"}))
    response = accounting.post("/bills", json=body)
    assert response.status_code == status
    if detail:
        assert response.json()["detail"].startswith(detail)
    else:
        assert response.json() == {"id": "BL-000001", **body}
        assert ok(accounting.get("/bills", params={"customer_id": "AC-000001"})).json()["total"] == 1


def test_accounting_bulk_upsert(accounting: httpx.Client) -> None:
    first = [{"external_id": str(n), "name": f"C{n}", "email": f"c{n}@x.io"} for n in (1, 2, 3)]
    assert ok(accounting.post("/customers/bulk", json=first)).json() == [
        {"id": f"AC-00000{n}", "status": "created", "detail": None} for n in (1, 2, 3)
    ]
    second = [
        {"external_id": "2", "name": "C2 renamed"},
        {"external_id": 4, "name": "C4", "email": "c4@x.io"},
        {"name": "no key", "email": "n@x.io"},
        {"external_id": "5", "name": "C5", "email": "bad"},
        "text",
    ]
    results = ok(accounting.post("/customers/bulk", json=second)).json()
    assert [(r["id"], r["status"]) for r in results] == [
        ("AC-000002", "updated"),
        ("AC-000004", "created"),
        (None, "error"),
        (None, "error"),
        (None, "error"),
    ]
    assert results[2]["detail"].startswith("external_id:") and results[3]["detail"].startswith("email:")
    stored = ok(accounting.get("/_control/dump")).json()["customers"]
    assert [c["id"] for c in stored] == ["AC-000001", "AC-000002", "AC-000003", "AC-000004"]
    assert stored[1] == {"id": "AC-000002", "external_id": "2", "name": "C2 renamed", "email": "c2@x.io"}
    assert ok(accounting.get("/customers", params={"external_id": "4"})).json()["data"] == [stored[3]]
    assert ok(accounting.get("/customers", params={"external_id": "9"})).json()["total"] == 0
    too_many = [{"external_id": str(n), "name": "n", "email": "n@x.io"} for n in range(101)]
    assert accounting.post("/customers/bulk", json=too_many).status_code == 422
    assert accounting.post("/customers/bulk", json={"external_id": "1"}).status_code == 422
    assert ok(accounting.get("/_control/stats")).json()["writes"] == {"POST": 2}


def test_accounting_bulk_refuses_an_ambiguous_external_id(accounting: httpx.Client) -> None:
    for version in (1, 2):  # SCD2: two versions of one customer share the natural key
        ok(accounting.post("/customers", json={"external_id": "1", "name": "A", "email": "a@x.io", "version": version}))
    result = ok(accounting.post("/customers/bulk", json=[{"external_id": "1", "name": "B"}])).json()
    assert result[0]["status"] == "error" and "matches 2" in result[0]["detail"]
    assert ok(accounting.get("/customers", params={"external_id": "1"})).json()["total"] == 2


def test_accounting_pages_in_insertion_order(accounting: httpx.Client) -> None:
    for n in range(5):
        ok(accounting.post("/customers", json={"name": f"C{n}", "email": f"c{n}@x.io"}))
    ok(accounting.put("/customers/AC-000002", json={"name": "moved?", "email": "m@x.io"}))
    response, ids = ok(accounting.get("/customers", params={"per_page": 2})), []
    for _ in range(MAX_PAGES):
        body = response.json()
        assert (body["per_page"], body["total"]) == (2, 5)
        ids += [c["id"] for c in body["data"]]
        if "next" not in response.links:
            break
        response = ok(accounting.get(response.links["next"]["url"]))
    assert ids == [f"AC-00000{n}" for n in range(1, 6)]


def test_accounting_fail_nth_write(accounting: httpx.Client) -> None:
    ok(accounting.post("/_control/faults", json={"method": "POST", "fail_nth": 3, "status": 500, "times": 1}))
    statuses = []
    for n in range(5):
        statuses.append(accounting.post("/customers", json={"name": f"C{n}", "email": f"c{n}@x.io"}).status_code)
        ok(accounting.get("/customers"))  # reads do not count towards the Nth write
    assert statuses == [201, 201, 500, 201, 201]
    assert [c["name"] for c in ok(accounting.get("/_control/dump")).json()["customers"]] == ["C0", "C1", "C3", "C4"]
    stats = ok(accounting.get("/_control/stats")).json()
    assert stats["writes"] == {"POST": 4}
    assert stats["requests"] == {"POST /customers": 5, "GET /customers": 5}
    assert stats["statuses"] == {"201": 4, "500": 1, "200": 5}


@pytest.mark.parametrize("drop", [False, True], ids=["answer-503", "drop-connection"])
def test_accounting_fault_after_the_write_lands(accounting: httpx.Client, drop: bool) -> None:
    """`after`: the handler runs (the write lands), then its answer is lost, as when a proxy times out."""
    ok(accounting.post("/_control/faults", json={"method": "POST", "status": 503, "after": True, "drop": drop}))
    if drop:
        with pytest.raises(httpx.RemoteProtocolError):
            accounting.post("/customers", json={"name": "A", "email": "a@x.io"})
    else:
        lost = accounting.post("/customers", json={"name": "A", "email": "a@x.io"})
        assert (lost.status_code, lost.json()) == (503, {"detail": "injected fault: 503"})
    assert [c["name"] for c in ok(accounting.get("/_control/dump")).json()["customers"]] == ["A"]
    stats = ok(accounting.get("/_control/stats")).json()
    assert (stats["writes"], stats["statuses"]) == ({"POST": 1}, {"dropped" if drop else "503": 1})
    assert ok(accounting.post("/customers", json={"name": "B", "email": "b@x.io"})).status_code == 201


def test_accounting_429_with_retry_after(accounting: httpx.Client) -> None:
    ok(accounting.post("/_control/faults", json={"path": "/customers/bulk", "status": 429, "retry_after": "1"}))
    refused = accounting.post("/customers/bulk", json=[{"external_id": "1", "name": "A", "email": "a@x.io"}])
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "1")
    assert ok(accounting.get("/_control/dump")).json()["customers"] == []
    ok(accounting.post("/customers/bulk", json=[{"external_id": "1", "name": "A", "email": "a@x.io"}]))


def test_accounting_stats_by_template_and_reset(accounting: httpx.Client) -> None:
    ok(accounting.post("/customers", json={"name": "A", "email": "a@x.io"}))
    ok(accounting.get("/customers/AC-000001"))
    ok(accounting.patch("/customers/AC-000001", json={"name": "B"}))
    stats = ok(accounting.get("/_control/stats")).json()
    assert stats["requests"] == {
        "POST /customers": 1,
        "GET /customers/{record_id}": 1,
        "PATCH /customers/{record_id}": 1,
    }
    assert stats["writes"] == {"POST": 1, "PATCH": 1}
    ok(accounting.post("/_control/reset"))
    assert ok(accounting.get("/_control/dump")).json() == {"customers": [], "bills": []}
    assert ok(accounting.post("/customers", json={"name": "A", "email": "a@x.io"})).json()["id"] == "AC-000001"


def test_accounting_answers_a_create_sent_again_with_its_idempotency_key_from_the_first(
    accounting: httpx.Client,
) -> None:
    body = {"external_id": "1", "name": "A", "email": "a@x.io"}
    first = ok(accounting.post("/customers", json=body, headers={"Idempotency-Key": "k-1"}))
    again = ok(accounting.post("/customers", json=body, headers={"Idempotency-Key": "k-1"}))
    assert (again.status_code, again.json(), again.headers["idempotent-replayed"]) == (201, first.json(), "true")
    other = ok(accounting.post("/customers", json=body, headers={"Idempotency-Key": "k-2"}))
    assert other.json()["id"] == "AC-000002" and "idempotent-replayed" not in other.headers
    assert [c["id"] for c in ok(accounting.get("/_control/dump")).json()["customers"]] == ["AC-000001", "AC-000002"]
    assert ok(accounting.get("/_control/idempotency")).json() == {"keys": 2, "replays": 1}
    ok(accounting.post("/_control/reset"))
    assert ok(accounting.get("/_control/idempotency")).json() == {"keys": 0, "replays": 0}


def test_accounting_in_its_own_representation_stores_the_same_meaning_spelt_its_way(accounting: httpx.Client) -> None:
    assert accounting.post("/_control/representation", json={"mode": "odd"}).status_code == 422
    ok(accounting.post("/_control/representation", json={"mode": "own"}))
    sent = {
        "external_id": "7",
        "name": "A",
        "email": "a@x.io",
        "score": 0,
        "ratio": 2.0,
        "balance": "1234.50",
        "at": "2026-03-01T00:00:00Z",
        "gone": None,
        "address": {"a": 1, "b": None, "c": "x"},
        "vip": True,
    }
    stored = ok(accounting.post("/customers", json=sent)).json()
    assert stored == {
        "id": "AC-000001",
        "external_id": "7",
        "name": "A",
        "email": "a@x.io",
        "score": 0.0,
        "ratio": 2,
        "balance": 1234.5,
        "at": "2026-03-01T01:00:00.000+01:00",
        "address": {"c": "x", "a": 1.0},
        "vip": True,
    }
    assert list(stored["address"]) == ["c", "a"] and isinstance(stored["score"], float)
    merged = ok(accounting.patch("/customers/AC-000001", json={"score": None, "ratio": 3})).json()
    assert "score" not in merged and merged["ratio"] == 3.0
    ok(accounting.post("/_control/reset"))  # back to storing values as sent
    assert ok(accounting.post("/customers", json=sent)).json() == {"id": "AC-000001", **sent}


def test_accounting_refuses_the_creates_of_one_key_as_often_as_told(accounting: httpx.Client) -> None:
    assert accounting.post("/_control/refuse-key", json={"external_id": "7", "times": 0}).status_code == 422
    ok(accounting.post("/_control/refuse-key", json={"external_id": "7", "status": 503, "times": 2}))
    seven, eight = ({"external_id": n, "name": "A", "email": "a@x.io"} for n in ("7", "8"))
    assert [accounting.post("/customers", json=seven).status_code for _ in range(3)] == [503, 503, 201]
    assert accounting.post("/customers", json=eight).status_code == 201
    assert [c["external_id"] for c in ok(accounting.get("/_control/dump")).json()["customers"]] == ["7", "8"]


def test_accounting_latency_is_set_checked_and_reset(accounting: httpx.Client) -> None:
    for wrong in (-1, 11, "1", True):
        assert accounting.post("/_control/latency", json={"seconds": wrong}).status_code == 422
    assert ok(accounting.post("/_control/latency", json={"seconds": 0.01})).json() == {"seconds": 0.01}
    assert ok(accounting.post("/customers", json={"name": "A", "email": "a@x.io"})).status_code == 201
    ok(accounting.post("/_control/reset"))
    assert ok(accounting.post("/_control/latency", json={"seconds": 0})).json() == {"seconds": 0.0}


# --- the process and the generator -----------------------------------------------------------------------------


def test_secrets_come_from_the_environment_with_demo_defaults() -> None:
    assert crm_secrets_from_env({}) == CrmSecrets()
    env = {"DEMO_CRM_TOKEN": "t", "DEMO_CRM_PASSWORD": "p", "DEMO_CRM_CLIENT_SECRET": ""}
    secrets = crm_secrets_from_env(env)
    assert (secrets.token, secrets.password, secrets.client_secret) == ("t", "p", CrmSecrets().client_secret)


def test_demo_apis_hides_its_secrets_and_sets_them_in_the_environment(demo_apis: DemoApis) -> None:
    assert demo_apis.crm_token not in repr(demo_apis) and demo_apis.accounting_api_key not in repr(demo_apis)
    assert demo_apis.environment()["DEMO_ACCOUNTING_API_KEY"] == demo_apis.accounting_api_key
    for url in (demo_apis.crm_url, demo_apis.accounting_url):
        assert httpx.URL(url).host == "127.0.0.1" and httpx.URL(url).port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_process_exits_cleanly_on_signal(sig: signal.Signals) -> None:
    apis = DemoApis(crm_customers=5, seed=7).start()
    try:
        customers = ok(httpx.get(f"{apis.crm_url}/all/customers", params={"api_key": apis.crm_api_key})).json()
        assert [c["id"] for c in sorted(customers, key=lambda c: c["id"])] == [1, 2, 3, 4, 5]
        assert customers == sorted(generate_customers(5, 7), key=lambda c: (c["updated_at"], c["id"]))
    finally:
        assert apis.stop(sig) == 0
    assert apis.stop() is None


def test_the_runner_prints_one_line_reads_secrets_from_env_and_stops_when_stdin_closes() -> None:
    env = {**os.environ, "DEMO_CRM_TOKEN": "token-from-env", "DEMO_ACCOUNTING_API_KEY": "key-from-env"}
    command = [
        sys.executable,
        "-m",
        "prefect_restful_etl.deployments.demo.apis",
        "--crm-customers",
        "3",
        "--stop-on-stdin-eof",
    ]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert select.select([process.stdout], [], [], 30)[0], "no ready line within 30s"
        assert process.stdout is not None and process.stdin is not None
        ready = json.loads(process.stdout.readline())
        assert set(ready) == {"crm", "accounting", "pid"} and ready["pid"] == process.pid
        crm, accounting = ready["crm"], ready["accounting"]
        assert ok(httpx.get(f"{crm}/all/customers", headers={"Authorization": "Bearer token-from-env"})).json()
        assert (
            httpx.get(f"{crm}/all/customers", headers={"Authorization": f"Bearer {CrmSecrets().token}"}).status_code
            == 401
        )
        ok(httpx.get(f"{accounting}/customers", headers={"X-API-Key": "key-from-env"}))
        process.stdin.close()
        assert process.wait(20) == 0
        assert process.stdout.read() == b""  # exactly one line
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(20)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_a_process_that_is_not_ready_in_time_is_stopped() -> None:
    apis = DemoApis(crm_customers=5, ready_timeout=0.0)
    with pytest.raises(DemoApisError, match="not ready"):
        apis.start()
    assert apis.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(apis.pid, 0)


def test_generation_is_deterministic_per_seed() -> None:
    assert generate_customers(50, 1) == generate_customers(50, 1) != generate_customers(50, 2)
    stamps = [c["updated_at"] for c in generate_customers(200, 42)]
    assert all(s.endswith("Z") for s in stamps) and len(set(stamps)) < len(stamps)  # ties for the id to break


async def test_fifty_thousand_customers_page_whole() -> None:
    """A large demo CRM pages through every customer once (its speed is the benchmarks', not a test's)."""
    app = create_crm_app(customers=50_000)
    transport = httpx.ASGITransport(app=app)
    params = {"api_key": CrmSecrets().api_key}
    async with httpx.AsyncClient(transport=transport, base_url="http://demo", params=params) as client:
        ids, page = [], 1
        while True:
            body = (await client.get("/customers", params={"page": page, "per_page": 1000})).json()
            ids += [c["id"] for c in body["data"]]
            if not body["has_more"]:
                break
            page += 1
    assert sorted(ids) == list(range(1, 50_001))
