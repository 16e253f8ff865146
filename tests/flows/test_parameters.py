"""No error quotes an input value: every model of configuration and parameters hides its inputs in errors."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pydantic
import pytest
from sqlmodel import SQLModel

from prefect_restful_etl.blocks.api import RestApi
from prefect_restful_etl.flows.parameters import parse_parameters
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.jobtypes import BatchType
from prefect_restful_etl.tasks.engine.settings import Settings

TOKEN = "q7Zk2mXv9LpT4wRb8NcY"
SECRET = f"Bearer {TOKEN}"
# Outputs we build ourselves, the audit tables (SQLModel does not validate on construction) and the demo APIs'
# request bodies are no configuration of a batch.
_NOT_CONFIGURATION = ("prefect_restful_etl.tasks.engine.report", "prefect_restful_etl.deployments.demo")


def leaks(text: str) -> bool:
    """Any five characters of the token in a row: pydantic shortens a long input to its head and tail."""
    return any(TOKEN[i : i + 5] in text for i in range(len(TOKEN) - 4))


def package_models() -> list[type[pydantic.BaseModel]]:
    """Every pydantic model the package defines (its modules imported, `__main__` modules aside)."""
    for sub in ("flows", "tasks", "blocks", "deployments"):
        package = importlib.import_module(f"prefect_restful_etl.{sub}")
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    found: set[type[pydantic.BaseModel]] = set()
    stack: list[type[Any]] = [pydantic.BaseModel]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                stack.append(sub)
    return sorted(
        (
            model
            for model in found
            if model.__module__.startswith("prefect_restful_etl.")
            and not model.__module__.startswith(_NOT_CONFIGURATION)
            and not issubclass(model, SQLModel)
        ),
        key=lambda model: f"{model.__module__}.{model.__qualname__}",
    )


@pytest.mark.parametrize("model", package_models(), ids=lambda model: f"{model.__module__}.{model.__qualname__}")
def test_every_model_of_configuration_and_parameters_hides_its_input_in_errors(
    model: type[pydantic.BaseModel],
) -> None:
    """pydantic takes the setting of the model validated at the top: each one must have it, nested or not."""
    assert model.model_config.get("hide_input_in_errors") is True


@pytest.mark.parametrize(
    "validate",
    [
        lambda: ApiConfig.model_validate(
            {"name": "crm", "base_url": "https://crm.example.com", "headers": {"Authorization": SECRET}}
        ),
        lambda: RestApi(name="crm", base_url="https://crm.example.com", headers={"X-Api-Key": SECRET}),
        lambda: BatchType.model_validate(
            {
                "name": "x",
                "apis": {"crm": {"name": "crm", "base_url": "https://crm.example.com", "headers": {"Cookie": SECRET}}},
                "jobs": [{"kind": "extract", "name": "e", "api": "crm", "endpoint": {"path": "/c"}}],
            }
        ),
        lambda: ApiConfig.model_validate({"name": "crm", "base_url": SECRET}),
        lambda: Settings(stage_ttl=SECRET),  # type: ignore[arg-type]
    ],
    ids=["secret-header", "secret-header-in-a-block", "secret-header-in-a-batch-type", "bad-url", "bad-setting"],
)
def test_a_refused_configuration_names_the_field_never_its_value(validate: Any) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        validate()
    assert not leaks(str(caught.value)) and not leaks(repr(caught.value))


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"tenant_id": "t", "credentials": {"crm": {"token": [SECRET]}}}, "credentials.crm.token"),
        ({"tenant_id": "t", "base_urls": {"crm": ["https://u:" + SECRET + "@x"]}}, "base_urls.crm"),
        ({"tenant_id": ["t", SECRET]}, "tenant_id"),
        ({"tenant_id": "t", "credential": {"crm": {"token": SECRET}}}, "credential"),
    ],
    ids=["credential", "base-url", "tenant", "misspelt-parameter"],
)
def test_a_bad_parameter_is_named_and_never_quoted(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_parameters(raw)
    assert caught.value.field == field
    assert not leaks(str(caught.value))
