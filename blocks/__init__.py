"""Prefect Blocks: the API connection, the stage and the audit database."""
