"""Secrets on receipt: masks for what Prefect stored, sealed credentials opened, the callback's secret apart."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, generate_key, seal
from prefect_restful_etl.flows.secrecy import masked_credentials, masked_parameters, open_credentials
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.redaction import MASK


@pytest.fixture
def seal_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = generate_key()
    monkeypatch.setenv(SEAL_KEY_ENV, key)
    return key


APIS = {
    name: ApiConfig.model_validate({"name": name, "base_url": f"https://{name}.example.com"})
    for name in ("crm", "accounting")
}
HOSTS = {"crm": ["https://crm.example.com"], "callback": ["https://hooks.example.com"]}


def opened(credentials: dict[str, Credentials], sealed: str | None, callback_url: str | None = None) -> Any:
    return open_credentials(credentials, sealed, tenant_id="acme", apis=APIS, callback_url=callback_url)


def test_plain_and_sealed_credentials_make_one_map_and_the_callback_secret_is_set_apart(seal_key: str) -> None:
    plain = {"accounting": Credentials(api_key=SecretStr("acc"))}
    sealed = seal(
        {"crm": {"token": "crm"}, "callback": {"token": "hmac-secret"}}, tenant_id="acme", hosts=HOSTS, key=seal_key
    )
    credentials, callback = opened(plain, sealed, "https://hooks.example.com/done")
    assert sorted(credentials) == ["accounting", "crm"]
    assert callback is not None and callback.get_secret_value() == "hmac-secret"


def test_plain_credentials_alone_need_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SEAL_KEY_ENV, raising=False)
    credentials, callback = opened({"crm": Credentials(token=SecretStr("t"))}, None)
    assert list(credentials) == ["crm"] and callback is None


def test_sealed_credentials_without_the_key_fail_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    token = seal({"crm": {"token": "t"}}, tenant_id="acme", hosts=HOSTS, key=generate_key())
    monkeypatch.delenv(SEAL_KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=SEAL_KEY_ENV):
        opened({}, token)


def test_sealed_credentials_open_only_for_their_tenant_and_hosts(seal_key: str) -> None:
    token = seal({"crm": {"token": "t"}}, tenant_id="acme", hosts=HOSTS, key=seal_key)
    with pytest.raises(ConfigError, match="another tenant"):
        open_credentials({}, token, tenant_id="mallory", apis=APIS, callback_url=None)
    elsewhere = {**APIS, "crm": ApiConfig.model_validate({"name": "crm", "base_url": "https://evil.example.net"})}
    with pytest.raises(ConfigError, match=r"^sealed_credentials\.crm: are bound to https://crm\.example\.com:443;"):
        open_credentials({}, token, tenant_id="acme", apis=elsewhere, callback_url=None)


def test_an_api_named_twice_is_refused(seal_key: str) -> None:
    with pytest.raises(ConfigError, match="both name"):
        opened(
            {"crm": Credentials(token=SecretStr("a"))},
            seal({"crm": {"token": "b"}}, tenant_id="acme", hosts=HOSTS, key=seal_key),
        )


def test_masked_credentials_from_an_earlier_attempt_say_how_to_retry() -> None:
    """A Prefect Retry of a run with plain credentials finds the masks that redaction left."""
    with pytest.raises(ConfigError, match="sealed"):
        opened({"crm": Credentials(token=SecretStr(MASK))}, None)


def test_masks_keep_the_shape_and_the_readable_fields() -> None:
    masked = masked_credentials(
        {"erp": Credentials(username="etl", password=SecretStr("pw")), "callback": Credentials(token=SecretStr("s"))}
    )
    assert masked == {"erp": {"username": "etl", "password": MASK}, "callback": {"token": MASK}}


@pytest.mark.parametrize(
    "sent,masked",
    [
        ({"crm": {"tokn": "s3cret"}}, {"crm": {"tokn": MASK}}),
        ({"crm": {"token": ["s3cret"]}}, {"crm": {"token": MASK}}),
        ({"crm": "s3cret"}, {"crm": MASK}),
        (
            {"erp": {"username": "etl", "password": "s3cret", "client_id": 7}},
            {"erp": {"username": "etl", "password": MASK, "client_id": MASK}},
        ),
    ],
    ids=["misspelt-field", "wrong-type", "not-a-mapping", "readable-fields-only-as-text"],
)
def test_credentials_as_sent_are_masked_even_when_invalid(sent: dict, masked: dict) -> None:
    assert masked_credentials(sent) == masked


@pytest.mark.parametrize(
    "stored,expected",
    [
        (
            {"tenant_id": "t", "credentials": {"crm": {"token": "tok"}, "erp": {"username": "etl", "password": "pw"}}},
            {"tenant_id": "t", "credentials": {"crm": {"token": MASK}, "erp": {"username": "etl", "password": MASK}}},
        ),
        ({"credentials": {"crm": {"tokn": "tok"}}}, {"credentials": {"crm": {"tokn": MASK}}}),
        ({"credentials": {"crm": "tok"}}, {"credentials": {"crm": MASK}}),
        (
            {"credentials": {"erp": {"username": ["not", "a", "name"], "token": None}}},
            {"credentials": {"erp": {"username": MASK, "token": None}}},
        ),
        ({"credentials": {"crm": {"token": MASK}}}, None),
        ({"credentials": {}, "sealed_credentials": "gAAAAA-ciphertext"}, None),
        ({"tenant_id": "t"}, None),
        (
            {"tenant_id": "t", "credential": {"crm": {"token": "tok"}}, "full_refresh": True},
            {"tenant_id": "t", "credential": MASK, "full_refresh": True},
        ),
        ({"tenant_id": "t", "token": "tok", "credential": MASK}, {"tenant_id": "t", "token": MASK, "credential": MASK}),
    ],
    ids=[
        "plain",
        "misspelt-field",
        "not-an-object",
        "odd-readable-field",
        "already-masked",
        "sealed",
        "none",
        "misspelt-parameter",
        "unknown-parameters",
    ],
)
def test_stored_parameters_are_masked_as_stored_valid_or_not(
    stored: dict[str, object], expected: dict[str, object] | None
) -> None:
    assert masked_parameters(stored) == expected
