"""A user's own project, from the installed wheel in a fresh virtual environment: `restful-etl init`, `validate`,
`schema`, `batch-types`; `restful-etl serve` on a real `prefect server` finding a batch type of the project's
folder and one of an installed package's entry point, runs of both followed with `--watch` against the demo APIs;
then `prefect deploy --all` of the prefect.yaml that init wrote, in a clone of the project in another folder, and a
worker started elsewhere running it from the clone."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator
from product_support import REPO, Product

from prefect_restful_etl.deployments.demo.apis import DemoApis

from fixtures.servers.prefect import PrefectServer

pytestmark = pytest.mark.integration

NAME, SHIPPED = "acme-sync", "shipped-sync"
GENERIC = "prefect_restful_etl.flows.entrypoint"
SECRET = "s3cr3t-pasted-in-the-wrong-field"


def until(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.25)
    return value


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


@pytest.fixture(scope="module")
def project(product: Product, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`restful-etl init` in an empty folder named for the project."""
    root = tmp_path_factory.mktemp("user") / NAME
    root.mkdir()
    done = product.run("restful-etl", "init", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture(scope="module")
def apis() -> Iterator[DemoApis]:
    with DemoApis(crm_customers=40) as demo:
        yield demo


@pytest.fixture(scope="module")
def shipped(product: Product, project: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A distribution of batch types installed into the environment, declaring one in `restful_etl.batch_types`:
    the starter batch type under another name, as a BatchType built in Python."""
    raw = yaml.safe_load((project / "batch_types" / f"{NAME}.yaml").read_text())
    library = yaml.safe_load((project / "batch_types" / "crm-job-types.yaml").read_text())["job_types"]
    jobs = [{**library[job["use"]], **{k: v for k, v in job.items() if k != "use"}} if "use" in job else job
            for job in raw["jobs"]]  # fmt: skip
    module = (
        "import json\nfrom prefect_restful_etl.tasks.engine.jobtypes import BatchType\n\n"
        f"SHIPPED = BatchType.model_validate(json.loads({json.dumps({**raw, 'name': SHIPPED, 'jobs': jobs})!r}))\n"
    )
    wheel = wheel_of(tmp_path_factory.mktemp("shipped"), "acme_shipped", module, "shipped = acme_shipped:SHIPPED")
    done = product.run("pip", "install", "-q", "--no-deps", str(wheel), cwd=wheel.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    return SHIPPED


def wheel_of(folder: Path, package: str, module: str, entry_point: str) -> Path:
    """A wheel of one module declaring one entry point of `restful_etl.batch_types`, as any build backend writes
    it (PEP 427: the files, then the dist-info with METADATA, WHEEL, entry_points.txt and RECORD)."""
    info = f"{package}-1.0.dist-info"
    files = {
        f"{package}/__init__.py": module,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[restful_etl.batch_types]\n{entry_point}\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    path = folder / f"{package}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_the_product_is_the_wheels_not_this_tree(product: Product, project: Path) -> None:
    found = product.run("python", "-c", "import prefect_restful_etl.flows as f; print(f.__file__)", cwd=project)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith(str(product.venv)) and str(REPO) not in found.stdout


def test_init_writes_a_project_that_validates(product: Product, project: Path) -> None:
    names = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert names == [".gitignore", "README.md", "batch-type.schema.json", f"batch_types/{NAME}.yaml",
                     "batch_types/crm-job-types.yaml", "credentials.json", "prefect.yaml"]  # fmt: skip
    done = product.run("restful-etl", "validate", "batch_types/", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"ok batch_types/{NAME}.yaml: batch type '{NAME}', 3 jobs",
        "ok batch_types/crm-job-types.yaml: job types",
    ]


def test_validate_names_what_is_wrong_in_broken_files_and_exits_2(
    product: Product, project: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "batch_types"
    shutil.copytree(project / "batch_types", folder)
    text = (folder / f"{NAME}.yaml").read_text()
    (folder / f"{NAME}.yaml").write_text(text.replace("op: rename", f"op: {SECRET}", 1))
    (folder / "other.yaml").write_text(
        text.replace(f"name: {NAME}", "name: other").replace("use: load-accounting-customers", "use: load-accounts")
    )
    done = product.run("restful-etl", "validate", cwd=tmp_path)
    assert done.returncode == 2
    shape, library, other = done.stdout.splitlines()
    assert shape.startswith(
        f"error batch_types/{NAME}.yaml: job 'Shape accounting customers': steps[0].op: should be one of 'rename', "
    )
    assert library == "ok batch_types/crm-job-types.yaml: job types"
    assert other == (
        "error batch_types/other.yaml: job number 3: use: not the name of a job type; the job types are "
        "'extract-crm-customers', 'load-accounting-customers'"
    )
    assert SECRET not in done.stdout + done.stderr


def test_schema_is_the_one_init_wrote_and_every_file_of_the_project_passes_it(product: Product, project: Path) -> None:
    done = product.run("restful-etl", "schema", cwd=project)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert schema == json.loads((project / "batch-type.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for path in (project / "batch_types").glob("*.yaml"):
        assert not list(validator.iter_errors(yaml.safe_load(path.read_text()))), path


def prefect_environment(server: PrefectServer, product: Product) -> dict[str, str]:
    return {**server.client_environment(), "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "RESTFUL_ETL_HOME": str(product.home / "etl")}  # fmt: skip


def deployment(server: PrefectServer, name: str) -> dict[str, Any] | None:
    response = httpx.get(f"{server.api_url}/deployments/name/{name}", timeout=10)
    return dict(response.json()) if response.status_code == 200 else None


def credentials(project: Path, apis: DemoApis) -> Path:
    path = project / "credentials.json"  # the template's fields, the demo's secrets
    template = json.loads(path.read_text())
    assert set(template) == {"crm", "accounting"}
    path.write_text(json.dumps({"crm": {"token": apis.crm_token}, "accounting": {"api_key": apis.accounting_api_key}}))
    return path


def watched(product: Product, project: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    done = product.run("restful-etl", *args, "--watch", "--json", cwd=project, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def test_serve_finds_the_folders_and_the_entry_points_batch_types_and_runs_them(
    product: Product, project: Path, shipped: str, prefect_server: PrefectServer, apis: DemoApis
) -> None:
    env = prefect_environment(prefect_server, product)
    listed = product.run("restful-etl", "batch-types", "--json", cwd=project, env=env)
    origins = {row["batch_type"]: row["origin"] for row in json.loads(listed.stdout)}
    assert origins == {NAME: "folder", shipped: "entry point", "crm-to-accounting": "package"}

    log = project.parent / "serve.log"
    serving = product.popen("restful-etl", "serve", cwd=project, env=env, log=log)
    try:
        names = [f"{n}/{n}{suffix}" for n in (NAME, shipped) for suffix in ("", "-full-resync")]
        until(lambda: all(deployment(prefect_server, n) for n in names) or serving.poll() is not None, "served")
        assert serving.poll() is None, log.read_text(errors="replace")[-3000:]
        for name in (NAME, shipped):
            assert deployment(prefect_server, f"{name}/{name}")["entrypoint"] == f"{GENERIC}.{name.replace('-', '_')}"
        creds, urls = (
            credentials(project, apis),
            [f"--base-url=crm={apis.crm_url}", f"--base-url=accounting={apis.accounting_url}"],
        )
        for name in (NAME, shipped):
            apis.reset()  # an empty accounting API for each: both batch types load the same customers
            view = watched(
                product, project, env, "run", "--batch-type", name, "-t", f"{name}-co", "-c", str(creds), *urls
            )
            assert view["status"] == "COMPLETED", view
            assert view["counts"]["extracted"] == 40 and view["counts"]["inserted"] > 0
    finally:
        stop(serving)


def test_prefect_deploy_all_in_a_clone_registers_both_deployments_and_a_worker_elsewhere_runs_one(
    product: Product, project: Path, prefect_server: PrefectServer, apis: DemoApis, tmp_path: Path
) -> None:
    """The project as a team has it: cloned to another folder than the one init wrote it in, and deployed there."""
    clone = tmp_path / "clone" / NAME
    shutil.copytree(project, clone)
    env = prefect_environment(prefect_server, product)
    pool = product.run("prefect", "work-pool", "create", "--type", "process", "restful-etl", cwd=clone, env=env)
    assert pool.returncode == 0 or "already exists" in pool.stdout + pool.stderr, pool.stdout + pool.stderr
    deployed = product.run("prefect", "--no-prompt", "deploy", "--all", cwd=clone, env=env)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    incremental, resync = (deployment(prefect_server, f"{NAME}/{NAME}{s}") for s in ("", "-full-resync"))
    assert incremental is not None and resync is not None
    assert incremental["entrypoint"] == resync["entrypoint"] == f"{GENERIC}.acme_sync"
    assert incremental["work_pool_name"] == resync["work_pool_name"] == "restful-etl"
    assert resync["parameters"] == {"full_refresh": True}
    (step,) = resync["pull_steps"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(clone.resolve())

    elsewhere = tmp_path / "worker"  # not the project: the pull step must find the batch types folder
    elsewhere.mkdir()
    worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    log = tmp_path / "worker.log"
    worker = product.popen(
        "prefect", "worker", "start", "--pool", "restful-etl", cwd=elsewhere, env=worker_env, log=log
    )
    try:
        creds = credentials(clone, apis)
        urls = [f"--base-url=crm={apis.crm_url}", f"--base-url=accounting={apis.accounting_url}"]
        # from the worker's folder, not the project's: the batch type is known here only by its deployments
        view = watched(
            product, elsewhere, env, "resync", "--batch-type", NAME, "-t", "worker-co", "-c", str(creds), *urls
        )
        assert view["status"] == "COMPLETED", (view, log.read_text(errors="replace")[-3000:])
    finally:
        stop(worker)
    run = httpx.get(f"{prefect_server.api_url}/flow_runs/{view['batch_id']}", timeout=10).json()
    assert run["deployment_id"] == resync["id"] and view["batch_id"] in log.read_text(errors="replace")
