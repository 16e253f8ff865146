"""Signature checks: HMAC over the raw body, Stripe's timestamped form, a separate timestamp header."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import pytest

from prefect_restful_etl.tasks.engine.hooks.config import HmacSignature, TimestampedSignature
from prefect_restful_etl.tasks.engine.hooks.signature import SignatureRefused, digest, encode, sign, verify

SECRET, BODY, NOW = "whsec_test_secret", b'{"id": "evt_1", "data": {"object": {"id": 7}}}', 1_767_225_600.0
HMAC, STRIPE = HmacSignature(), TimestampedSignature()
SPLIT = TimestampedSignature(header="X-Sig", timestamp_header="X-Ts", prefix="sha256=", tolerance=60)
SHOPIFY = HmacSignature(header="X-Shopify-Hmac-Sha256", encoding="base64", prefix="")


@pytest.mark.parametrize("config", [HMAC, STRIPE, SPLIT, SHOPIFY], ids=["hmac", "stripe", "split", "base64"])
def test_a_hook_signed_with_the_secret_passes(config: Any) -> None:
    verify(config, SECRET, BODY, sign(config, SECRET, BODY, now=NOW), now=NOW + 1)


def test_stripe_form_reads_t_and_v1_and_accepts_any_of_several_v1() -> None:
    good = encode(digest(SECRET, f"{int(NOW)}.".encode() + BODY), "hex")
    header = f"t={int(NOW)},v1={'0' * 64},v0=ignored,v1={good}"
    verify(STRIPE, SECRET, BODY, {"Stripe-Signature": header}, now=NOW)


def _tampered(config: Any) -> dict[str, str]:
    return sign(config, SECRET, BODY + b" ", now=NOW)


@pytest.mark.parametrize(
    ("config", "headers", "now", "reason"),
    [
        (HMAC, {}, NOW, "signature"),
        (HMAC, lambda: sign(HMAC, "another secret", BODY), NOW, "signature"),
        (HMAC, lambda: _tampered(HMAC), NOW, "signature"),
        (HMAC, {"X-Signature": "sha256=not-hex"}, NOW, "signature"),
        (STRIPE, lambda: sign(STRIPE, SECRET, BODY, now=NOW), NOW + 301, "stale"),
        (STRIPE, lambda: sign(STRIPE, SECRET, BODY, now=NOW + 400), NOW, "stale"),
        (STRIPE, {"Stripe-Signature": "v1=abc"}, NOW, "signature"),
        (STRIPE, {"Stripe-Signature": f"t=soon,v1={'0' * 64}"}, NOW, "signature"),
        (STRIPE, lambda: _tampered(STRIPE), NOW, "signature"),
        (SPLIT, lambda: sign(SPLIT, SECRET, BODY, now=NOW - 61), NOW, "stale"),
        (SPLIT, lambda: {"X-Sig": sign(SPLIT, SECRET, BODY, now=NOW)["X-Sig"]}, NOW, "signature"),
    ],
    ids=[
        "no-header",
        "wrong-secret",
        "tampered",
        "garbage",
        "stripe-stale",
        "stripe-ahead",
        "stripe-no-t",
        "stripe-bad-t",
        "stripe-tampered",
        "split-stale",
        "split-no-timestamp",
    ],
)
def test_a_hook_not_signed_as_configured_is_refused_saying_why(
    config: Any, headers: Any, now: float, reason: str
) -> None:
    given = headers() if callable(headers) else headers
    with pytest.raises(SignatureRefused) as refused:
        verify(config, SECRET, BODY, given, now=now)
    assert refused.value.reason == reason
    assert SECRET not in str(refused.value) and all(v not in str(refused.value) for v in given.values())


@pytest.mark.parametrize(("skew", "expectation"), [(299, nullcontext()), (-299, nullcontext())])
def test_within_the_tolerance_either_side_passes(skew: float, expectation: Any) -> None:
    with expectation:
        verify(STRIPE, SECRET, BODY, sign(STRIPE, SECRET, BODY, now=NOW), now=NOW + skew)
