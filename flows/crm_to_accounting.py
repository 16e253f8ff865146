"""Batch type `crm-to-accounting`, the example that ships with the package: keep each tenant's accounting
customers in step with their CRM.

Its configuration is a batch type file like a user's, `flows/examples/crm-to-accounting.yaml` (with the job
types of `crm-job-types.yaml`); this module is its flow's importable home, the entrypoint of its deployments.
"""

from __future__ import annotations

from prefect_restful_etl.flows.batchfiles import example
from prefect_restful_etl.flows.builder import build_flow

CRM_TO_ACCOUNTING = example("crm-to-accounting")

crm_to_accounting = build_flow(CRM_TO_ACCOUNTING)
