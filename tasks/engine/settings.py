"""Where the audit database and the stage live, from `RESTFUL_ETL_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Defaults make a laptop work with nothing set: a SQLite file under `.restful-etl/`, memory staging."""

    model_config = SettingsConfigDict(
        env_prefix="RESTFUL_ETL_",
        extra="ignore",
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {
                    "audit_url": "postgresql://etl:PASSWORD@db.internal/etl_audit",
                    "stage_url": "redis://redis.internal:6379/2",
                }
            ]
        },
    )

    home: Path = Field(default=Path(".restful-etl"), description="Folder for the default SQLite audit database.")
    audit_url: SecretStr | None = Field(default=None, description="SQLAlchemy URL; a password in it stays secret.")
    audit_block: str | None = Field(default=None, description="An AuditDatabase block's name; replaces audit_url.")
    stage_url: SecretStr = Field(
        default=SecretStr("memory://"),
        description="`memory://`, `redis://host:port/db` or `mongodb://host:port/database`; a password stays secret.",
    )
    stage_prefix: str = Field(default="restful-etl", description="First part of every stage key.")
    stage_ttl: int | None = Field(
        default=7 * 24 * 3600, description="Seconds a Redis stage key, or a MongoDB stage document, lives."
    )
    keep_stage: bool = Field(default=False, description="Keep a completed batch's staged records.")
    stage_block: str | None = Field(
        default=None, description="Name of an `EtlStage` block; when set it replaces the four stage settings above."
    )
    progress_every: int = Field(default=1000, ge=1, description="Records between a job's progress events.")
    progress_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Seconds at least between a job's progress events (each costs the Prefect server).",
    )
    overlap_wait: float = Field(
        default=60.0, ge=0, description="Seconds a batch waits while another of its tenant and batch type runs."
    )
    lease_ttl: float = Field(
        default=90.0, ge=5, description="Seconds a batch's lease outlives its last renewal (a dead holder's end)."
    )
    callback_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a batch's callback may take all told: connect, send, receive."
    )

    def audit_database(self) -> str:
        if self.audit_url is not None:
            return self.audit_url.get_secret_value()
        return f"sqlite:///{(self.home / 'audit.db').resolve()}"
