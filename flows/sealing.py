"""Sealed credentials: ciphertext that Prefect stores and passes on, and only a worker can open; bound to the
tenant and to the hosts each API's credentials may be sent to.

What is sealed, as JSON (`v` 2; a token of the first form, which named neither, is refused):
```json
{"v": 2, "tenant_id": "acme",
 "credentials": {"crm": {"token": "..."}, "callback": {"token": "..."}},
 "hosts": {"crm": ["https://crm.example.com:443"], "callback": ["https://hooks.acme.example:443"]}}
```
A host is scheme, host and port. A batch opens the token only for its own tenant, and refuses to send an API's
credentials anywhere but to its hosts: a run whose `base_urls` or `api_blocks` point an API (or whose
`callback_url` points the callback) at another host fails before any request, naming the API and both hosts.

Two ways to seal, one way to open (the token says which it is):
- with the workers' public key (flows/keys.py): a caller needs no secret of the workers;
- with a Fernet key both sides hold (`RESTFUL_ETL_SEAL_KEY`, comma-separated to rotate: the first seals, any of
  them opens).

```console
$ restful-etl keygen --publish               # a key pair; the public key published for callers
$ restful-etl seal creds.json --tenant acme > sealed.txt
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import BaseModel, ConfigDict, SecretStr, TypeAdapter, ValidationError

from prefect_restful_etl.flows.keys import box_open, box_seal, is_box, private_keys_from_env
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig

SEAL_KEY_ENV = "RESTFUL_ETL_SEAL_KEY"
CALLBACK = "callback"  # the credentials entry whose token signs the batch report posted to `callback_url`
_CREDENTIALS = TypeAdapter(dict[str, Credentials])
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Sealed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    v: int
    tenant_id: str
    credentials: dict[str, Credentials]
    hosts: dict[str, list[str]]


@dataclass(frozen=True)
class Opened:
    """Sealed credentials opened in memory, with the hosts each API's may be sent to."""

    credentials: dict[str, Credentials]
    hosts: dict[str, frozenset[str]]


def generate_key() -> str:
    """A Fernet key for the symmetric form (`RESTFUL_ETL_SEAL_KEY`)."""
    return Fernet.generate_key().decode()


def seal_key_from_env(environ: Mapping[str, str] | None = None) -> str:
    key = (os.environ if environ is None else environ).get(SEAL_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(SEAL_KEY_ENV, "is not set: sealing and opening credentials need the key")
    return key


def origin(url: str) -> str:
    """`https://crm.example.com:443`: where a URL's requests go (scheme, host, port), lower case."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    if scheme not in _DEFAULT_PORTS or not host or port is None:
        raise ConfigError("hosts", "each must be an http(s) URL with a host")
    return f"{scheme}://{host}:{port}"


def api_hosts(api: ApiConfig) -> set[str]:
    """Every host an API's credentials go to: its base URL's, and any absolute URL of its auth style (a token
    or login endpoint on another host); a relative one is on the base URL's host."""
    hosts = {origin(api.url)}
    for value in _strings(api.auth.model_dump(mode="json")):
        if value.lower().startswith(("http://", "https://")):
            hosts.add(origin(value))
    return hosts


def seal(
    credentials: Mapping[str, Any],
    *,
    tenant_id: str,
    hosts: Mapping[str, Iterable[str]],
    public_key: str | None = None,
    key: str | None = None,
) -> str:
    """Seal credentials keyed by API name (`{"crm": {"token": "..."}}`) for one tenant, each API's bound to its
    hosts (URLs or origins), with the workers' public key or else the Fernet `key`. Validated first, so a typo
    fails here and not on a worker."""
    try:
        validated = _CREDENTIALS.validate_python(dict(credentials))
    except ValidationError as ex:
        raise ConfigError("credentials", _field_errors(ex)) from None
    if not tenant_id:
        raise ConfigError("tenant_id", "is required: sealed credentials are bound to one tenant")
    bound = {api: sorted({origin(url) for url in hosts.get(api, ())}) for api in validated}
    # the callback's secret with no host signs nothing: no run may then post a report with it
    unbound = sorted(api for api, origins in bound.items() if not origins and api != CALLBACK)
    if unbound:
        raise ConfigError("hosts", f"none given for {unbound}: say where their credentials may be sent")
    plain = {api: _reveal(creds) for api, creds in validated.items()}
    payload = json.dumps({"v": 2, "tenant_id": tenant_id, "credentials": plain, "hosts": bound}).encode()
    if public_key:
        return box_seal(payload, public_key)
    if key:
        return _fernet(key).encrypt(payload).decode()
    raise ConfigError("sealing", "needs the workers' public key (`restful-etl keygen`) or RESTFUL_ETL_SEAL_KEY")


def unseal(token: str, *, tenant_id: str, environ: Mapping[str, str] | None = None) -> Opened:
    """Decrypt in memory with the keys of the environment (private keys for a box, else the Fernet key); the
    tenant must be the run's. Every failure is a `ConfigError` quoting neither token nor key."""
    document = _open(token, os.environ if environ is None else environ)
    if not isinstance(document, dict) or document.get("v") != 2:
        raise ConfigError(
            "sealed_credentials",
            "were sealed before credentials named their tenant and hosts: seal them again (`restful-etl seal`)",
        )
    try:
        sealed = _Sealed.model_validate(document)
    except ValidationError as ex:
        raise ConfigError("sealed_credentials", _field_errors(ex)) from None
    if sealed.tenant_id != tenant_id:
        raise ConfigError("sealed_credentials", "were sealed for another tenant than this run's")
    hosts = {api: frozenset(sealed.hosts.get(api, ())) for api in sealed.credentials}
    return Opened(credentials=sealed.credentials, hosts=hosts)


def seal_value(purpose: str, secret: str, *, public_key: str | None = None, key: str | None = None) -> str:
    """One secret that is never sent anywhere (a hook receiver's signing secret), sealed for one `purpose`: it
    opens as nothing else, and credentials never open as it."""
    payload = json.dumps({"v": 2, "purpose": purpose, "secret": secret}).encode()
    if public_key:
        return box_seal(payload, public_key)
    if key:
        return _fernet(key).encrypt(payload).decode()
    raise ConfigError("sealing", "needs the workers' public key (`restful-etl keygen`) or RESTFUL_ETL_SEAL_KEY")


def unseal_value(token: str, purpose: str, *, environ: Mapping[str, str] | None = None) -> SecretStr:
    """The secret `seal_value` sealed for `purpose`; a ConfigError for anything else, quoting nothing."""
    document = _open(token, os.environ if environ is None else environ)
    if (
        not isinstance(document, dict)
        or document.get("purpose") != purpose
        or not isinstance(document.get("secret"), str)
    ):
        raise ConfigError("sealed", f"is not a sealed {purpose}")
    return SecretStr(document["secret"])


def check_hosts(opened: Opened, apis: Mapping[str, ApiConfig], callback_url: str | None) -> None:
    """Refuse a run that would send sealed credentials to a host they are not bound to: a replay of a tenant's
    ciphertext with `base_urls`, `api_blocks` or `callback_url` pointed at the replayer's own server."""
    for api, bound in sorted(opened.hosts.items()):
        if api == CALLBACK:
            going = {origin(callback_url)} if callback_url else set()
        elif api in apis:
            going = api_hosts(apis[api])
        else:
            continue  # no API of the batch type: refused as such where the clients open
        foreign = sorted(going - bound)
        if foreign:
            allowed = ", ".join(sorted(bound)) or "no host"
            raise ConfigError(
                f"sealed_credentials.{api}", f"are bound to {allowed}; this run would send them to {', '.join(foreign)}"
            )


def bound_hosts(
    credentials: Iterable[str], apis: Mapping[str, ApiConfig], callback_url: str | None
) -> dict[str, list[str]]:
    """The hosts to seal each API's credentials for: where the given API configurations (the batch type's,
    with a run's base URLs and blocks) send them, and the callback's URL for the callback's secret (none
    without a callback URL: then no run can post a report signed with it)."""
    hosts: dict[str, list[str]] = {}
    for api in credentials:
        if api == CALLBACK:
            hosts[api] = [origin(callback_url)] if callback_url else []  # no URL: bound to none
        elif api in apis:
            hosts[api] = sorted(api_hosts(apis[api]))
        else:
            raise ConfigError("credentials", f"names no API of this batch type: {api}")
    return hosts


def _open(token: str, environ: Mapping[str, str]) -> Any:
    """The JSON a token holds, opened with the environment's keys (private keys for a box, else Fernet)."""
    if is_box(token):
        plain = box_open(token, private_keys_from_env(environ))
    else:
        try:
            plain = _fernet(seal_key_from_env(environ)).decrypt(token.strip().encode())
        except InvalidToken:
            raise ConfigError(
                "sealed_credentials", f"cannot be opened with {SEAL_KEY_ENV} (another key, or damaged)"
            ) from None
    try:
        return json.loads(plain)
    except ValueError:
        raise ConfigError("sealed_credentials", "do not hold JSON") from None


def _fernet(keys: str) -> MultiFernet:
    try:
        return MultiFernet([Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()])
    except (ValueError, TypeError):
        # Fernet's own message is generic and never quotes the key, but say which setting is wrong
        raise ConfigError(
            SEAL_KEY_ENV, "is not a Fernet key (make one with `restful-etl keygen --symmetric`)"
        ) from None


def _reveal(credentials: Credentials) -> dict[str, Any]:
    values = credentials.model_dump(exclude_none=True)
    return {name: v.get_secret_value() if isinstance(v, SecretStr) else v for name, v in values.items()}


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _field_errors(ex: ValidationError) -> str:
    """Which fields are wrong, without the input values (they may be secrets)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in ex.errors(include_input=False))
