"""What a hook receiver is told: per batch type, where its hooks arrive, whose they are, how they are signed,
what they carry, and how they gather into micro-batches.

```json
{"host": "127.0.0.1", "port": 8787, "receiver": "main",
 "endpoints": [
   {"batch_type": "crm-to-accounting",
    "tenant": {"type": "path"},
    "signature": {"type": "timestamped", "header": "Crm-Signature", "tolerance": 300},
    "event_id": {"type": "body", "path": "id"},
    "records": "data.object",
    "debounce_seconds": 2, "max_events": 500,
    "tenants": {"acme": {"secret": {"sealed": "gAAAAA..."}, "sealed_credentials": "gAAAAA..."}}}]}
```
A hook for tenant `acme` is then `POST /hooks/crm-to-accounting/acme`. Secrets are never given in clear here:
each tenant's signing secret is sealed (`restful-etl hooks seal-secret`) or a Prefect `Secret` block's name.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_restful_etl.tasks.engine.extract.incremental import CursorType

_NAME = r"^[a-z0-9][a-z0-9\-]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class PathTenant(_Model):
    """The tenant is the URL's last part: `POST /hooks/<batch type>/<tenant>`."""

    type: Literal["path"] = "path"


class HeaderTenant(_Model):
    """The tenant is in a header: `X-Tenant-Id: acme` on `POST /hooks/<batch type>`."""

    type: Literal["header"] = "header"
    name: str = Field(min_length=1, description="The header's name.")


class BodyTenant(_Model):
    """The tenant is in the JSON body at a dotted path: `{"account": {"id": "acme"}, ...}` with `account.id`."""

    type: Literal["body"] = "body"
    path: str = Field(min_length=1, description="Dotted path to the tenant id in the body.")


TenantFrom = Annotated[PathTenant | HeaderTenant | BodyTenant, Field(discriminator="type")]


class HmacSignature(_Model):
    """HMAC-SHA256 of the raw body, in a header: `X-Signature: sha256=5d41402a...` (GitHub, Shopify style).

    `encoding` is how the digest is written (`hex`, or `base64` as Shopify does); `prefix` is what precedes it.
    """

    type: Literal["hmac"] = "hmac"
    header: str = "X-Signature"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = "sha256="


class TimestampedSignature(_Model):
    """HMAC-SHA256 of `<timestamp>.<raw body>`, refused when the timestamp is older than `tolerance` seconds.

    Stripe's form, one header: `Stripe-Signature: t=1767225600,v1=5d41402a...` (several `v1` may be given during
    a secret's rotation). With `timestamp_header` the timestamp comes in a header of its own and the signature
    in `header` after `prefix`, as restful-etl's own callback signs (`X-Restful-Etl-Timestamp`,
    `X-Restful-Etl-Signature: sha256=...`).
    """

    type: Literal["timestamped"] = "timestamped"
    header: str = "Stripe-Signature"
    scheme: str = Field(default="v1", description="The signature's key in a Stripe-style header.")
    timestamp_header: str | None = None
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = Field(default="", description="Before the signature, when `timestamp_header` is set.")
    tolerance: float = Field(default=300, gt=0, description="Seconds a timestamp may be old (or ahead).")


Signature = Annotated[HmacSignature | TimestampedSignature, Field(discriminator="type")]


class FieldRef(_Model):
    """Where a value is: a header (`{"type": "header", "name": "X-Event-Id"}`) or a body path (`{"type": "body",
    "path": "id"}`)."""

    type: Literal["header", "body"] = "body"
    name: str | None = Field(default=None, description="The header, for type header.")
    path: str | None = Field(default=None, description="The dotted body path, for type body.")

    @model_validator(mode="after")
    def _one(self) -> FieldRef:
        if (self.type == "header") != (self.name is not None) or (self.type == "body") != (self.path is not None):
            raise ValueError("a header reference names the header (name), a body reference its path (path)")
        return self


class Rate(_Model):
    """Hooks accepted per tenant: a token bucket refilled at `per_second`, holding at most `burst`."""

    per_second: float = Field(default=200.0, gt=0)
    burst: int = Field(default=2000, ge=1)


class Fetch(_Model):
    """Where a hook carries only an id: the extract job's API is asked for the record by key,
    `GET /customers/{id}` (the id is URL-quoted), its record at `record_path` of the answer."""

    path: str = Field(min_length=1, description="The record's URL on the extract job's API, with `{id}`.")
    record_path: str | None = Field(default=None, description="Dotted path to the record in the answer.")
    concurrency: int = Field(default=8, ge=1)

    @model_validator(mode="after")
    def _has_id(self) -> Fetch:
        if "{id}" not in self.path:
            raise ValueError("path: must hold {id}, where the record's key goes")
        return self


class SealedSecret(_Model):
    """A signing secret sealed like credentials: `{"sealed": "gAAAAA..."}` (`restful-etl hooks seal-secret`)."""

    sealed: str = Field(min_length=1)


class BlockSecret(_Model):
    """A signing secret held by a Prefect `Secret` block: `{"block": "acme-crm-hooks"}`."""

    block: str = Field(min_length=1)


class TenantHooks(_Model):
    """One tenant's hooks: the signing secret, and what its micro-batches are given (sealed, never plain)."""

    secret: SealedSecret | BlockSecret
    sealed_credentials: str | None = Field(default=None, description="The batch's credentials, sealed.")
    base_urls: dict[str, str] | None = None
    api_blocks: dict[str, str] | None = None


class HookFeed(_Model):
    """What a micro-batch needs to know of its hooks: which extract job they replace, how to fetch a record
    whose hook carried only its id, and which field orders a record's versions."""

    job: str = Field(min_length=1, description="The extract job whose records the hooks push.")
    fetch: Fetch | None = None
    version_field: str | None = Field(
        default=None, description="Dotted path of the record's version (default: the job's cursor field)."
    )
    version_type: CursorType = "datetime"


class HookEndpoint(_Model):
    """One batch type's hooks: one URL per tenant (or one URL, the tenant in a header or the body)."""

    batch_type: str = Field(pattern=_NAME)
    job: str | None = Field(default=None, description="The extract job fed; default: the batch type's first one.")
    path: str | None = Field(default=None, description="Default: /hooks/<batch type>, then /<tenant> for path.")
    tenant: TenantFrom = Field(default_factory=PathTenant)
    signature: Signature = Field(default_factory=TimestampedSignature)
    event_id: FieldRef | None = Field(
        default_factory=lambda: FieldRef(type="body", path="id"),
        description="Where the event's id is; a hook without one is known by its body's SHA-256.",
    )
    records: str | None = Field(default=None, description="Dotted path to the record (or list) in the body.")
    ids: str | None = Field(default=None, description="Dotted path to the id (or list): records are fetched.")
    fetch: Fetch | None = None
    version_field: str | None = None
    max_body_bytes: int = Field(default=1_000_000, ge=1)
    rate: Rate = Field(default_factory=Rate)
    debounce_seconds: float = Field(default=2.0, ge=0)
    max_events: int = Field(default=500, ge=1, description="Events that start a micro-batch without waiting.")
    tenants: dict[str, TenantHooks] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> HookEndpoint:
        if self.records is not None and self.ids is not None:
            raise ValueError("records, ids: a hook carries records or ids, not both")
        if self.ids is not None and self.fetch is None:
            raise ValueError("fetch: hooks that carry only ids need it, to read the records by key")
        for tenant in self.tenants:
            if not tenant or set(tenant) & set(":*?[]\\/"):
                raise ValueError("tenants: a tenant id must not be empty nor hold : * ? [ ] \\ /")
        return self

    @property
    def url_path(self) -> str:
        base = self.path or f"/hooks/{self.batch_type}"
        return f"{base}/{{tenant}}" if self.tenant.type == "path" else base

    def feed(self, job: str, cursor_field: str | None, cursor_type: CursorType | None) -> HookFeed:
        return HookFeed(
            job=job,
            fetch=self.fetch,
            version_field=self.version_field or cursor_field,
            version_type=cursor_type or "datetime",
        )


class HooksConfig(_Model):
    """The receiver: where it listens, its name (its segments on the stage carry it), its endpoints."""

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)
    receiver: str = Field(default="main", pattern=_NAME, description="Two receivers on one stage need two names.")
    dedupe_days: int = Field(default=3, ge=1, description="Days an event id is remembered (sources retry).")
    endpoints: list[HookEndpoint] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> HooksConfig:
        paths = [endpoint.url_path for endpoint in self.endpoints]
        if len(set(paths)) != len(paths):
            raise ValueError("endpoints: two endpoints share a URL path")
        kinds = [endpoint.batch_type for endpoint in self.endpoints]
        if len(set(kinds)) != len(kinds):
            raise ValueError("endpoints: one endpoint per batch type")
        return self
