"""The callback: the batch report POSTed to a real local receiver, signed with HMAC-SHA256; failures logged."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import pytest
from callback_support import CallbackReceiver, DrippingReceiver
from pydantic import SecretStr

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
