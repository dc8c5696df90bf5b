from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from clarion.campaign.lifecycle import STATES

CampaignType = Literal["broadcast", "scheduled", "follow_up", "drip"]
Channel = Literal["email", "sms", "whatsapp", "telegram", "push"]
CampaignStatus = Literal[STATES]  # type: ignore[valid-type]
RecipientStatus = Literal["pending", "queued", "sent", "delivered", "opened", "read", "clicked", "converted",
                          "failed", "bounced", "skipped", "unsubscribed", "cancelled"]

# Explicit address lists are bounded so one request stays one statement within every driver's parameter limit.
MAX_RECIPIENTS_PER_REQUEST = 10_000

# Active ISO 4217 codes: a typo such as "EUD" is caught at the door instead of surfacing in reports.
ISO_4217 = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF
CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD
GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR
LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK
PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT
TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW
ZWG ZWL
""".split())

_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})?$")


def _currency(value: str | None) -> str | None:
    if value is None:
        return None
    code = value.strip().upper()
    if code not in ISO_4217:
        raise ValueError(f"{value!r} is not an ISO 4217 currency code (e.g. USD, EUR)")
    return code


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
    clicked: int
    converted: int
    bounced: int
    skipped: int
    revenue: int
    spent: int
    budget: int | None
    currency: str
