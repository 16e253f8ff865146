"""Sealed credentials: Fernet ciphertext that Prefect stores and passes on, and only a worker can open.

The key lives in the caller's and the workers' environment (`RESTFUL_ETL_SEAL_KEY`), never in Prefect. A
comma-separated list of keys rotates them: the first seals, any of them opens.

```console
$ restful-etl keygen                      # once; give the key to the workers and to whoever seals
$ restful-etl seal creds.json > sealed.txt
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr, TypeAdapter, ValidationError

from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError

SEAL_KEY_ENV = "RESTFUL_ETL_SEAL_KEY"
_CREDENTIALS = TypeAdapter(dict[str, Credentials])


def generate_key() -> str:
    return Fernet.generate_key().decode()


def seal_key_from_env(environ: Mapping[str, str] | None = None) -> str:
    key = (os.environ if environ is None else environ).get(SEAL_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(SEAL_KEY_ENV, "is not set: sealing and opening credentials need the key")
    return key


def _fernet(keys: str) -> MultiFernet:
    try:
        return MultiFernet([Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()])
    except (ValueError, TypeError):
        # Fernet's own message is generic and never quotes the key, but say which setting is wrong
        raise ConfigError(SEAL_KEY_ENV, "is not a Fernet key (make one with `restful-etl keygen`)") from None


def seal(credentials: Mapping[str, Any], key: str) -> str:
    """Encrypt credentials keyed by API name (`{"crm": {"token": "..."}}`); validated first, so a typo
    fails here and not on a worker."""
    try:
        validated = _CREDENTIALS.validate_python(dict(credentials))
    except ValidationError as ex:
        raise ConfigError("credentials", _field_errors(ex)) from None
    plain = {api: _reveal(creds) for api, creds in validated.items()}
    return _fernet(key).encrypt(json.dumps(plain).encode()).decode()


def unseal(token: str, key: str) -> dict[str, Credentials]:
    """Decrypt in memory; a wrong key or a damaged token is a `ConfigError` that quotes neither."""
    try:
        plain = _fernet(key).decrypt(token.strip().encode())
    except InvalidToken:
        raise ConfigError(
            "sealed_credentials", f"cannot be opened with {SEAL_KEY_ENV} (another key, or damaged)"
        ) from None
    try:
        return _CREDENTIALS.validate_json(plain)
    except ValidationError as ex:
        raise ConfigError("sealed_credentials", _field_errors(ex)) from None


def _reveal(credentials: Credentials) -> dict[str, Any]:
    values = credentials.model_dump(exclude_none=True)
    return {name: v.get_secret_value() if isinstance(v, SecretStr) else v for name, v in values.items()}


def _field_errors(ex: ValidationError) -> str:
    """Which fields are wrong, without the input values (they may be secrets)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in ex.errors(include_input=False))
