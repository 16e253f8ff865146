"""The engine is plain async Python: no module of tasks/engine/ imports Prefect."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import prefect_restful_etl.tasks.engine as engine


def test_no_engine_module_imports_prefect() -> None:
    modules = sorted(m.name for m in pkgutil.iter_modules(engine.__path__))
    assert {"client", "paginators", "stage", "scd", "audit", "screens"} <= set(modules)
    code = (
        "import sys\n"
        + "".join(f"import prefect_restful_etl.tasks.engine.{m}\n" for m in modules)
        + "leaked = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
        + "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
