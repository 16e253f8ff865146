"""The batch types this package ships: every module of `flows/` that holds a `BatchType` and its flow.

Found by looking, not listed, so adding a batch type stays "add a module to flows/" (and a deployment to
prefect.yaml); `restful-etl serve` and the CLI's defaults follow.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import Any

from prefect import Flow

from prefect_restful_etl.tasks.engine.jobtypes import BatchType

FULL_RESYNC_SUFFIX = "-full-resync"


@dataclass(frozen=True)
class BatchFlow:
    """A batch type's flow and where it lives; the flow function itself is made in builder.py, so its own
    module and name would not lead back to it."""

    flow: Flow[..., Any]
    module: str
    attribute: str

    @property
    def entrypoint(self) -> str:
        """Prefect's module-path form, `package.module.attribute`: imported from the installed package, with
        no code storage to download and no pull step (the `file.py:name` form would want one)."""
        return f"{self.module}.{self.attribute}"


@cache
def batch_flows() -> dict[str, BatchFlow]:
    """Batch type name -> its flow, for each module with a module-level `BatchType` and the flow built from it."""
    package = importlib.import_module("prefect_restful_etl.flows")
    found: dict[str, BatchFlow] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        names = {value.name for value in vars(module).values() if isinstance(value, BatchType)}
        for attribute, value in vars(module).items():
            if isinstance(value, Flow) and value.name in names:
                found[value.name] = BatchFlow(value, module.__name__, attribute)
    return found


def deployment_name(batch_type: str, *, full_resync: bool = False) -> str:
    """`<flow>/<deployment>` as prefect.yaml and `restful-etl serve` name them."""
    return f"{batch_type}/{batch_type}{FULL_RESYNC_SUFFIX if full_resync else ''}"
