"""The audit database Block: where batch and job rows, error events, screens and watermarks are kept."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr
from sqlalchemy.engine import make_url


class AuditDatabase(Block):
    """The audit database of restful-etl batches, as a SQLAlchemy URL (the password stays secret).

    Workers use it when `RESTFUL_ETL_AUDIT_BLOCK` names it; the CLI's `history`, `last-sync`,
    `connected-since` and `errors` read it the same way.

    Example:
        Save one:
        ```python
        from prefect_restful_etl.blocks import AuditDatabase

        AuditDatabase(url="postgresql://etl:...@db.internal/etl_audit").save("etl-audit")
        ```

        Load it:
        ```python
        from prefect_restful_etl.blocks import AuditDatabase

        audit_database = AuditDatabase.load("BLOCK_NAME")
        url = audit_database.url.get_secret_value()
        ```
    """

    model_config = ConfigDict(hide_input_in_errors=True)  # no error quotes a value given

    _block_type_name: ClassVar[str] = "RESTful ETL Audit Database"
    _logo_url = "https://raw.githubusercontent.com/PrefectHQ/prefect/420d0d6a78bb6df1fc18bcf188fdad43c1d22ea9/assets/block-logos/filesystem.png"  # type: ignore[assignment]
    _documentation_url = "https://docs.prefect.io/v3/develop/blocks"  # type: ignore[assignment]
    _description: ClassVar[str] = (
        "The restful-etl audit database (etl_batch, etl_job, etl_error_event, etl_screen, etl_watermark) "
        "as a SQLAlchemy URL: SQLite or PostgreSQL."
    )

    url: SecretStr = Field(
        description="SQLAlchemy URL (sqlite:///audit.db, postgresql://user:password@host/db); kept secret.",
    )

    def safe_url(self) -> str:
        """The URL with its password masked, for messages and reports."""
        return make_url(self.url.get_secret_value()).render_as_string(hide_password=True)
