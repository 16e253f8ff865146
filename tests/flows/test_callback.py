"""The callback: the batch report POSTed to a real local receiver, signed with HMAC-SHA256; failures logged."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

import pytest
from callback_support import CallbackReceiver, DrippingReceiver
from pydantic import SecretStr
from restart_support import rest_parameters, wait_for
from served_support import FINAL, Served

from prefect_restful_etl.deployments.demo.apis import DemoApis
from prefect_restful_etl.flows.callback import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    post_report,
    sign,
    verify,
    where,
)
from prefect_restful_etl.tasks.engine.report import BatchReport

from fixtures.servers.prefect import PrefectServer

logger = logging.getLogger("test-callback")


def report(status: str = "COMPLETED") -> BatchReport:
    return BatchReport(
        batch_id="b-1",
        tenant_id="acme",
        batch_type="crm-to-accounting",
        status=status,
        full_refresh=False,
        jobs=[],
        counts={"inserted": 3},
        seconds=1.5,
        audit_database="sqlite://",
    )


BODY, SECRET, SENT = b'{"a": 1}', "s3cret", "1795000000"
SIGNED = "sha256=" + hmac.new(SECRET.encode(), f"{SENT}.".encode() + BODY, hashlib.sha256).hexdigest()


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_as_receivers_compute_it() -> None:
    assert sign(BODY, SECRET, SENT) == SIGNED


@pytest.mark.parametrize(
    "body,secret,timestamp,now,valid",
    [
        (BODY, SECRET, SENT, int(SENT) + 10, True),
        (BODY + b" ", SECRET, SENT, int(SENT), False),
        (BODY, "other", SENT, int(SENT), False),
        (BODY, SECRET, str(int(SENT) + 1), int(SENT), False),
        (BODY, SECRET, SENT, int(SENT) + 301, False),
        (BODY, SECRET, "yesterday", int(SENT), False),
    ],
    ids=["valid", "body-changed", "other-secret", "timestamp-changed", "too-old", "not-a-timestamp"],
)
def test_verify_wants_the_same_body_secret_and_timestamp_and_a_fresh_one(
    body: bytes, secret: str, timestamp: str, now: int, valid: bool
) -> None:
    assert verify(body, secret, SIGNED, timestamp, now=now) is valid


async def test_the_report_arrives_signed_and_verifiable() -> None:
    with CallbackReceiver() as receiver:
        assert await post_report(receiver.url, report(), SecretStr("hook-secret"), logger)
    (call,) = receiver.received
    assert json.loads(call.body)["counts"] == {"inserted": 3}
    assert verify(call.body, "hook-secret", call.headers[SIGNATURE_HEADER], call.headers[TIMESTAMP_HEADER])
    assert call.headers[EVENT_HEADER] == "batch.completed"
    assert "hook-secret" not in json.dumps(call.headers) + call.body.decode()


@pytest.mark.parametrize("status", [500, 404], ids=["server-error", "not-found"])
async def test_a_refusing_receiver_is_logged_not_raised(status: int, caplog: pytest.LogCaptureFixture) -> None:
    with CallbackReceiver(status=status) as receiver:
        assert not await post_report(receiver.url + "?token=in-the-url", report("FAILED"), SecretStr("s"), logger)
    assert f"answered {status}" in caplog.text and "in-the-url" not in caplog.text
    assert receiver.received[0].headers[EVENT_HEADER] == "batch.failed"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/closed", "not a url"], ids=["refused", "malformed"])
async def test_an_unreachable_receiver_is_logged_not_raised(url: str, caplog: pytest.LogCaptureFixture) -> None:
    assert not await post_report(url, report(), None, logger)
    assert "callback to" in caplog.text and "unsigned" in caplog.text


def test_where_keeps_the_query_and_user_info_out_of_logs() -> None:
    assert (
        where("https://user:pw@hooks.example.com:8443/etl/done?token=abc#x")
        == "https://hooks.example.com:8443/etl/done"
    )


async def test_a_receiver_that_answers_a_byte_at_a_time_cannot_hold_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    """Every byte arrives within httpx's read timeout, so only one deadline over connect, send and receive
    together ends the call; the answer would take about 20 seconds."""
    with DrippingReceiver(pause=0.3) as receiver:
        assert not await post_report(receiver.url, report(), SecretStr("s"), logger, timeout=1.0)
        assert receiver.requests == 1 and receiver.answered == 0
    assert "deadline" in caplog.text


@pytest.mark.integration
async def test_a_dripping_receiver_cannot_hold_a_served_batch_running(
    prefect_server: PrefectServer, etl_home: Path, demo_state: DemoApis
) -> None:
    """A run created through the REST API of a served deployment, its callback a receiver that never finishes
    its answer: the batch still completes, once the callback's deadline (RESTFUL_ETL_CALLBACK_TIMEOUT) passes."""
    settings = {"RESTFUL_ETL_HOME": str(etl_home), "RESTFUL_ETL_CALLBACK_TIMEOUT": "3"}
    with DrippingReceiver(pause=1.0, endless=True) as receiver:
        served = Served(prefect_server, settings, etl_home / "serve.log", "callback-test")
        try:
            await wait_for(lambda: served.deployment_id() is not None, "the served deployment registered")
            batch_id = served.start_run(rest_parameters(demo_state, "drip", callback_url=receiver.url))
            await wait_for(lambda: served.state(batch_id) in FINAL, "the batch ended", timeout=120)
            assert served.state(batch_id) == "COMPLETED", served.log_tail()
            assert (receiver.requests, receiver.answered) == (1, 0)  # sent whole; its answer still dripping
        finally:
            served.stop()
