"""Credentials: the secrets for one API, given per run and never written anywhere."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class Credentials(BaseModel):
    """The secrets of one API for one run; each auth style reads the fields it needs.

    ```json
    {"crm": {"token": "..."}, "accounting": {"api_key": "..."}}
    ```
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        json_schema_extra={"examples": [{"token": "..."}, {"username": "etl", "password": "..."}]},
    )

    token: SecretStr | None = Field(default=None, description="bearer: the token.")
    api_key: SecretStr | None = Field(default=None, description="api_key: the key.")
    username: str | None = Field(default=None, description="basic and login: the user (not a secret).")
    password: SecretStr | None = Field(default=None, description="basic and login: the password.")
    client_id: str | None = Field(default=None, description="The OAuth2 styles: the client's id (not a secret).")
    client_secret: SecretStr | None = Field(default=None, description="The OAuth2 styles: the client's secret.")
    refresh_token: SecretStr | None = Field(default=None, description="oauth2_refresh_token: the refresh token.")
    cookie: SecretStr | None = Field(default=None, description="cookie: the session cookie's value.")

    def secret_values(self) -> list[str]:
        """Every secret string held, for redaction of error messages."""
        values = [self.token, self.api_key, self.password, self.client_secret, self.refresh_token, self.cookie]
        return [v.get_secret_value() for v in values if v is not None]


def all_secrets(credentials: dict[str, Credentials]) -> list[str]:
    return [s for c in credentials.values() for s in c.secret_values()]
