"""Credentials: the secrets for one API, given per run and never written anywhere."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr


class Credentials(BaseModel):
    """The secrets of one API for one run; each auth style reads the fields it needs.

    ```json
    {"crm": {"token": "..."}, "accounting": {"api_key": "..."}}
    ```
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token: SecretStr | None = None
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    cookie: SecretStr | None = None

    def secret_values(self) -> list[str]:
        """Every secret string held, for redaction of error messages."""
        values = [self.token, self.api_key, self.password, self.client_secret, self.refresh_token, self.cookie]
        return [v.get_secret_value() for v in values if v is not None]


def all_secrets(credentials: dict[str, Credentials]) -> list[str]:
    return [s for c in credentials.values() for s in c.secret_values()]
