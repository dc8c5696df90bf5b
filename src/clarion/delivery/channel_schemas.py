from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

Channel = Literal["email", "sms", "whatsapp", "telegram", "push"]


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Channel
    provider: str = Field(min_length=1, max_length=32, description="A provider slug, e.g. smtp")
    name: str = Field(min_length=1, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict,
                                   description="The provider's settings; secret fields are write-only")
    enabled: bool = True
    is_default: bool = Field(default=False, description="The first account of a channel becomes its default "
                                                        "unless this is given")
    from_email: EmailStr | None = None
    reply_to: EmailStr | None = None
    rate_limit_per_second: float | None = Field(default=None, gt=0, le=100_000,
                                                description="Across all workers; null: the provider's default")
    cost_per_message: int = Field(default=0, ge=0, description="Minor units of currency")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")


class ChannelUpdate(BaseModel):
    """Only the fields given change. `config` is merged into the stored one key by key; a secret left out, or
    sent back masked as it was shown, keeps its stored value."""

    model_config = ConfigDict(extra="forbid")

    provider: str | None = Field(default=None, min_length=1, max_length=32)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    config: dict[str, Any] | None = None
    enabled: bool | None = None
    is_default: bool | None = None
    from_email: EmailStr | None = None
    reply_to: EmailStr | None = None
    rate_limit_per_second: float | None = Field(default=None, gt=0, le=100_000)
    cost_per_message: int | None = Field(default=None, ge=0)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


class ChannelRead(BaseModel):
    id: uuid.UUID
    channel: Channel
    provider: str
    name: str
    config: dict[str, Any] | None = Field(description="Secrets masked; null when the stored secrets no longer "
                                                      "decrypt (see config_error)")
    config_error: str | None = None
    enabled: bool
    is_default: bool
    from_email: str | None
    reply_to: str | None
    rate_limit_per_second: float | None
    cost_per_message: int
    currency: str
    created_at: datetime
    updated_at: datetime


class ChannelPage(BaseModel):
    items: list[ChannelRead]
    next_cursor: str | None = None


class ChannelCheck(BaseModel):
    ok: bool
    provider: str
