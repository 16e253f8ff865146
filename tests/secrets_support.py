"""Greps for secrets: every file under a folder, every row of a SQLite database."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def files_holding(root: Path, secrets: list[str]) -> list[str]:
    """Every file under `root` whose bytes hold a secret, including SQLite's WAL and shared-memory files."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.name} holds secret #{i}" for i, s in enumerate(secrets) if s.encode() in data]
    return hits


def rows_holding(database: Path, secrets: list[str]) -> list[str]:
    """Every table row of a SQLite database that holds a secret in any column."""
    hits = []
    with sqlite3.connect(database) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                text = " ".join(str(v) for v in row)
                hits += [f"{table} holds secret #{i}" for i, s in enumerate(secrets) if s in text]
    return hits
