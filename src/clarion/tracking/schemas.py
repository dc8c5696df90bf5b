from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator


class ConversionCreate(BaseModel):
    """Either `token` (any tracking token from the message) or `campaign_id` + `contact_id`."""

    campaign_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None
    token: str | None = Field(default=None, max_length=2048)
    revenue: int = Field(default=0, ge=0, description="minor units of `currency` (cents for USD)")
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$",
                                 description="ISO 4217; must be the campaign's currency (default)")
    occurred_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255,
                                        description="a retried POST with the same key counts once")

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a timezone offset, e.g. 2025-06-01T12:00:00Z")
        return value

    @model_validator(mode="after")
    def _who(self) -> ConversionCreate:
        if self.token is None and (self.campaign_id is None or self.contact_id is None):
            raise ValueError("give a tracking `token`, or both `campaign_id` and `contact_id`")
        return self


class ConversionRead(BaseModel):
    id: int
    campaign_id: uuid.UUID
    recipient_id: int | None
    contact_id: uuid.UUID | None
    revenue: int
    currency: str
    occurred_at: datetime
    duplicate: bool = Field(description="true when the idempotency key was seen before; nothing was counted")


class BounceResult(BaseModel):
    email: str
    kind: Literal["hard", "soft"]
    status: str | None
    contact_id: uuid.UUID | None
    recipient_id: int | None
    address_bounced: bool = Field(description="hard bounce, or the soft-bounce threshold reached")
    contact_marked: bool = Field(description="the contact's email consent changed to `bounced` just now")


class BounceOutcome(BaseModel):
    bounces: list[BounceResult] = []
    original_message_id: str | None = None
    ignored: str | None = Field(default=None, description="why nothing was done: auto_reply, not_a_bounce, "
                                                          "no_failure_found, unknown_message")
