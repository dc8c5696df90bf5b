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
        description="Email addresses (phone numbers for sms/whatsapp campaigns, chat ids for telegram)",
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


class SendLimits(BaseModel):
    """What limits a campaign's sending right now; null means "no such limit"."""

    campaign_id: uuid.UUID
    channel_config_id: uuid.UUID | None = Field(description="The account it sends through; null: the built-in outbox")
    provider: str
    daily_send_limit: int | None
    sent_today: int = Field(description="Recipients claimed today (UTC) against daily_send_limit")
    messaging_limit_tier: int | None = Field(
        description="Distinct recipients the account may message in any rolling 24 hours, shared by every "
                    "campaign sending through it (WhatsApp's messaging-limit tier); null: unlimited")
    tier_recipients_used: int | None = Field(description="Distinct recipients messaged through the account in the "
                                                         "last 24 hours, messages in flight included")
    tier_recipients_left: int | None
    effective_daily_limit: int | None = Field(
        description="daily_send_limit, lowered to what the account's tier leaves in the current 24 hours")
    budget: int | None
    spent: int
    cost_per_message: int = Field(description="Of the account, per billable unit (an SMS segment), in minor units")
    currency: str
    budget_messages_left: int | None = Field(description="Single-unit messages the remaining budget pays for")
    can_send_now: int | None = Field(description="The smallest of what is left today, of the tier and of the budget")
