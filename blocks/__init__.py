"""Prefect Blocks: the API connection, the stage and the audit database."""

from prefect_restful_etl.blocks.stage import EtlStage as EtlStage
