"""Prefect Blocks: the API connection, the stage and the audit database.

Register them once per Prefect server: `prefect block register -m prefect_restful_etl.blocks`
(or `restful-etl blocks register`); then create and edit them in the UI under Blocks.
"""

from prefect_restful_etl.blocks.api import RestApi as RestApi
from prefect_restful_etl.blocks.audit import AuditDatabase as AuditDatabase
from prefect_restful_etl.blocks.stage import EtlStage as EtlStage
