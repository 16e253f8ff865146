"""Sealed credentials: Fernet ciphertext only a key holder opens; errors name the field, never a secret."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, generate_key, seal, seal_key_from_env, unseal
from prefect_restful_etl.tasks.engine.exceptions import ConfigError

CREDENTIALS = {
    "crm": {"token": "crm-token-never-shown"},
    "accounting": {"api_key": "acc-key-never-shown"},
    "erp": {"username": "etl", "password": "pw-never-shown"},
}
SECRETS = ("crm-token-never-shown", "acc-key-never-shown", "pw-never-shown")


def test_sealed_credentials_open_with_the_key_and_hold_no_plaintext() -> None:
    key = generate_key()
    token = seal(CREDENTIALS, key)
    assert not any(secret in token for secret in SECRETS)
    opened = unseal(token, key)
    assert opened["crm"].token is not None and opened["crm"].token.get_secret_value() == "crm-token-never-shown"
    assert opened["erp"].username == "etl"
    assert opened["erp"].password is not None and opened["erp"].password.get_secret_value() == "pw-never-shown"


def test_a_rotated_key_list_seals_with_the_first_and_opens_with_any() -> None:
    old, new = generate_key(), generate_key()
    sealed_before = seal(CREDENTIALS, old)
    rotated = f"{new},{old}"
    assert unseal(sealed_before, rotated)["crm"].token is not None
    assert unseal(seal(CREDENTIALS, rotated), new)["accounting"].api_key is not None


@pytest.mark.parametrize(
    "token,key,field",
    [
        ("not-a-token", None, "sealed_credentials"),
        (None, generate_key(), "sealed_credentials"),  # another key
        (None, "not-a-fernet-key", SEAL_KEY_ENV),
    ],
    ids=["damaged", "wrong-key", "malformed-key"],
)
def test_a_token_that_cannot_be_opened_is_a_config_error_quoting_nothing(
    token: str | None, key: str | None, field: str
) -> None:
    right = generate_key()
    token = token or seal(CREDENTIALS, right)
    with pytest.raises(ConfigError) as caught:
        unseal(token, key or right)
    assert caught.value.field == field
    assert not any(part in str(caught.value) for part in (token, key or right, *SECRETS))


def test_sealing_validates_the_credentials_and_names_the_field_without_its_value() -> None:
    with pytest.raises(ConfigError) as caught:
        seal({"crm": {"tokn": "crm-token-never-shown"}}, generate_key())
    assert "crm.tokn" in str(caught.value) and "crm-token-never-shown" not in str(caught.value)


def test_sealed_json_that_is_not_credentials_is_refused_on_opening() -> None:
    key = generate_key()
    token = Fernet(key.encode()).encrypt(b'{"crm": {"token": 1, "extra": "x"}}').decode()
    with pytest.raises(ConfigError, match="sealed_credentials: crm"):
        unseal(token, key)


def test_the_key_comes_from_the_environment() -> None:
    assert seal_key_from_env({SEAL_KEY_ENV: " k "}) == "k"
    with pytest.raises(ConfigError, match=SEAL_KEY_ENV):
        seal_key_from_env({})
