"""The product as a user gets it: the installed wheel in a virtual environment of its own, its programs run there
as a user runs them (the fixtures are in conftest.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Product:
    """A virtual environment holding the installed wheel, and nothing of this tree."""

    venv: Path
    home: Path  # PREFECT_HOME and RESTFUL_ETL_HOME of commands that are given no other

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PREFECT_API_URL")}
        env |= {
            "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
            "PREFECT_HOME": str(self.home / "prefect"),
            "RESTFUL_ETL_HOME": str(self.home / "etl"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
        return env | dict(extra or {})

    def run(
        self, program: str, *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """`program` (`restful-etl`, `prefect`, `python` ...) of the environment, as a user runs it."""
        return subprocess.run(
            [str(self.bin / program), *args],
            cwd=cwd,
            env=self.environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def popen(self, program: str, *args: str, cwd: Path, env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
        """Started in a session of its own, so that it and its children are stopped by process group."""
        with log.open("wb") as out:
            return subprocess.Popen(
                [str(self.bin / program), *args],
                cwd=cwd,
                env=self.environment(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
