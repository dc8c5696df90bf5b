from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from clarion.delivery.channels.smtp.dkim import DkimKey, normalise_private_key

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class DkimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(min_length=1, max_length=253)
    selector: str = Field(min_length=1, max_length=63)
    private_key: SecretStr = Field(description="RSA private key, PEM (PKCS#1 or PKCS#8, unencrypted)")

    @field_validator("private_key")
    @classmethod
    def _loadable(cls, value: SecretStr) -> SecretStr:
        return SecretStr(normalise_private_key(value.get_secret_value()).decode())

    @model_validator(mode="after")
    def _names(self) -> DkimConfig:
        self.key()  # raises ValueError on a domain or selector that is not a DNS name
        return self

    def key(self) -> DkimKey:
        return DkimKey(domain=self.domain, selector=self.selector,
                       private_key=self.private_key.get_secret_value().encode())


class SmtpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=587, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = Field(default=None, validate_default=True)
    # starttls: upgrade a plain connection (port 587); tls: TLS from the first byte (port 465).
    security: Literal["none", "starttls", "tls"] = "starttls"
    validate_certs: bool = True
    timeout: float = Field(default=30.0, gt=0, le=600)
    pool_size: int = Field(default=4, ge=1, le=64)
    # Many servers cap messages per session; reconnecting before the cap avoids a failed message.
    max_messages_per_connection: int = Field(default=500, ge=1)
    from_email: EmailStr | None = None
    # The name given in EHLO; None lets aiosmtplib use the machine's FQDN.
    local_hostname: str | None = None
    dkim: DkimConfig | None = None

    @field_validator("password")
    @classmethod
    def _credentials_pair(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (info.data.get("username") is None) != (value is None):
            raise ValueError("username and password go together")
        return value

    @field_validator("security")
    @classmethod
    def _no_clear_text_password(cls, value: str, info: ValidationInfo) -> str:
        # A password is never sent in the clear to a server that may be remote; a local relay is fine.
        if value == "none" and info.data.get("username") and info.data.get("host") not in _LOOPBACK:
            raise ValueError("authentication to a non-local server needs 'starttls' or 'tls'")
        return value
