"""The client's side of sealing: which key seals, which hosts a run's credentials are bound to, and a
credentials file turned into run parameters.

A run seals its plain credentials by default when a public key is at hand: `RESTFUL_ETL_PUBLIC_KEY` (or its
file), the public key of the workers' `RESTFUL_ETL_PRIVATE_KEY` on a worker's machine, or the Prefect Variable
`restful-etl-public-key` the workers published. `--seal` insists (and falls back on `RESTFUL_ETL_SEAL_KEY`);
`--no-seal` sends them plain. Sealed credentials are bound to the run's tenant and to the hosts the run sends
each API's credentials to: the batch type's base URLs, with the run's `--base-url` and `--api-block` applied,
and the callback URL for the callback's secret. A batch type Prefect has deployments for but that is not defined
here (its project is elsewhere) names no host: only the run's own `--base-url`s and `--api-block`s do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from prefect_restful_etl.flows.catalog import FOLDER_ENV
from prefect_restful_etl.flows.keys import PUBLIC_KEY_ENV, public_key_from_env, published_public_key
from prefect_restful_etl.flows.sealing import CALLBACK, SEAL_KEY_ENV, bound_hosts, seal
from prefect_restful_etl.tasks.engine.credentials import Credentials
from prefect_restful_etl.tasks.engine.exceptions import ConfigError
from prefect_restful_etl.tasks.engine.http.api import ApiConfig


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
    apis: RunApis,
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
    hosts = apis.hosts(found, callback_url)
    return {"sealed_credentials": seal(found, tenant_id=tenant_id, hosts=hosts, public_key=key.public, key=key.fernet)}


@dataclass(frozen=True)
class RunApis:
    """Where a run will send each API's credentials, as far as this machine can tell: the batch type's APIs with
    the run's base URLs and blocks applied; or, for a batch type not defined here (`defined` False), only the
    APIs the run itself points somewhere."""

    batch_type: str
    apis: dict[str, ApiConfig]
    defined: bool = True

    def hosts(self, credentials: Iterable[str], callback_url: str | None) -> dict[str, list[str]]:
        """The hosts each API's credentials are sealed for. Where the batch type is not defined here, an API the
        run points nowhere is refused, saying what to do: its hosts are in a definition this machine lacks, and
        sealing for any other would only make the workers refuse the run."""
        credentials = list(credentials)
        unknown = sorted(api for api in credentials if api != CALLBACK and api not in self.apis)
        if unknown and not self.defined:
            raise ConfigError(
                "--batch-type",
                f"{self.batch_type!r} is deployed on Prefect but not defined here, so where it sends the credentials "
                f"of {', '.join(unknown)} is not known here, and sealing binds them to those hosts: run this in its "
                f"project's folder, set {FOLDER_ENV} to its batch types folder, or give --base-url API=URL for each",
            )
        return bound_hosts(credentials, self.apis, callback_url)


async def run_apis(
    batch_type: str, base_urls: dict[str, str] | None = None, api_blocks: dict[str, str] | None = None
) -> RunApis:
    """The batch type's APIs as a run with these base URLs and RestApi blocks resolves them, as the batch
    itself will (flows/resources.py): where its credentials will be sent. A batch type the catalog does not
    find here has only those the run names."""
    from prefect_restful_etl.flows.catalog import batch_flows
    from prefect_restful_etl.flows.resources import api_configs, load_api_blocks

    blocks = await load_api_blocks(api_blocks) if api_blocks else {}
    found = batch_flows().get(batch_type)
    if found is None:
        return RunApis(batch_type, _named_by_run(base_urls or {}, blocks), defined=False)
    return RunApis(batch_type, api_configs(found.batch_type, base_urls, blocks))


def _named_by_run(base_urls: dict[str, str], blocks: dict[str, ApiConfig]) -> dict[str, ApiConfig]:
    """The APIs a run points somewhere itself: its blocks, with its base URLs applied."""
    apis = dict(blocks)
    for name, url in base_urls.items():
        given = apis[name].model_dump() if name in apis else {"name": name}
        try:
            apis[name] = ApiConfig.model_validate({**given, "base_url": url})
        except ValidationError as ex:
            message = ex.errors(include_input=False, include_url=False)[0]["msg"]
            raise ConfigError(f"--base-url {name}", message) from None
    return apis


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
    apis: RunApis,
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
    hosts = {**apis.hosts([api for api in found if api not in explicit], callback_url), **explicit}
    key = await sealing_key(symmetric=symmetric)
    if key is None:
        raise ConfigError(
            "sealing",
            f"needs the workers' public key (`restful-etl keygen`, published or in {PUBLIC_KEY_ENV}) "
            f"or {SEAL_KEY_ENV} (`--symmetric`)",
        )
    return seal(found, tenant_id=tenant_id, hosts=hosts, public_key=key.public, key=key.fernet)
