"""The callback: when a batch ends, its report is POSTed to the run's `callback_url`, signed with HMAC-SHA256.

The signature covers the time of sending and the body, `<timestamp>.<body>` (the timestamp in Unix seconds,
sent as `X-Restful-Etl-Timestamp`), so a receiver can refuse a replayed old request. It checks both with the
secret it shares with the caller, which arrives with the run's credentials (`{"callback": {"token": "..."}}`,
sealed or not) and is never stored:

```python
timestamp = request.headers["X-Restful-Etl-Timestamp"]
expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
fresh = abs(time.time() - int(timestamp)) <= 300
fresh and hmac.compare_digest(expected, request.headers["X-Restful-Etl-Signature"])
```
(`verify` below does exactly this.)
A callback that fails is logged and the batch keeps its own ending: the report is in Prefect and the audit
database either way. One deadline (`RESTFUL_ETL_CALLBACK_TIMEOUT`, 10 s) covers connecting, sending and
receiving together: httpx's timeouts are per operation, so a receiver answering one byte every few seconds
would otherwise hold a finished batch Running for as long as it likes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from prefect_restful_etl.tasks.engine.report import BatchReport
from prefect_restful_etl.tasks.engine.settings import Settings

SIGNATURE_HEADER = "X-Restful-Etl-Signature"
TIMESTAMP_HEADER = "X-Restful-Etl-Timestamp"
EVENT_HEADER = "X-Restful-Etl-Event"


def sign(body: bytes, secret: str, timestamp: str) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    body: bytes, secret: str, signature: str, timestamp: str, *, tolerance: float = 300.0, now: float | None = None
) -> bool:
    """The receiver's check: signed with `secret`, and sent within `tolerance` seconds of `now`."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(body, secret, timestamp), signature)


def where(url: str) -> str:
    """The URL without its query, user info or fragment, for logs: those parts may carry tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


async def post_report(
    url: str,
    report: BatchReport,
    secret: SecretStr | None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    *,
    timeout: float | None = None,
) -> bool:
    """POST the report; True when the receiver answered 2xx within `timeout` seconds all told (default:
    `RESTFUL_ETL_CALLBACK_TIMEOUT`). Never raises: the batch has already ended."""
    deadline = Settings().callback_timeout if timeout is None else timeout
    body = report.model_dump_json().encode()
    headers = {"Content-Type": "application/json", EVENT_HEADER: f"batch.{report.status.lower()}"}
    if secret is not None:
        timestamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = sign(body, secret.get_secret_value(), timestamp)
    else:
        logger.warning("callback to %s is unsigned: no credentials[%r].token given", where(url), "callback")
    try:
        async with asyncio.timeout(deadline), httpx.AsyncClient(timeout=deadline) as client:
            response = await client.post(url, content=body, headers=headers)
            response.raise_for_status()
    except TimeoutError:
        logger.warning("callback to %s gave up: no whole answer within its deadline of %s s", where(url), deadline)
        return False
    except httpx.HTTPStatusError as ex:
        logger.warning("callback to %s answered %s", where(url), ex.response.status_code)
        return False
    except (httpx.HTTPError, httpx.InvalidURL) as ex:
        logger.warning("callback to %s failed: %s", where(url), type(ex).__name__)
        return False
    logger.info("batch report posted to %s", where(url))
    return True
