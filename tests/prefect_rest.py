"""A test's own client of a Prefect server's REST API, which asks again when the server is busy."""

from __future__ import annotations

import time

import httpx

BUSY = (429, 503)


class RetryWhenBusy(httpx.HTTPTransport):
    """As Prefect's own client does: a 503 or 429 (a SQLite-backed server busy on a loaded machine) is sent
    again after a pause, up to `attempts` times; the last answer is returned as it is."""

    def __init__(self, attempts: int = 10, pause: float = 0.5) -> None:
        super().__init__()
        self.attempts, self.pause = attempts, pause

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(self.attempts - 1):
            response = super().handle_request(request)
            if response.status_code not in BUSY:
                return response
            response.close()
            time.sleep(self.pause)
        return super().handle_request(request)


def prefect_rest(api_url: str, timeout: float = 30) -> httpx.Client:
    """`httpx.Client` for `api_url` (`http://127.0.0.1:<port>/api`) that rides out a busy server."""
    return httpx.Client(base_url=api_url, timeout=timeout, transport=RetryWhenBusy())
