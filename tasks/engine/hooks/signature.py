"""Signature checks of a hook: HMAC-SHA256 over the raw body, or over `<timestamp>.<body>` with a tolerance.

```
X-Signature: sha256=5d41402abc4b2a76b9719d911017c592...              HmacSignature (raw body)
Stripe-Signature: t=1767225600,v1=5d41402abc4b2a76...,v1=...          TimestampedSignature (Stripe's form)
X-Restful-Etl-Timestamp: 1767225600                                  TimestampedSignature with timestamp_header
X-Restful-Etl-Signature: sha256=5d41402abc4b2a76...
```
Digests are compared in constant time; no message quotes a header's value or the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from prefect_restful_etl.tasks.engine.hooks.config import HmacSignature, Signature, TimestampedSignature


class SignatureRefused(Exception):
    """Why a hook's signature does not hold: `reason` is `signature` (missing or wrong) or `stale`."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def digest(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def encode(raw: bytes, encoding: str) -> str:
    return raw.hex() if encoding == "hex" else base64.b64encode(raw).decode()


def _decode(text: str, encoding: str) -> bytes | None:
    try:
        return bytes.fromhex(text) if encoding == "hex" else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        return None


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name) or headers.get(name.lower())
    if not value:
        raise SignatureRefused("signature", f"no {name} header")
    return value.strip()


def verify(config: Signature, secret: str, body: bytes, headers: Mapping[str, str], now: float | None = None) -> None:
    """Return when the hook is signed with `secret`; raise `SignatureRefused` otherwise."""
    if isinstance(config, HmacSignature):
        given = _header(headers, config.header)
        _match(config.header, [given.removeprefix(config.prefix)], config.encoding, digest(secret, body))
        return
    stamp, candidates = _timestamped_parts(config, headers)
    try:
        moment = float(stamp)
    except ValueError:
        raise SignatureRefused("signature", "the timestamp is not a number of seconds") from None
    current = time.time() if now is None else now
    if abs(current - moment) > config.tolerance:
        raise SignatureRefused("stale", f"the timestamp is more than {config.tolerance:g} s from now")
    _match(config.header, candidates, config.encoding, digest(secret, stamp.encode() + b"." + body))


def _timestamped_parts(config: TimestampedSignature, headers: Mapping[str, str]) -> tuple[str, list[str]]:
    if config.timestamp_header is not None:
        stamp = _header(headers, config.timestamp_header)
        return stamp, [_header(headers, config.header).removeprefix(config.prefix)]
    stamp, candidates = "", []
    for part in _header(headers, config.header).split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            stamp = value
        elif name == config.scheme:
            candidates.append(value)
    if not stamp or not candidates:
        raise SignatureRefused("signature", f"{config.header} lacks t= or {config.scheme}=")
    return stamp, candidates


def _match(header: str, candidates: list[str], encoding: str, expected: bytes) -> None:
    for candidate in candidates:
        given = _decode(candidate, encoding)
        if given is not None and hmac.compare_digest(given, expected):
            return
    raise SignatureRefused("signature", f"{header} does not match the body")


def sign(config: Signature, secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers a sender adds for `body` (the demo CRM's hooks, the tests and the benchmark sign with it)."""
    if isinstance(config, HmacSignature):
        return {config.header: config.prefix + encode(digest(secret, body), config.encoding)}
    stamp = str(int(time.time() if now is None else now))
    signature = encode(digest(secret, stamp.encode() + b"." + body), config.encoding)
    if config.timestamp_header is not None:
        return {config.timestamp_header: stamp, config.header: config.prefix + signature}
    return {config.header: f"t={stamp},{config.scheme}={signature}"}
