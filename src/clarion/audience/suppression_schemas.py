from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from clarion.audience.schemas import Channel

SuppressionReason = Literal["bounced", "complained", "unsubscribed", "manual"]
MAX_ADDRESSES = 10_000


class SuppressionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    addresses: list[str] = Field(min_length=1, max_length=MAX_ADDRESSES,
                                 description="Emails (email) or phone numbers (sms, whatsapp); normalised like "
                                 "contacts' (lower-cased email, E.164 phone)")
    reason: SuppressionReason = "manual"
    note: str | None = Field(default=None, max_length=1000)


class SuppressionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    channel: str
    address: str
    reason: str
    note: str | None
    created_at: datetime


class InvalidAddress(BaseModel):
    address: str
    error: str


class SuppressionsAdded(BaseModel):
    added: int = Field(description="New entries")
    already_suppressed: int = Field(description="Valid addresses that were on the list already (left unchanged)")
    invalid: list[InvalidAddress]
    items: list[SuppressionRead] = Field(description="The entries of every valid address given, new or old")


class SuppressionPage(BaseModel):
    items: list[SuppressionRead]
    next_cursor: str | None


class SuppressionCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    address: str = Field(min_length=1, max_length=400)


class SuppressionCheckResult(BaseModel):
    channel: str
    address: str = Field(description="The address as normalised")
    suppressed: bool
    reason: str | None = None
    suppression_id: uuid.UUID | None = None
