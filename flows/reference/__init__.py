"""The configuration reference (`docs/`), generated from the models: `restful-etl docs` writes it, and a test
regenerates it and fails when the pages and the models disagree."""

from prefect_restful_etl.flows.reference.pages import problems, render, stale, write

__all__ = ["problems", "render", "stale", "write"]
