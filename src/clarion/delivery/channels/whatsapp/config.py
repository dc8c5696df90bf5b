from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# Meta's business-initiated conversation limits per rolling 24 hours; the send pipeline enforces the tier.
MessagingLimitTier = Literal[250, 2000, 10000, 100000, "unlimited"]
# The names the Graph API itself reports (GET /{phone_number_id}?fields=messaging_limit_tier), accepted so a
# value copied from Meta's dashboard or API works as is.
_TIER_NAMES: dict[str, int | str] = {
    "TIER_250": 250, "TIER_2K": 2000, "TIER_10K": 10000, "TIER_100K": 100000, "TIER_UNLIMITED": "unlimited",
}

_GRAPH_ID = r"^[0-9]{1,32}$"


class WhatsAppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number_id: str = Field(pattern=_GRAPH_ID, description="The Cloud API phone number ID (not the number)")
    access_token: SecretStr = Field(min_length=1, description="A system user access token with "
                                    "whatsapp_business_messaging permission")
    app_secret: SecretStr = Field(min_length=1, description="The Meta app secret: checks X-Hub-Signature-256")
    verify_token: SecretStr = Field(min_length=1, description="The token Meta echoes in the webhook "
                                    "verification handshake (hub.verify_token)")
    api_version: str = Field(default="v21.0", pattern=r"^v[0-9]{1,3}\.[0-9]{1,3}$")
    api_base_url: str = Field(default="https://graph.facebook.com",
                              description="Where the Graph API is; a sandbox URL in tests and the demo")
    business_account_id: str | None = Field(default=None, pattern=_GRAPH_ID)
    messaging_limit_tier: MessagingLimitTier = 250
    # Requests in flight at once for one batch (and the connection pool size).
    max_concurrency: int = Field(default=50, ge=1, le=1000)
    timeout: float = Field(default=30.0, gt=0, le=300)

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http(s) URL with a host")
        if url.query or url.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.rstrip("/")

    @field_validator("messaging_limit_tier", mode="before")
    @classmethod
    def _tier_spellings(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.upper() in _TIER_NAMES:
                return _TIER_NAMES[text.upper()]
            if text.isdigit():
                return int(text)
            return text.lower()
        return value

    def graph_url(self, *path: str) -> str:
        return "/".join((self.api_base_url, self.api_version, *path))
