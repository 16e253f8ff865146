"""Batch type `crm-to-accounting`: keep each tenant's accounting customers in step with their CRM."""

from __future__ import annotations

from prefect_restful_etl.flows.builder import build_flow
from prefect_restful_etl.tasks.engine.jobtypes import BatchType

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
                    {"op": "default", "values": {"status": "active"}},
                    {
                        "op": "select",
                        "fields": ["external_id", "name", "email", "country", "phone", "lifetime_value", "status"],
                    },
                ],
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
