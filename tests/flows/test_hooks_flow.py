"""The hooks' micro-batch flow: its batch type and job found by name, its own parameters kept by the masking."""

from __future__ import annotations

import pytest

from prefect_restful_etl.flows.hooks import batch_type_named, hooked_job
from prefect_restful_etl.flows.secrecy import masked_parameters
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.redaction import MASK


def test_the_batch_type_and_its_hooked_extract_are_found_by_name() -> None:
    batch_type = batch_type_named("crm-to-accounting")
    assert hooked_job(batch_type, None).name == "Extract CRM customers"
    assert hooked_job(batch_type, "Extract CRM customers").kind == "extract"
    with pytest.raises(ConfigError, match=r"^batch_type: names no batch type"):
        batch_type_named("no-such-type")
    with pytest.raises(ConfigError, match=r"^job: names no extract job"):
        hooked_job(batch_type, "Load accounting customers")


def test_a_micro_batch_keeps_its_own_parameters_when_its_stored_ones_are_masked() -> None:
    """A failed micro-batch's end hook masks what a batch does not know: the micro-batch's own parameters hold no
    secret, and a Prefect Retry needs them."""
    stored = {
        "tenant_id": "acme",
        "batch_type": "crm-to-accounting",
        "segments": ["main-00000001767225600123"],
        "feed": {"job": "Extract CRM customers", "fetch": None, "version_field": "updated_at"},
        "receiver": "main",
        "sealed_credentials": "gAAAAA-ciphertext",
        "credentials": {"crm": {"token": "plain-token-7c1e"}},
        "credential": {"crm": {"token": "misspelt-9a2b"}},
    }
    masked = masked_parameters(stored)
    assert masked is not None
    assert {name: masked[name] for name in ("batch_type", "segments", "feed", "receiver")} == {
        name: stored[name] for name in ("batch_type", "segments", "feed", "receiver")
    }
    assert masked["credentials"] == {"crm": {"token": MASK}} and masked["credential"] == MASK
