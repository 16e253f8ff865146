"""The batch types there are, and where each came from: the user's folder, installed packages, this package.

- **folder**: the files of the batch types folder (`RESTFUL_ETL_BATCH_TYPES`, default `./batch_types`): batch type
  files (`*.yaml`, `*.yml`, `*.json`, see batchfiles.py) and Python modules (`*.py`) that call `build_flow`;
- **entry point**: what installed distributions declare in the entry-point group `restful_etl.batch_types`: a
  `BatchType`, a flow made by `build_flow`, a module holding either, or a folder (a `Path`) of batch type files;
- **package**: this package's own, the examples (`crm-to-accounting`).

The first of these to name a batch type wins; a name found twice, or a file that does not validate, is a problem
the catalog reports (and `restful-etl serve` refuses to start on). Everything but the package's own batch types is
deployed through the generic entrypoint (flows/entrypoint.py), which finds them here again by name.

Prefect knows batch types by name only, from their deployments (`deployed_batch_types`): those the client may
start or look up from anywhere, though their definitions may be in a project on another machine.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import pkgutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from prefect import Flow

from prefect_restful_etl.flows.batchfiles import load_folder
from prefect_restful_etl.flows.builder import batch_type_of, build_flow
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.jobtypes import BatchType

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.responses import DeploymentResponse

FULL_RESYNC_SUFFIX = "-full-resync"
FOLDER_ENV = "RESTFUL_ETL_BATCH_TYPES"
DEFAULT_FOLDER = Path("batch_types")
ENTRY_POINT_GROUP = "restful_etl.batch_types"
GENERIC_ENTRYPOINT = "prefect_restful_etl.flows.entrypoint"
FOLDER, ENTRY_POINT, PACKAGE = "folder", "entry point", "package"
_USER_MODULES = "restful_etl_batch_types_"  # prefixes the import names of a folder's Python modules
BATCH_TYPE_TAG = "batch-type:"  # a deployment's tag, `batch-type:<name>`, as serve.py and prefect.yaml set it
_PAGE = 200  # deployments read at once (the Prefect API's default limit)


@dataclass(frozen=True)
class BatchFlow:
    """A batch type's flow and where it lives; the flow function itself is made in builder.py, so its own
    module and name would not lead back to it."""

    flow: Flow[..., Any]
    module: str
    attribute: str
    origin: str = PACKAGE
    source: str = ""  # the file, module or entry point it was found in

    @property
    def batch_type(self) -> BatchType:
        found = batch_type_of(self.flow)
        assert found is not None, "the catalog holds flows made by build_flow"
        return found

    @property
    def entrypoint(self) -> str:
        """Prefect's module-path form, `package.module.attribute`: imported from the installed package, with
        no code storage to download and no pull step (the `file.py:name` form would want one)."""
        return f"{self.module}.{self.attribute}"


@dataclass
class Catalog:
    folder: Path
    flows: dict[str, BatchFlow] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, found: BatchFlow) -> None:
        if name in self.flows:
            first = self.flows[name]
            self.problems.append(f"{found.source}: batch type {name!r} is also defined by {first.source}")
            return
        self.flows[name] = found


def batch_types_folder() -> Path:
    """The user's batch types folder, as an absolute path (it need not exist)."""
    return Path(os.environ.get(FOLDER_ENV) or DEFAULT_FOLDER).expanduser().resolve()


def catalog() -> Catalog:
    """Every batch type found, read once per process and folder."""
    return _catalog(batch_types_folder())


def batch_flows() -> dict[str, BatchFlow]:
    """Batch type name -> its flow, from every source."""
    return catalog().flows


def find(name: str) -> BatchFlow:
    """The batch type called `name`; a `ConfigError` lists the ones there are, and where they were looked for."""
    found = catalog()
    if name in found.flows:
        return found.flows[name]
    known = ", ".join(repr(n) for n in sorted(found.flows)) or "none"
    problems = f"; {len(found.problems)} file(s) did not load (`restful-etl batch-types`)" if found.problems else ""
    raise ConfigError(
        "batch type",
        f"none by that name in {found.folder} ({FOLDER_ENV}), the entry points {ENTRY_POINT_GROUP!r} or the "
        f"package; there are {known}{problems}",
    )


def attribute_of(name: str) -> str:
    """A batch type name as a Python identifier for the generic entrypoint (`acme-orders` -> `acme_orders`)."""
    return name.replace("-", "_")


def deployment_name(batch_type: str, *, full_resync: bool = False) -> str:
    """`<flow>/<deployment>` as prefect.yaml and `restful-etl serve` name them."""
    return f"{batch_type}/{batch_type}{FULL_RESYNC_SUFFIX if full_resync else ''}"


async def deployed_batch_types(client: PrefectClient) -> set[str]:
    """The batch types Prefect has deployments for, wherever they are defined: a deployment's `batch-type:<name>`
    tag, or else the name `deployment_name` gives it (`<batch type>/<batch type>`, or its full re-sync) when its
    flow takes a tenant (the janitor's deployment is named after its flow too, and is no batch)."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterId

    deployments: list[DeploymentResponse] = []
    while True:
        page = await client.read_deployments(limit=_PAGE, offset=len(deployments))
        deployments += page
        if len(page) < _PAGE:
            break
    found = {tag.removeprefix(BATCH_TYPE_TAG) for d in deployments for tag in d.tags if tag.startswith(BATCH_TYPE_TAG)}
    untagged = [d for d in deployments if _takes_a_tenant(d) and not any(t.startswith(BATCH_TYPE_TAG) for t in d.tags)]
    if untagged:
        flows = await client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=[d.flow_id for d in untagged])))
        names = {flow.id: flow.name for flow in flows}
        for d in untagged:
            flow_name = names.get(d.flow_id, "")
            if d.name in (flow_name, f"{flow_name}{FULL_RESYNC_SUFFIX}"):
                found.add(flow_name)
    return found - {""}


def _takes_a_tenant(deployment: DeploymentResponse) -> bool:
    return "tenant_id" in (deployment.parameter_openapi_schema or {}).get("properties", {})


@cache
def _catalog(folder: Path) -> Catalog:
    found = Catalog(folder)
    if folder.is_dir():
        _from_folder(found, folder, FOLDER)
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        _from_entry_point(found, entry_point)
    package = importlib.import_module("prefect_restful_etl.flows")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, flow, attribute in batch_flows_in(module):
            found.add(name, BatchFlow(flow, module.__name__, attribute, PACKAGE, module.__name__))
    return found


def _generic(flow: Flow[..., Any], origin: str, source: str) -> BatchFlow:
    return BatchFlow(flow, GENERIC_ENTRYPOINT, attribute_of(flow.name), origin, source)


def _from_folder(found: Catalog, folder: Path, origin: str, source: str | None = None) -> None:
    files = load_folder(folder)
    found.problems.extend(str(problem) for problem in files.problems)
    for name, (batch_type, path) in files.batch_types.items():
        found.add(name, _generic(build_flow(batch_type), origin, source or str(path)))
    for path in sorted(folder.glob("*.py")) if origin == FOLDER else ():
        try:
            module = import_module_file(path)
        except Exception as ex:  # a user's module: whatever it raises is theirs, named but not shown
            found.problems.append(f"{path}: cannot be imported ({type(ex).__name__})")
            continue
        for name, flow, _ in batch_flows_in(module):
            found.add(name, _generic(flow, origin, str(path)))


def _from_entry_point(found: Catalog, entry_point: EntryPoint) -> None:
    source = f"{entry_point.name} = {entry_point.value}"
    try:
        loaded = entry_point.load()
    except Exception as ex:  # an installed package's code: named, not shown
        found.problems.append(f"{source}: cannot be loaded ({type(ex).__name__})")
        return
    if isinstance(loaded, BatchType):
        found.add(loaded.name, _generic(build_flow(loaded), ENTRY_POINT, source))
    elif isinstance(loaded, Flow) and batch_type_of(loaded) is not None:
        found.add(loaded.name, _generic(loaded, ENTRY_POINT, source))
    elif isinstance(loaded, ModuleType):
        for name, flow, _ in batch_flows_in(loaded):
            found.add(name, _generic(flow, ENTRY_POINT, source))
    elif isinstance(loaded, (str, os.PathLike)) and Path(loaded).is_dir():
        _from_folder(found, Path(loaded), ENTRY_POINT, source)
    else:
        found.problems.append(f"{source}: not a BatchType, a batch flow, a module or a folder of batch type files")


def batch_flows_in(module: ModuleType) -> Iterator[tuple[str, Flow[..., Any], str]]:
    """(name, flow, attribute) for each module-level flow built from a module-level `BatchType`."""
    names = {value.name for value in vars(module).values() if isinstance(value, BatchType)}
    for attribute, value in vars(module).items():
        if isinstance(value, Flow) and value.name in names and batch_type_of(value) is not None:
            yield value.name, value, attribute


def import_module_file(path: Path) -> ModuleType:
    """A Python module of the folder, imported once under a name of its own (not the folder's `sys.path`)."""
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]  # two folders may hold one file name
    name = f"{_USER_MODULES}{attribute_of(path.stem)}_{where}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
