from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clarion.audience.consent import consents

Channel = Literal["email", "sms", "whatsapp", "telegram", "push"]
SubscriptionStatus = Literal["subscribed", "unsubscribed", "bounced", "complained"]


class ContactBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    locale: str | None = Field(default=None, max_length=35)
    timezone: str | None = Field(default=None, max_length=64)


class ContactCreate(ContactBase):
    attributes: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    subscriptions: dict[Channel, SubscriptionStatus] = Field(
        default_factory=dict,
        description="Consent per channel. Unset channels default to subscribed where the contact has an address "
        "(email → email; phone → sms and whatsapp).",
    )


class ContactUpdate(ContactBase):
    attributes: dict[str, Any] | None = Field(default=None, description="Merged into the existing attributes; "
                                              "a key set to null is removed")
    tags: list[str] | None = None
    subscriptions: dict[Channel, SubscriptionStatus] | None = None


class SubscriptionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    status: SubscriptionStatus
    changed_at: datetime
    source: str


class ContactRead(BaseModel):
    id: uuid.UUID
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    locale: str | None
    timezone: str | None
    telegram_chat_id: str | None = Field(default=None, description="The Telegram chat linked through the "
                                         "contact's /start deep link")
    attributes: dict[str, Any]
    tags: list[str]
    subscriptions: dict[str, SubscriptionRead]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, contact: Any) -> ContactRead:
        return cls(
            id=contact.id, email=contact.email, phone=contact.phone, first_name=contact.first_name,
            last_name=contact.last_name, locale=contact.locale, timezone=contact.timezone,
            telegram_chat_id=contact.telegram_chat_id, attributes=contact.attributes or {}, tags=contact.tags or [],
            subscriptions={channel: SubscriptionRead.model_validate(c) for channel, c in consents(contact).items()},
            created_at=contact.created_at, updated_at=contact.updated_at,
        )


class ContactPage(BaseModel):
    items: list[ContactRead]
    next_cursor: str | None


class ImportResult(BaseModel):
    created: int
    updated: int
    rejected: list[dict[str, Any]]
