"""Masking secrets before anything is logged, raised, stored or emitted."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "**********"


def mask(secret: str) -> str:
    """First and last character, so a user can tell which key was used without learning it."""
    if len(secret) < 8:
        return MASK
    return f"{secret[0]}{MASK}{secret[-1]}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of every secret in `text` by its mask."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, mask(secret))
    return text
