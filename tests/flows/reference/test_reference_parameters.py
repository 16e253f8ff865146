"""The flow's parameters are the ones the reference lists (BatchParameters), with the same descriptions in Prefect."""

from __future__ import annotations

from prefect.utilities.callables import parameter_schema

from prefect_restful_etl.flows.crm_to_accounting import crm_to_accounting
from prefect_restful_etl.flows.parameters import BatchParameters


def test_prefect_describes_each_parameter_as_the_reference_does() -> None:
    properties = parameter_schema(crm_to_accounting.fn).properties
    assert list(properties) == list(BatchParameters.model_fields)
    for name, field in BatchParameters.model_fields.items():
        assert field.description and properties[name]["description"].startswith(field.description)
    assert properties["credentials"]["description"].endswith("APIs: crm, accounting.")
