from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from clarion.delivery.channels.webpush.keys import load_private_key, public_key_of

# RFC 8292 §2.1: a contact for the push service's operator, as a mailto: or an https: URI.
_SUBJECT = re.compile(r"^(mailto:[^@\s]+@[^@\s]+|https://[^\s/]+(/\S*)?)$")
MAX_TTL = 2_419_200  # four weeks: what push services keep a message at most


class WebPushConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vapid_private_key: SecretStr = Field(description="P-256 private key: PEM, or base64url raw (32 bytes) or DER. "
                                         "Make a pair with `clarion vapid-keys`")
    vapid_public_key: str | None = Field(default=None, description="Derived from the private key when left out; "
                                         "the applicationServerKey browsers subscribe with")
    vapid_subject: str = Field(description="mailto: or https: contact for push services (RFC 8292)")
    ttl: int = Field(default=86_400, ge=0, le=MAX_TTL, description="Seconds a push service keeps an undelivered "
                     "message")
    urgency: Literal["very-low", "low", "normal", "high"] = "normal"
    max_concurrency: int = Field(default=50, ge=1, le=1000, description="Requests in flight per send")
    timeout: float = Field(default=15.0, gt=0, le=120)

    @field_validator("vapid_private_key")
    @classmethod
    def _loadable(cls, value: SecretStr) -> SecretStr:
        load_private_key(value.get_secret_value())
        return value

    @field_validator("vapid_subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not _SUBJECT.match(value):
            raise ValueError("a mailto: address or an https: URL")
        return value

    @model_validator(mode="after")
    def _public_key(self) -> WebPushConfig:
        derived = public_key_of(load_private_key(self.vapid_private_key.get_secret_value()))
        given = self.vapid_public_key
        if given is not None and given.rstrip("=") != derived:
            raise ValueError("vapid_public_key does not belong to vapid_private_key (leave it out, or null, to "
                             "derive it)")
        self.vapid_public_key = derived
        return self
