"""The client's side of sealing: which key seals, which hosts a run's credentials are bound to, and a
credentials file turned into run parameters.

A run seals its plain credentials by default when a public key is at hand: `RESTFUL_ETL_PUBLIC_KEY` (or its
file), the public key of the workers' `RESTFUL_ETL_PRIVATE_KEY` on a worker's machine, or the Prefect Variable
`restful-etl-public-key` the workers published. `--seal` insists (and falls back on `RESTFUL_ETL_SEAL_KEY`);
`--no-seal` sends them plain. Sealed credentials are bound to the run's tenant and to the hosts the run sends
each API's credentials to: the batch type's base URLs, with the run's `--base-url` and `--api-block` applied,
and the callback URL for the callback's secret.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from prefect_restful_etl.flows.keys import PUBLIC_KEY_ENV, public_key_from_env, published_public_key
from prefect_restful_etl.flows.sealing import SEAL_KEY_ENV, bound_hosts, seal
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig
from prefect_restful_etl.tasks.engine.jobtypes import BatchType


@dataclass(frozen=True)
class SealingKey:
    """The workers' public key, or else the Fernet key both sides hold."""

    public: str | None = None
    fernet: str | None = None


async def sealing_key(*, symmetric: bool = False, ask_prefect: bool = True) -> SealingKey | None:
    """The key to seal with: a public key from the environment or Prefect, else (`symmetric`, or when there is
    no public key) the Fernet key of `RESTFUL_ETL_SEAL_KEY`; None when there is neither."""
    fernet = os.environ.get(SEAL_KEY_ENV, "").strip() or None
    if symmetric:
        return SealingKey(fernet=fernet) if fernet else None
    public = public_key_from_env()
    if public is None and ask_prefect:
        public = await _published()
    if public is not None:
        return SealingKey(public=public)
    return SealingKey(fernet=fernet) if fernet else None


async def _published() -> str | None:
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return None  # no Prefect API set: asking would start a temporary server of its own, which has none
    try:
        return await published_public_key()
    except ConfigError:
        raise
    except Exception:  # no Prefect API to ask: there is no published key to use
        return None


def read_credentials(text: str) -> dict[str, Any] | str:
    """A credentials file's content: a JSON object of plain credentials (checked here, so a typo fails before
    anything is sent), or anything else taken as the output of `restful-etl seal`."""
    text = text.strip()
    if not text.startswith("{"):
        return text
    try:
        plain = json.loads(text)
        TypeAdapter(dict[str, Credentials]).validate_python(plain)
    except (json.JSONDecodeError, ValidationError) as ex:
        raise ConfigError("credentials file", f"is not a credentials object: {type(ex).__name__}") from None
    assert isinstance(plain, dict)
    return plain


async def credential_parameters(
    text: str,
    *,
    tenant_id: str,
    apis: dict[str, ApiConfig],
    callback_url: str | None = None,
    sealing: bool | None = None,
) -> dict[str, Any]:
    """The run parameters for a credentials file: `sealed_credentials`, or plain `credentials`.

    `sealing`: None seals when a public key is at hand, True insists (any key), False never seals. `apis` are
    the run's API configurations, which say the hosts the sealed credentials are bound to."""
    found = read_credentials(text)
    if isinstance(found, str):
        return {"sealed_credentials": found}
    key = None if sealing is False else await sealing_key()
    if sealing is None and key is not None and key.public is None:
        key = None  # by default only a public key seals: the Fernet key is the caller's to choose
    if sealing is True and key is None:
        raise ConfigError(
            "--seal", "no key to seal with: publish the workers' public key (`restful-etl keygen`) or set the key"
        )
    if key is None:
        return {"credentials": found}
    hosts = bound_hosts(found, apis, callback_url)
    return {"sealed_credentials": seal(found, tenant_id=tenant_id, hosts=hosts, public_key=key.public, key=key.fernet)}


async def run_apis(
    batch_type: str, base_urls: dict[str, str] | None = None, api_blocks: dict[str, str] | None = None
) -> dict[str, ApiConfig]:
    """The batch type's APIs as a run with these base URLs and RestApi blocks resolves them, as the batch
    itself will (flows/resources.py): where its credentials will be sent."""
    from prefect_restful_etl.flows.resources import api_configs, load_api_blocks

    blocks = await load_api_blocks(api_blocks) if api_blocks else {}
    return api_configs(batch_type_config(batch_type), base_urls, blocks)


def batch_type_config(name: str) -> BatchType:
    """The `BatchType` a batch type's flow was built from, as the catalog finds it."""
    from prefect_restful_etl.flows.catalog import batch_flows

    return batch_flows()[name].batch_type


def with_hosts(hosts: dict[str, list[str]], pairs: list[str] | None) -> dict[str, list[str]]:
    """`--host API=URL` (repeatable: several hosts) replaces the hosts an API's credentials are bound to."""
    given: dict[str, list[str]] = {}
    for pair in pairs or []:
        api, _, url = pair.partition("=")
        if not api or not url:
            raise ConfigError("--host", "give API=URL")
        given.setdefault(api, []).append(url)
    return {**hosts, **given}


async def seal_file(
    text: str,
    *,
    tenant_id: str,
    apis: dict[str, ApiConfig],
    callback_url: str | None = None,
    host_pairs: list[str] | None = None,
    symmetric: bool = False,
) -> str:
    """`restful-etl seal`: a credentials file sealed for the tenant and the hosts the run's APIs (or `--host`)
    name, with the public key at hand (or the Fernet key, `symmetric`)."""
    found = read_credentials(text)
    if isinstance(found, str):
        raise ConfigError("credentials file", "holds sealed credentials already")
    explicit = with_hosts({}, host_pairs)
    hosts = {**bound_hosts([api for api in found if api not in explicit], apis, callback_url), **explicit}
    key = await sealing_key(symmetric=symmetric)
    if key is None:
        raise ConfigError(
            "sealing",
            f"needs the workers' public key (`restful-etl keygen`, published or in {PUBLIC_KEY_ENV}) "
            f"or {SEAL_KEY_ENV} (`--symmetric`)",
        )
    return seal(found, tenant_id=tenant_id, hosts=hosts, public_key=key.public, key=key.fernet)
