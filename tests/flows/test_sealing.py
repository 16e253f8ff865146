"""Sealed credentials: ciphertext only a key holder opens, for one tenant, sent only to the hosts it names;
sealed with the workers' public key or a shared Fernet key; errors name the field, never a secret."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.fernet import Fernet

from prefect_restful_etl.flows.keys import (
    PRIVATE_KEY_ENV,
    PRIVATE_KEY_FILE_ENV,
    PUBLIC_KEY_ENV,
    box_seal,
    generate_key_pair,
    public_key_from_env,
)
from prefect_restful_etl.flows.sealing import (
    SEAL_KEY_ENV,
    Opened,
    api_hosts,
    bound_hosts,
    check_hosts,
    generate_key,
    origin,
    seal,
    seal_key_from_env,
    unseal,
)
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig

CREDENTIALS = {
    "crm": {"token": "crm-token-never-shown"},
    "accounting": {"api_key": "acc-key-never-shown"},
    "erp": {"username": "etl", "password": "pw-never-shown"},
}
SECRETS = ("crm-token-never-shown", "acc-key-never-shown", "pw-never-shown")
HOSTS = {
    "crm": ["https://crm.example.com"],
    "accounting": ["https://books.example.com/api"],
    "erp": ["http://erp:8080"],
}
APIS = {
    "crm": ApiConfig.model_validate({"name": "crm", "base_url": "https://crm.example.com/v2"}),
    "accounting": ApiConfig.model_validate({"name": "accounting", "base_url": "https://books.example.com/api"}),
}


@pytest.fixture(params=["public-key", "fernet"])
def keys(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, str]]:
    """How to seal (`seal`'s key arguments) and the workers' environment that opens it."""
    if request.param == "public-key":
        pair = generate_key_pair()
        return {"public_key": pair.public}, {PRIVATE_KEY_ENV: pair.private}
    key = generate_key()
    return {"key": key}, {SEAL_KEY_ENV: key}


def test_sealed_credentials_open_for_their_tenant_with_their_hosts_and_hold_no_plaintext(
    keys: tuple[dict[str, Any], dict[str, str]],
) -> None:
    how, environ = keys
    token = seal(CREDENTIALS, tenant_id="acme", hosts=HOSTS, **how)
    assert not any(secret in token for secret in SECRETS)
    opened = unseal(token, tenant_id="acme", environ=environ)
    assert opened.credentials["crm"].token is not None
    assert opened.credentials["crm"].token.get_secret_value() == "crm-token-never-shown"
    assert opened.credentials["erp"].username == "etl"
    assert opened.hosts == {
        "crm": {"https://crm.example.com:443"},
        "accounting": {"https://books.example.com:443"},
        "erp": {"http://erp:8080"},
    }


def test_another_tenants_run_cannot_open_them(keys: tuple[dict[str, Any], dict[str, str]]) -> None:
    how, environ = keys
    token = seal(CREDENTIALS, tenant_id="acme", hosts=HOSTS, **how)
    with pytest.raises(ConfigError, match="another tenant") as caught:
        unseal(token, tenant_id="mallory", environ=environ)
    assert caught.value.field == "sealed_credentials" and "acme" not in str(caught.value)


def crm(base_url: str, token_url: str | None = None) -> dict[str, ApiConfig]:
    auth = {"type": "oauth2_client_credentials", "token_url": token_url} if token_url else {"type": "none"}
    return {**APIS, "crm": ApiConfig.model_validate({"name": "crm", "base_url": base_url, "auth": auth})}


BOUND = Opened(
    credentials={},
    hosts={
        "crm": frozenset({"https://crm.example.com:443"}),
        "accounting": frozenset({"https://books.example.com:443"}),
        "callback": frozenset({"https://hooks.acme.example:443"}),
    },
)


@pytest.mark.parametrize(
    "apis,callback_url,refused,sent_to",
    [
        (APIS, None, None, None),
        (crm("https://CRM.example.com:443/other"), None, None, None),
        (crm("https://crm.example.com", "/oauth/token"), None, None, None),
        (crm("https://evil.example.net/v2"), None, "crm", "https://evil.example.net:443"),
        (crm("http://crm.example.com/v2"), None, "crm", "http://crm.example.com:80"),
        (crm("https://crm.example.com:8443"), None, "crm", "https://crm.example.com:8443"),
        (crm("https://crm.example.com", "https://evil.example.net/token"), None, "crm", "https://evil.example.net:443"),
        (APIS, "https://hooks.acme.example/done", None, None),
        (APIS, "https://evil.example.net/done", "callback", "https://evil.example.net:443"),
    ],
    ids=[
        "same",
        "same-origin",
        "relative-token-url",
        "other-host",
        "other-scheme",
        "other-port",
        "absolute-token-url",
        "callback",
        "other-callback",
    ],
)
def test_a_run_that_would_send_them_to_another_host_is_refused_naming_the_api_and_both_hosts(
    apis: dict[str, ApiConfig], callback_url: str | None, refused: str | None, sent_to: str | None
) -> None:
    if refused is None:
        check_hosts(BOUND, apis, callback_url)
        return
    with pytest.raises(ConfigError) as caught:
        check_hosts(BOUND, apis, callback_url)
    assert caught.value.field == f"sealed_credentials.{refused}"
    assert f"bound to {sorted(BOUND.hosts[refused])[0]}; this run would send them to {sent_to}" in str(caught.value)


def test_the_hosts_to_bind_are_where_the_run_sends_each_apis_credentials() -> None:
    oauth = crm("https://crm.example.com", "https://login.example.com/token")["crm"]
    assert api_hosts(oauth) == {"https://crm.example.com:443", "https://login.example.com:443"}
    hosts = bound_hosts(["crm", "callback"], {"crm": oauth}, "https://hooks.acme.example/done?token=x")
    assert hosts == {
        "crm": ["https://crm.example.com:443", "https://login.example.com:443"],
        "callback": ["https://hooks.acme.example:443"],
    }
    assert bound_hosts(["callback"], {}, None) == {"callback": []}  # no callback: its secret signs for nobody
    with pytest.raises(ConfigError, match="names no API"):
        bound_hosts(["erp"], {"crm": oauth}, None)


@pytest.mark.parametrize("url", ["ftp://x.example.com", "https://", "not a url", "https://x.example.com:99999"])
def test_a_host_must_be_an_http_url(url: str) -> None:
    with pytest.raises(ConfigError, match="hosts"):
        origin(url)


def test_credentials_without_hosts_are_not_sealed() -> None:
    with pytest.raises(ConfigError, match=r"hosts: none given for \['erp'\]"):
        seal(
            CREDENTIALS, tenant_id="acme", hosts={"crm": ["https://a"], "accounting": ["https://b"]}, key=generate_key()
        )


def test_a_token_of_the_first_form_naming_neither_tenant_nor_hosts_is_refused() -> None:
    """What `restful-etl seal` made before: the credentials alone, which any tenant's run could send anywhere."""
    key = generate_key()
    old = Fernet(key.encode()).encrypt(json.dumps({"crm": {"token": "crm-token-never-shown"}}).encode()).decode()
    with pytest.raises(ConfigError, match="seal them again"):
        unseal(old, tenant_id="acme", environ={SEAL_KEY_ENV: key})


def test_rotated_keys_seal_with_the_first_and_open_with_any(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = generate_key(), generate_key()
    sealed_before = seal(CREDENTIALS, tenant_id="t", hosts=HOSTS, key=old)
    assert unseal(sealed_before, tenant_id="t", environ={SEAL_KEY_ENV: f"{new},{old}"}).credentials["crm"].token
    assert unseal(seal(CREDENTIALS, tenant_id="t", hosts=HOSTS, key=f"{new},{old}"), tenant_id="t", environ={
        SEAL_KEY_ENV: new
    }).credentials["crm"].token  # fmt: skip
    old_pair, new_pair = generate_key_pair(), generate_key_pair()
    boxed_before = seal(CREDENTIALS, tenant_id="t", hosts=HOSTS, public_key=old_pair.public)
    rotated = {PRIVATE_KEY_ENV: f"{new_pair.private},{old_pair.private}"}
    assert unseal(boxed_before, tenant_id="t", environ=rotated).credentials["accounting"].api_key
    assert public_key_from_env(rotated) == new_pair.public  # the first private key's public key seals


def test_private_keys_come_from_a_file_too(tmp_path: Any) -> None:
    pair = generate_key_pair()
    (tmp_path / "workers.key").write_text(f"{pair.private}\n")
    token = seal(CREDENTIALS, tenant_id="t", hosts=HOSTS, public_key=pair.public)
    environ = {PRIVATE_KEY_FILE_ENV: str(tmp_path / "workers.key")}
    assert unseal(token, tenant_id="t", environ=environ).credentials["crm"].token


def _damaged(token: str) -> str:
    head, _, tail = token.rpartition(".")
    return f"{head}.{'A' if tail[0] != 'A' else 'B'}{tail[1:]}"


@pytest.mark.parametrize(
    "case,field",
    [
        ("fernet-damaged", "sealed_credentials"),
        ("fernet-wrong-key", "sealed_credentials"),
        ("fernet-malformed-key", SEAL_KEY_ENV),
        ("box-damaged", "sealed_credentials"),
        ("box-other-key", "sealed_credentials"),
        ("box-no-private-key", PRIVATE_KEY_ENV),
        ("box-malformed-private-key", PRIVATE_KEY_ENV),
    ],
)
def test_a_token_that_cannot_be_opened_is_a_config_error_quoting_nothing(case: str, field: str) -> None:
    key, pair, other = generate_key(), generate_key_pair(), generate_key_pair()
    fernet_token = seal(CREDENTIALS, tenant_id="t", hosts=HOSTS, key=key)
    box_token = seal(CREDENTIALS, tenant_id="t", hosts=HOSTS, public_key=pair.public)
    token, environ = {
        "fernet-damaged": ("not-a-token", {SEAL_KEY_ENV: key}),
        "fernet-wrong-key": (fernet_token, {SEAL_KEY_ENV: generate_key()}),
        "fernet-malformed-key": (fernet_token, {SEAL_KEY_ENV: "not-a-fernet-key"}),
        "box-damaged": (_damaged(box_token), {PRIVATE_KEY_ENV: pair.private}),
        "box-other-key": (box_token, {PRIVATE_KEY_ENV: other.private}),
        "box-no-private-key": (box_token, {}),
        "box-malformed-private-key": (box_token, {PRIVATE_KEY_ENV: "restful-etl-private:short"}),
    }[case]
    with pytest.raises(ConfigError) as caught:
        unseal(token, tenant_id="t", environ=environ)
    assert caught.value.field == field
    shown = str(caught.value)
    assert not any(part in shown for part in (token, key, pair.private, other.private, *SECRETS))


def test_sealing_validates_the_credentials_and_names_the_field_without_its_value() -> None:
    with pytest.raises(ConfigError) as caught:
        seal({"crm": {"tokn": "crm-token-never-shown"}}, tenant_id="t", hosts=HOSTS, key=generate_key())
    assert "crm.tokn" in str(caught.value) and "crm-token-never-shown" not in str(caught.value)


def test_sealed_json_that_is_not_credentials_is_refused_on_opening() -> None:
    pair = generate_key_pair()
    document = {"v": 2, "tenant_id": "t", "credentials": {"crm": {"token": 1, "extra": "x"}}, "hosts": {}}
    token = box_seal(json.dumps(document).encode(), pair.public)
    with pytest.raises(ConfigError, match=r"sealed_credentials: credentials\.crm") as caught:
        unseal(token, tenant_id="t", environ={PRIVATE_KEY_ENV: pair.private})
    assert "'x'" not in str(caught.value)


def test_the_keys_come_from_the_environment() -> None:
    assert seal_key_from_env({SEAL_KEY_ENV: " k "}) == "k"
    with pytest.raises(ConfigError, match=SEAL_KEY_ENV):
        seal_key_from_env({})
    pair = generate_key_pair()
    assert public_key_from_env({PUBLIC_KEY_ENV: pair.public}) == pair.public
    assert public_key_from_env({}) is None
    with pytest.raises(ConfigError, match=PUBLIC_KEY_ENV):
        public_key_from_env({PUBLIC_KEY_ENV: pair.private})
