from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TEST_ADDRESSES = 20


class ProcessDailyResult(BaseModel):
    """Seed 002's answer to process-daily."""

    date: date
    campaigns_processed: int
    messages_sent: int
    message: str


class TestSendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(
        min_length=1,
        max_length=MAX_TEST_ADDRESSES,
        description="Email addresses (or phone numbers for sms/whatsapp campaigns)",
    )


class TestSendStatus(BaseModel):
    to: str
    ok: bool
    provider_message_id: str | None = None
    error: str | None = None


class TestSendResult(BaseModel):
    campaign_id: uuid.UUID
    # Whose data the message was rendered with: the campaign's first recipient, or a sample contact.
    contact_source: Literal["recipient", "sample"]
    contact_id: uuid.UUID | None = None
    provider: str
    sent: int
    results: list[TestSendStatus]
