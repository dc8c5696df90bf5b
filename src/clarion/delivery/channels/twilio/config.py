from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# US/CA short codes are 5 or 6 digits; Twilio takes them as From without a "+".
SHORT_CODE = re.compile(r"^\d{5,6}$")


def _http_url(value: str, field: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+", value):
        raise ValueError(f"{field} must be an http(s) URL")
    return value


class TwilioConfig(BaseModel):
    """A Twilio account sending SMS from one number (or short code), or through a Messaging Service."""

    model_config = ConfigDict(extra="forbid")

    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$", description="AC followed by 32 hex digits")
    auth_token: SecretStr = Field(description="The account's auth token: authenticates API calls and signs webhooks")
    from_number: str | None = Field(default=None, description="E.164 number (or a 5-6 digit short code) to send from")
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$",
                                              description="Send through this Messaging Service instead of one number")
    api_base_url: str = Field(default="https://api.twilio.com", description="Twilio's REST API; a sandbox in tests")
    # Where Twilio posts delivery statuses; None: the install's public URL + /webhooks/twilio/status.
    status_callback_url: str | None = None
    # Requests in flight at once per send() call (and the connection pool's size).
    max_concurrency: int = Field(default=50, ge=1, le=500)
    timeout: float = Field(default=30.0, gt=0, le=300)
    # Keyword replies (HELP, STOP confirmations): the brand named in them (else the tenant's name), the HELP text
    # (replaces the default), and the frequency statement carriers require (default "Msg frequency varies").
    brand_name: str | None = Field(default=None, min_length=1, max_length=60)
    help_text: str | None = Field(default=None, min_length=1, max_length=320)
    message_frequency: str | None = Field(default=None, min_length=1, max_length=80)

    @field_validator("auth_token")
    @classmethod
    def _token_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("auth_token is required")
        return value

    @field_validator("from_number")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and not (E164.match(value) or SHORT_CODE.match(value)):
            raise ValueError("from_number must be an E.164 number such as +14155550100, or a short code")
        return value

    @field_validator("api_base_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return _http_url(value, "api_base_url").rstrip("/")

    @field_validator("status_callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        # Kept exactly as given: Twilio signs the URL it calls, character for character.
        return None if value is None else _http_url(value, "status_callback_url")

    @model_validator(mode="after")
    def _one_sender(self) -> TwilioConfig:
        if (self.from_number is None) == (self.messaging_service_sid is None):
            raise ValueError("give exactly one of from_number and messaging_service_sid")
        return self
