"""Masking secrets before anything is logged, raised, stored or emitted."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable
from typing import ClassVar
from urllib.parse import quote, quote_plus

MASK = "**********"


def mask(secret: str) -> str:
    """First and last character, so a user can tell which key was used without learning it."""
    if len(secret) < 8:
        return MASK
    return f"{secret[0]}{MASK}{secret[-1]}"


def _forms(secret: str) -> set[str]:
    # A secret sent as a query parameter shows up percent-encoded in a URL (`a/b+c` -> `a%2Fb%2Bc`).
    return {secret, quote(secret, safe=""), quote_plus(secret, safe="")}


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of every secret in `text` (plain or URL-encoded) by its mask."""
    forms = {(form, mask(secret)) for secret in secrets if secret for form in _forms(secret)}
    for form, masked in sorted(forms, key=lambda pair: len(pair[0]), reverse=True):
        text = text.replace(form, masked)
    return text


def redact_excerpt(text: str, secrets: Iterable[str], limit: int) -> str:
    """The first `limit` characters of `text`, redacted. Redacted first and cut after: a cut first could
    split a secret, and its remaining part would no longer match the secret, so it would survive."""
    return redact(text, secrets)[:limit]


class RedactingFilter(logging.Filter):
    """Masks the secrets of every open client in the log lines of third-party loggers.

    httpx logs each request's full URL at INFO (`HTTP Request: GET https://...?api_key=...`), so a secret
    sent as a query parameter would reach the logs. Clients `register` their secrets while they are open.
    """

    _lock = threading.Lock()
    _secrets: ClassVar[Counter[str]] = Counter()

    @classmethod
    def register(cls, secrets: Iterable[str]) -> None:
        with cls._lock:
            cls._secrets.update(s for s in secrets if s)

    @classmethod
    def unregister(cls, secrets: Iterable[str]) -> None:
        with cls._lock:
            cls._secrets.subtract(s for s in secrets if s)
            for secret in [s for s, n in cls._secrets.items() if n <= 0]:
                del cls._secrets[secret]

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = list(self._secrets)
        if secrets:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):  # a malformed record is the handler's to report, not ours
                return True
            redacted = redact(message, secrets)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_installed: set[str] = set()


def install_log_redaction(logger_names: Iterable[str] = ("httpx", "httpcore")) -> None:
    """Attach one `RedactingFilter` to each named logger (idempotent)."""
    for name in logger_names:
        if name not in _installed:
            logging.getLogger(name).addFilter(RedactingFilter())
            _installed.add(name)
