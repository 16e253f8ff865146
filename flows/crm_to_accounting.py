"""Batch type `crm-to-accounting`: keep each tenant's accounting customers in step with their CRM."""

from __future__ import annotations

from prefect_restful_etl.flows.builder import build_flow
from prefect_restful_etl.flows.countries import ISO_COUNTRIES
from prefect_restful_etl.tasks.engine.jobtypes import BatchType

# Screened after the steps, on the accounting customer as it will be loaded. The email pattern checks the
# shape only (something@somewhere); the accounting API also wants a dot in the domain, and refuses the rest.
SCREENS = [
    {
        "name": "email present",
        "check": "not_null",
        "column": "email",
        "blank_is_null": True,
        "category": "completeness",
        "severity": 8,
    },
    {
        "name": "email format",
        "check": "pattern",
        "column": "email",
        "pattern": r"^[^@\s]+@[^@\s]+$",
        "category": "validity",
        "severity": 6,
    },
    {
        "name": "lifetime value not negative",
        "check": "rule",
        "column": "lifetime_value",
        "expression": "is_null(lifetime_value) or float(lifetime_value) >= 0",
        "category": "validity",
        "severity": 7,
    },
    {
        "name": "known country",
        "check": "exists",
        "column": "country",
        "lookup": "countries",
        "category": "validity",
        "severity": 6,
    },
    {
        "name": "one row per customer",
        "check": "unique",
        "columns": ["external_id"],
        "category": "uniqueness",
        "severity": 9,
    },
    {
        "name": "phone present",
        "check": "not_null",
        "column": "phone",
        "blank_is_null": True,
        "category": "completeness",
        "severity": 2,
        "action": "pass",
    },
]

CRM_TO_ACCOUNTING = BatchType.model_validate(
    {
        "name": "crm-to-accounting",
        "description": "Extract CRM customers, shape them as accounting customers, load them as SCD type 1.",
        "apis": {
            "crm": {
                "name": "crm",
                "base_url": "http://127.0.0.1:8001",
                "auth": {"type": "bearer"},
                "paginator": {"type": "page_number", "page_size": 200, "total_path": "total"},
            },
            "accounting": {
                "name": "accounting",
                "base_url": "http://127.0.0.1:8002",
                "auth": {"type": "api_key", "name": "X-API-Key"},
                "paginator": {"type": "page_number", "page_size": 500, "total_path": "total"},
            },
        },
        "jobs": [
            {
                "kind": "extract",
                "name": "Extract CRM customers",
                "api": "crm",
                "endpoint": {"path": "/customers", "records_path": "data"},
                "natural_key": ["id"],
                "incremental": {"cursor_field": "updated_at", "param": "updated_since"},
            },
            {
                "kind": "transform",
                "name": "Shape accounting customers",
                "source": "Extract CRM customers",
                "steps": [
                    {"op": "rename", "fields": {"id": "external_id", "company": "name"}},
                    {"op": "cast", "fields": {"external_id": "str", "lifetime_value": "decimal"}},
                    {"op": "template", "target": "contact", "template": "{first_name} {last_name}"},
                    {"op": "trim", "fields": ["email", "contact"]},
                    {"op": "lower", "fields": ["email"]},
                    {"op": "default", "values": {"status": "active"}},
                    {
                        "op": "lookup",
                        "field": "country",
                        "target": "country_name",
                        "source": "countries",
                        "on_miss": "default",
                    },  # an unknown code is the `known country` screen's to report
                    {
                        "op": "select",
                        "fields": [
                            "external_id",
                            "name",
                            "contact",
                            "email",
                            "country",
                            "country_name",
                            "phone",
                            "lifetime_value",
                            "status",
                        ],
                    },
                ],
                "lookups": {"countries": {"type": "static", "values": ISO_COUNTRIES}},
                "screens": SCREENS,
                "quality_flag": "quality_flag",
            },
            {
                "kind": "load",
                "name": "Load accounting customers",
                "source": "Shape accounting customers",
                "api": "accounting",
                "endpoint": {"path": "/customers", "records_path": "data"},
                "natural_key": ["external_id"],
            },
        ],
    }
)

crm_to_accounting = build_flow(CRM_TO_ACCOUNTING)
