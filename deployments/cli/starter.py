"""What `restful-etl init` writes: a starter project of the user's own, with no secret in it.

```
batch-type.schema.json     the JSON Schema editors check batch type files with (`restful-etl schema`)
batch_types/<name>.yaml    a batch type: the package's example, under the project's name
batch_types/crm-job-types.yaml  the job types it uses
credentials.json           a template of the credentials a run needs (placeholders; git-ignored)
prefect.yaml               the batch type's two deployments, through the generic entrypoint
README.md                  the next steps
.gitignore
```
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prefect_restful_etl.flows.batch_type_schema import SCHEMA_FILE, batch_type_file_schema
from prefect_restful_etl.flows.batchfiles import EXAMPLES
from prefect_restful_etl.flows.catalog import DEFAULT_FOLDER, FULL_RESYNC_SUFFIX, GENERIC_ENTRYPOINT, attribute_of
from prefect_restful_etl.tasks.engine.jobtypes import BatchType

EXAMPLE = "crm-to-accounting"
LIBRARY = "crm-job-types.yaml"
CREDENTIALS_FILE = "credentials.json"
NAME = re.compile(r"^[a-z0-9][a-z0-9\-]*$")
MODELINE = f"# yaml-language-server: $schema=../{SCHEMA_FILE}\n"
# The credential fields each auth style reads (tasks/engine/http/auth.py), as placeholders
_PLACEHOLDERS = {
    "bearer": {"token": "<the {api} API's token>"},
    "api_key": {"api_key": "<the {api} API's key>"},
    "basic": {"username": "<user>", "password": "<the {api} API's password>"},
    "oauth2_client_credentials": {"client_id": "<client id>", "client_secret": "<the {api} API's client secret>"},
}


def project_name(directory: Path) -> str:
    """A batch type name from the folder's name (`Acme Sync` -> `acme-sync`), or `my-batch-type`."""
    name = re.sub(r"[^a-z0-9]+", "-", directory.resolve().name.lower()).strip("-")
    return name if NAME.fullmatch(name) else "my-batch-type"


def starter_files(directory: Path, name: str) -> dict[Path, str]:
    """Every file of the starter project, by path, with its text."""
    from prefect_restful_etl.flows.batchfiles import load_batch_type, load_library, read_document

    folder = directory / DEFAULT_FOLDER
    batch_text = _batch_type_text(name)
    library = load_library(EXAMPLES / LIBRARY, read_document(EXAMPLES / LIBRARY))
    batch_type = load_batch_type(Path(f"{name}.yaml"), _yaml(batch_text), library)
    return {
        directory / SCHEMA_FILE: json.dumps(batch_type_file_schema(), indent=2) + "\n",
        folder / f"{name}.yaml": batch_text,
        folder / LIBRARY: MODELINE + (EXAMPLES / LIBRARY).read_text(encoding="utf-8"),
        directory / CREDENTIALS_FILE: json.dumps(credentials_template(batch_type), indent=2) + "\n",
        directory / "prefect.yaml": prefect_yaml(name),
        directory / "README.md": readme(name),
        directory / ".gitignore": f"{CREDENTIALS_FILE}\n*.sealed\n.restful-etl/\n",
    }


def credentials_template(batch_type: BatchType) -> dict[str, dict[str, str]]:
    """Per API of the batch type, the credential fields its auth style reads, with placeholders for values."""
    template = {}
    for api, config in batch_type.apis.items():
        fields = _PLACEHOLDERS.get(config.auth.type, {})
        if fields:
            template[api] = {field: text.format(api=api) for field, text in fields.items()}
    return template


def _batch_type_text(name: str) -> str:
    text = (EXAMPLES / f"{EXAMPLE}.yaml").read_text(encoding="utf-8")
    body = text[text.index("\nname: ") + 1 :].replace(f"name: {EXAMPLE}\n", f"name: {name}\n", 1)
    header = (
        f"{MODELINE}"
        f"# Batch type `{name}`, started from the package's example: CRM customers to accounting customers. Its APIs\n"
        "# are the demo APIs that ship with the package; point `base_url` at yours (or a run at others with\n"
        "# `--base-url API=URL`). `restful-etl validate` checks this folder; see README.md for the next steps.\n"
    )
    return header + body


def _yaml(text: str) -> object:
    import yaml

    return yaml.safe_load(text)


def prefect_yaml(name: str) -> str:
    """The project's deployments. It names no folder of the machine it was written on: `prefect deploy` records
    the one it runs in (the clone being deployed) as the workers' working directory, through a build step's output
    (`set_working_directory` answers with the absolute path; a relative path in a pull step would be taken from
    the worker's own folder for the run, a temporary one)."""
    entrypoint = f"{GENERIC_ENTRYPOINT}.{attribute_of(name)}"
    return f"""\
# Deployments of this project's batch types: `prefect deploy --all` in this folder (PREFECT_API_URL set), after
#   prefect work-pool create --type process restful-etl
# then start a worker where prefect-restful-etl is installed, with the workers' settings in its environment
# (RESTFUL_ETL_SEAL_KEY, RESTFUL_ETL_AUDIT_URL ...):  prefect worker start --pool restful-etl
# Each batch type has two deployments: the incremental one (hourly per tenant, and on demand: `restful-etl run`)
# and the full re-sync one (`restful-etl resync`). Add both for each batch type you add to {DEFAULT_FOLDER}/.
name: {name}
prefect-version: 3.8.8

# The entrypoint is the package's generic one: it finds the batch type by name in ./{DEFAULT_FOLDER} of the
# workers' working directory. `prefect deploy` records the folder it runs in (this project's, wherever it is
# cloned) and the pull step sets it for the workers, so they need the project at that path on their machine.
# Workers elsewhere can clone it instead: replace the pull step with
#   - prefect.deployments.steps.git_clone:
#       repository: <this project's git URL>
build:
  - prefect.deployments.steps.set_working_directory:
      id: project
      directory: .
push: null
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{{{ project.directory }}}}"

definitions:
  work_pool: &process_pool
    name: restful-etl
    work_queue_name: default

deployments:
  - name: {name}
    entrypoint: {entrypoint}
    description: "{name}, incremental: hourly per tenant, or on demand."
    tags: ["batch-type:{name}"]
    work_pool: *process_pool
    schedules:
      # One schedule per tenant: its parameters name the tenant and carry its sealed credentials
      # (`restful-etl seal {CREDENTIALS_FILE}`: ciphertext, opened only by workers). Fill both in, set active.
      - interval: 3600
        slug: hourly-example
        active: false
        parameters:
          tenant_id: example
          sealed_credentials: ""

  - name: {name}{FULL_RESYNC_SUFFIX}
    entrypoint: {entrypoint}
    description: "{name}, full re-sync: reads everything and resets the watermarks."
    tags: ["batch-type:{name}"]
    work_pool: *process_pool
    parameters:
      full_refresh: true
    schedules: []
"""


def readme(name: str) -> str:
    return f"""\
# {name}

A restful-etl project: batch types in `{DEFAULT_FOLDER}/`, their deployments in `prefect.yaml`.

## Next steps
1. Check the batch types (no request is sent): `restful-etl validate {DEFAULT_FOLDER}/`
   Your editor completes and checks them from `{SCHEMA_FILE}` (the first line of each file names it);
   after upgrading prefect-restful-etl, refresh it: `restful-etl schema > {SCHEMA_FILE}`.
2. Put the APIs' secrets into `{CREDENTIALS_FILE}` (git-ignored: never commit it). To try the starter against the
   demo APIs, start them (`python -m prefect_restful_etl.deployments.demo.apis` prints their URLs) and use
   their demo secrets.
3. Try it without writing anything: `restful-etl plan {name} --tenant example --credentials {CREDENTIALS_FILE}`
   (`--base-url crm=URL --base-url accounting=URL` for the demo APIs' ports): it extracts and transforms
   against the real APIs and reports what the load would change.
4. Run it on Prefect: with `PREFECT_API_URL` set, `restful-etl serve` in this folder serves its deployments
   (or `prefect deploy --all` and a worker, see `prefect.yaml`), then
   `restful-etl run --batch-type {name} --tenant example --credentials {CREDENTIALS_FILE} --watch`.
5. `restful-etl batch-types` lists the batch types found here and where each came from.

A job type of `{DEFAULT_FOLDER}/{LIBRARY}` is used as `{{"use": "extract-crm-customers"}}`, with any field
given beside `use` merged in. Batch types may also be Python modules in `{DEFAULT_FOLDER}/` that call
`build_flow`.
"""
