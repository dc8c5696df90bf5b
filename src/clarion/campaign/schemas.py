from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from clarion.campaign.lifecycle import STATES

CampaignType = Literal["broadcast", "scheduled", "follow_up", "drip"]
Channel = Literal["email", "sms", "whatsapp", "telegram", "push"]
CampaignStatus = Literal[STATES]  # type: ignore[valid-type]
RecipientStatus = Literal["pending", "sending", "sent", "delivered", "opened", "clicked", "converted",
                          "failed", "bounced", "skipped", "cancelled"]
EventType = Literal["sent", "failed", "skipped", "delivered", "opened", "clicked", "converted", "bounced",
                    "unsubscribed", "complained", "cancelled"]

# Explicit address lists are bounded so one request stays one statement within every driver's parameter limit.
MAX_RECIPIENTS_PER_REQUEST = 10_000

# Active ISO 4217 codes: a typo such as "EUD" is caught at the door instead of surfacing in reports.
ISO_4217 = frozenset(["AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG", "ZWL"])

_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})?$")


def _currency(value: str | None) -> str | None:
    if value is None:
        return None
    code = value.strip().upper()
    if code not in ISO_4217:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code (e.g. USD, EUR)")
    return code


class SendWindow(BaseModel):
    """When messages may go out: hours [start_hour, end_hour) on the given weekdays (Monday = 0), in UTC or,
    with the campaign's local_time, in each contact's own timezone."""

    model_config = ConfigDict(extra="forbid")

    start_hour: int = Field(default=0, ge=0, le=23)
    end_hour: int = Field(default=24, ge=1, le=24)
    weekdays: list[int] = Field(default_factory=lambda: list(range(7)), min_length=1, max_length=7)

    @field_validator("weekdays")
    @classmethod
    def _check_weekdays(cls, value: list[int]) -> list[int]:
        if any(not 0 <= day <= 6 for day in value):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _check_hours(self) -> SendWindow:
        if self.end_hour <= self.start_hour:
            raise ValueError(f"end_hour ({self.end_hour}) must be after start_hour ({self.start_hour})")
        return self


def _language(value: str | None) -> str | None:
    if value is not None and not _LANGUAGE_CODE.match(value):
        raise ValueError(f"{value!r} is not a language code such as en or en_US")
    return value


class _CampaignFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    type: CampaignType | None = None
    channel: Channel | None = None
    segment_id: uuid.UUID | None = None
    filter: dict[str, Any] | None = Field(default=None, description="A filter tree (see segments)")
    target_audience: dict[str, Any] | None = Field(
        default=None, description='Seed 002 shape, e.g. {"customer_tier": "premium", "tags": ["fashion"]}; '
        "translated into a filter")
    template_id: uuid.UUID | None = None
    template_name: str | None = Field(default=None, min_length=1, max_length=512,
                                      description="WhatsApp provider template name (seed 002)")
    language_code: str | None = Field(default=None, max_length=16)
    template_components: list[dict[str, Any]] | None = None
    scheduled_at: AwareDatetime | None = None
    daily_send_limit: int | None = Field(default=None, ge=1)
    priority: int | None = Field(default=None, ge=1, le=10)
    budget: int | None = Field(default=None, ge=0, description="Minor units of `currency` (cents)")
    currency: str | None = Field(default=None, description="ISO 4217 code")
    send_window: SendWindow | None = None
    local_time: bool | None = Field(default=None, description="Open each contact's send window in its timezone")
    from_email: EmailStr | None = None
    from_name: str | None = Field(default=None, min_length=1, max_length=200)
    reply_to: EmailStr | None = None
    channel_config_id: uuid.UUID | None = Field(
        default=None, description="The channel account to send through; default: the tenant's default one")
    track_opens: bool | None = None
    track_clicks: bool | None = None
    max_send_errors: int | None = Field(default=None, ge=1, le=100_000,
                                        description="Pause after this many consecutive send failures")
    max_attempts: int | None = Field(default=None, ge=1, le=20,
                                     description="Attempts per recipient before a transient failure is final")

    @field_validator("currency")
    @classmethod
    def _check_currency(cls, value: str | None) -> str | None:
        return _currency(value)

    @field_validator("language_code")
    @classmethod
    def _check_language(cls, value: str | None) -> str | None:
        return _language(value)

    def audience_fields(self) -> list[str]:
        return [f for f in ("segment_id", "filter", "target_audience") if f in self.model_fields_set]


class CampaignCreate(_CampaignFields):
    name: str = Field(min_length=1, max_length=200)
    type: CampaignType = "broadcast"
    priority: int = Field(default=5, ge=1, le=10)
    currency: str = Field(default="USD", description="ISO 4217 code")
    local_time: bool = False
    track_opens: bool = True
    track_clicks: bool = True
    max_send_errors: int = Field(default=50, ge=1, le=100_000)
    max_attempts: int = Field(default=3, ge=1, le=20)


class CampaignUpdate(_CampaignFields):
    """Only the fields sent change. Audience and channel change only while the campaign is a draft."""


class CampaignRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str | None
    type: str
    channel: str
    status: str
    status_reason: str | None
    segment_id: uuid.UUID | None
    filter: dict[str, Any] | None
    target_audience: dict[str, Any] | None
    template_id: uuid.UUID | None
    template_name: str | None
    language_code: str | None
    template_components: list[Any] | None
    scheduled_at: datetime | None
    start_date: date | None
    started_at: datetime | None
    completed_at: datetime | None
    daily_send_limit: int | None
    priority: int
    send_window: dict[str, Any] | None
    local_time: bool
    from_email: str | None
    from_name: str | None
    reply_to: str | None
    channel_config_id: uuid.UUID | None
    track_opens: bool
    track_clicks: bool
    max_send_errors: int
    consecutive_failures: int
    max_attempts: int
    budget: int | None
    spent: int
    revenue: int
    currency: str
    total_target: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    converted: int
    bounced: int
    failed: int
    skipped: int
    pending: int
    opened_total: int
    clicked_total: int
    progress_percentage: float = 0.0
    created_at: datetime
    updated_at: datetime


class CampaignActionResult(CampaignRead):
    """A campaign after an action, with seed 002's `campaign_id` and human `message`."""

    campaign_id: uuid.UUID
    message: str


class CampaignPage(BaseModel):
    items: list[CampaignRead]
    next_cursor: str | None


class ScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheduled_at: AwareDatetime


class ActivationResult(BaseModel):
    campaign_id: uuid.UUID
    status: str
    start_date: date
    recipients_scheduled: int
    daily_limit: int | None
    estimated_days: int
    estimated_completion_date: date
    message: str


class RecipientsAdd(BaseModel):
    """Exactly one of the lists, or none with ?use_target_audience=true."""

    model_config = ConfigDict(extra="forbid")

    contact_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_RECIPIENTS_PER_REQUEST)
    emails: list[str] | None = Field(default=None, max_length=MAX_RECIPIENTS_PER_REQUEST)
    phone_numbers: list[str] | None = Field(default=None, max_length=MAX_RECIPIENTS_PER_REQUEST)

    def given(self) -> list[str]:
        return [f for f in ("contact_ids", "emails", "phone_numbers") if getattr(self, f) is not None]


class RecipientsAdded(BaseModel):
    campaign_id: uuid.UUID
    recipients_added: int
    skipped_duplicates: int
    skipped_unsubscribed: int
    total_recipients: int
    unknown: list[str]
    message: str


class RecipientRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    contact_id: uuid.UUID
    email: str | None
    phone: str | None
    status: str
    scheduled_send_date: date | None
    send_after: datetime | None
    retry_count: int
    open_count: int
    click_count: int
    provider_message_id: str | None
    sent_at: datetime | None
    delivered_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None
    converted_at: datetime | None
    failed_at: datetime | None
    failure_reason: str | None
    created_at: datetime


class RecipientPage(BaseModel):
    items: list[RecipientRead]
    next_cursor: str | None


class CampaignStats(BaseModel):
    campaign_id: uuid.UUID
    campaign_name: str
    status: str
    total_target: int
    sent: int
    delivered: int
    read: int
    failed: int
    pending: int
    progress_percentage: float
    delivery_rate: float
    read_rate: float
    estimated_completion_date: date | None
    opened: int
    opened_total: int
    open_rate: float
    clicked: int
    clicked_total: int
    click_rate: float
    converted: int
    bounced: int
    skipped: int
    revenue: int
    spent: int
    budget: int | None
    currency: str


class EventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    type: str
    occurred_at: datetime
    recipient_id: int | None
    contact_id: uuid.UUID | None
    metadata: dict[str, Any] | None = Field(validation_alias="metadata_")
    provider_message_id: str | None


class EventPage(BaseModel):
    items: list[EventRead]
    next_cursor: str | None
