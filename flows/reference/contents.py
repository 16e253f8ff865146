"""What the reference holds, page by page: which models, in which order, under which headings.

The fields, types, defaults, descriptions and examples of each are the models' own (`entries.py`); a union's
members (paging styles, auth styles, steps, screens, lookups) are read from the union itself, so a new one is
on its page without being listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect_restful_etl.blocks.api import RestApi
from prefect_restful_etl.blocks.audit import AuditDatabase
from prefect_restful_etl.blocks.stage import EtlStage
from prefect_restful_etl.flows.parameters import BatchParameters
from prefect_restful_etl.flows.reference.entries import Entry, Group
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.extract.incremental import Incremental
from prefect_restful_etl.tasks.engine.extract.job import EntitySchema, ExtractJob, ParentLink
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.http.auth import AuthConfig
from prefect_restful_etl.tasks.engine.http.paginators import Paginator
from prefect_restful_etl.tasks.engine.jobbase import Endpoint
from prefect_restful_etl.tasks.engine.jobtypes import BatchType, JobTypeLibrary
from prefect_restful_etl.tasks.engine.load.bulk import BulkWrite
from prefect_restful_etl.tasks.engine.load.destination import Lookup as DestinationLookup
from prefect_restful_etl.tasks.engine.load.history import History
from prefect_restful_etl.tasks.engine.load.job import LoadJob
from prefect_restful_etl.tasks.engine.load.scd import Missing, SoftDelete
from prefect_restful_etl.tasks.engine.load.shapes import WriteShape, WriteShapes
from prefect_restful_etl.tasks.engine.load.writers import AuditColumns, ErrorThreshold
from prefect_restful_etl.tasks.engine.settings import Settings
from prefect_restful_etl.tasks.engine.transform.job import TransformJob
from prefect_restful_etl.tasks.engine.transform.lookup_config import LookupConfig
from prefect_restful_etl.tasks.engine.transform.screens import Screen
from prefect_restful_etl.tasks.engine.transform.steps import TransformStep

INDEX = "reference.md"


@dataclass(frozen=True)
class Page:
    file: str
    title: str
    intro: str
    groups: tuple[Group, ...]


def _one(title: str, intro: str, *entries: Entry) -> Group:
    return Group(title, intro, entries)


def pages() -> tuple[Page, ...]:
    """Every page of the reference, the index first."""
    return (_index(), _paging(), _auth(), _extract(), _transform(), _load(), _operations())


def _index() -> Page:
    return Page(
        INDEX,
        "Reference",
        "Every option of a batch type, generated from the models that check it. A batch type file (YAML or JSON, "
        "checked by `restful-etl validate`) holds the fields below; each part has its page.",
        (
            _one(
                "A batch type file",
                "The top of a file in your batch types folder.",
                Entry(BatchType, "Batch type", "A file of the batch types folder.", shows_use=False),
                Entry(ApiConfig, "API", "`apis.<name>`, one per API the jobs name.", shows_use=False),
                Entry(JobTypeLibrary, "Job types", "A file that holds `job_types` instead.", shows_use=False),
            ),
        ),
    )


def _paging() -> Page:
    return Page(
        "paging.md",
        "Paging",
        "How a list endpoint is read page by page. Set on an API (`apis.<name>.paginator`) or on one endpoint "
        "(`endpoint.paginator`, which overrides the API's); given as an object chosen by `type`, or by its name "
        'alone (`"page_number"`). Without one, an endpoint is one page (`single_page`).',
        (Group.of_union("Paging styles", "Each reads a response and shapes the next request.", Paginator),),
    )


def _auth() -> Page:
    return Page(
        "auth.md",
        "Auth",
        "How requests to an API prove who sends them. The style is configuration (`apis.<name>.auth`, an object "
        "chosen by `type` or its name alone); the secrets are not: they come with each run, as its `credentials`.",
        (
            Group.of_union("Auth styles", "Each reads the credential fields it needs.", AuthConfig),
            _one(
                "Credentials",
                "A run's secrets: `SecretStr` fields, masked in every log, error, event and stored parameter.",
                Entry(Credentials, "Credentials of one API", "A run's `credentials.<api name>`."),
            ),
        ),
    )


def _extract() -> Page:
    return Page(
        "extract.md",
        "Extract",
        "An extract job reads an entity from an API page by page into the stage, and keeps the watermark of an "
        "incremental read.",
        (
            _one(
                "The extract job",
                "A job of `jobs` with `kind: extract`.",
                Entry(ExtractJob, "Extract job", "An element of `jobs`.", chooser="kind"),
                Entry(Endpoint, "`endpoint`", "An extract's, a load's or an API lookup's `endpoint`."),
                Entry(Incremental, "`incremental`", "An extract job's `incremental`."),
                Entry(EntitySchema, "`entity_schema`", "An extract job's `entity_schema`."),
                Entry(ParentLink, "`parent`", "An extract job's `parent`."),
            ),
        ),
    )


def _transform() -> Page:
    return Page(
        "transform.md",
        "Transform",
        "A transform job runs its steps on each staged record, then its screens; lookups are the sources that "
        "lookup steps and `exists` screens name.",
        (
            _one(
                "The transform job",
                "A job of `jobs` with `kind: transform`.",
                Entry(TransformJob, "Transform job", "An element of `jobs`.", chooser="kind"),
            ),
            Group.of_union(
                "Steps", "A transform's `steps`, run in order on each record; chosen by `op`.", TransformStep
            ),
            Group.of_union(
                "Lookups",
                "A transform's `lookups`, by name; chosen by `type`.",
                LookupConfig,
                where="`lookups.<name>`.",
            ),
            Group.of_union(
                "Screens",
                "A transform's `screens`, run in order after the steps; chosen by `check`. Every screen has a `name`, "
                "a `severity` and an `action`: `reject` keeps the record out (an error event), `pass` stages it "
                "flagged, `stop` stops the batch before anything is loaded.",
                Screen,
            ),
        ),
    )


def _load() -> Page:
    return Page(
        "load.md",
        "Load",
        "A load job learns what the destination holds by natural key, diffs the staged records against it and "
        "writes only the changes, as a slowly changing dimension of type 0, 1 or 2.",
        (
            _one(
                "The load job",
                "A job of `jobs` with `kind: load`, and its options.",
                Entry(LoadJob, "Load job", "An element of `jobs`.", chooser="kind"),
                Entry(History, "`history`", "A type 2 load's `history`."),
                Entry(DestinationLookup, "`lookup`", "A load's `lookup`."),
                Entry(Missing, "`missing`", "A load's `missing`."),
                Entry(SoftDelete, "`missing.soft_delete`", "A `missing` whose action is `soft_delete`."),
                Entry(ErrorThreshold, "`error_threshold`", "A load's `error_threshold`."),
                Entry(AuditColumns, "`audit_columns`", "A load's `audit_columns`."),
                Entry(WriteShapes, "`writes`", "A load's `writes`."),
                Entry(WriteShape, "`writes.<action>`", "One action of a load's `writes`."),
                Entry(BulkWrite, "`bulk`", "A load's `bulk`."),
            ),
        ),
    )


def _operations() -> Page:
    return Page(
        "operations.md",
        "Operations",
        "What a run is given, and what a worker is set up with: the flow's parameters, the settings read from "
        "the environment, and the Prefect blocks.",
        (
            _one(
                "Flow parameters",
                "Every batch type's flow takes these (a deployment's parameters, or a run's through Prefect's API).",
                Entry(BatchParameters, "Parameters", "A flow run's parameters.", shows_use=False),
            ),
            _one(
                "Settings",
                "Read from `RESTFUL_ETL_*` environment variables by every worker and by the CLI.",
                Entry(Settings, "Environment", "The environment of a worker or of the CLI.", "RESTFUL_ETL_", False),
            ),
            _one(
                "Blocks",
                "Created in the Prefect UI or in Python (`prefect block register -m prefect_restful_etl.blocks`).",
                Entry(RestApi, "`RestApi`", "Named by a run's `api_blocks`.", shows_use=False),
                Entry(EtlStage, "`EtlStage`", "Named by `RESTFUL_ETL_STAGE_BLOCK`.", shows_use=False),
                Entry(AuditDatabase, "`AuditDatabase`", "Named by `RESTFUL_ETL_AUDIT_BLOCK`.", shows_use=False),
            ),
        ),
    )
