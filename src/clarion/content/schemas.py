from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Channel = Literal["email", "sms", "whatsapp", "telegram", "push"]


class WhatsAppParameter(BaseModel):
    """One Cloud API parameter: `{"type": "text", "text": "..."}`, `{"type": "image", "image": {"link": ...}}`,
    currency, date_time, document, video, payload … Its string values may be Liquid."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "currency", "date_time", "image", "document", "video", "payload", "location", "action",
                  "coupon_code"]


class WhatsAppComponent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["header", "body", "footer", "button"]
    sub_type: str | None = Field(default=None, max_length=32, description="For buttons: quick_reply, url, …")
    index: int | str | None = Field(default=None, description="For buttons: the button's position")
    parameters: list[WhatsAppParameter] = Field(default_factory=list)


class WhatsAppTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=512, description="The provider-approved template name")
    language_code: str = Field(min_length=1, max_length=16, examples=["en_US"])
    components: list[WhatsAppComponent] = Field(default_factory=list)


class _TemplateFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    subject: str | None = Field(default=None, description="Email subject (Liquid)")
    body_html: str | None = Field(default=None, description="Liquid; values are HTML-escaped")
    body_text: str | None = Field(default=None, description="Liquid; for email generated from the HTML when empty")
    header_html: str | None = None
    footer_html: str | None = None
    thumbnail_url: str | None = Field(default=None, max_length=2000)
    whatsapp: WhatsAppTemplate | None = None


class TemplateCreate(_TemplateFields):
    name: str = Field(min_length=1, max_length=200)
    channel: Channel
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Defaults for missing values: a name (`promo_code`) or a path (`contact.attributes.city`) "
        "→ the value used when the data has none")
    is_active: bool = True
    is_default: bool = Field(default=False, description="The channel's default template; at most one per channel")


class TemplateUpdate(_TemplateFields):
    """Fields given replace the stored ones; fields left out stay as they are."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    channel: Channel | None = None
    variables: dict[str, Any] | None = None
    is_active: bool | None = None
    is_default: bool | None = None


class TemplateRead(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    channel: Channel
    subject: str | None
    body_html: str | None
    body_text: str | None
    header_html: str | None
    footer_html: str | None
    variables: dict[str, Any]
    is_active: bool
    is_default: bool
    thumbnail_url: str | None
    whatsapp: WhatsAppTemplate | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, template: Any) -> TemplateRead:
        whatsapp = None
        if template.channel == "whatsapp" and template.provider_template_name:
            whatsapp = WhatsAppTemplate(name=template.provider_template_name,
                                        language_code=template.language_code or "",
                                        components=template.components or [])
        return cls(
            id=template.id, name=template.name, description=template.description, channel=template.channel,
            subject=template.subject, body_html=template.body_html, body_text=template.body_text,
            header_html=template.header_html, footer_html=template.footer_html,
            variables=template.variables or {}, is_active=template.is_active, is_default=template.is_default,
            thumbnail_url=template.thumbnail_url, whatsapp=whatsapp,
            created_at=template.created_at, updated_at=template.updated_at,
        )


class TemplatePage(BaseModel):
    items: list[TemplateRead]
    next_cursor: str | None


class SampleContact(BaseModel):
    """A contact-like object to preview with, without storing a contact."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    tags: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_id: uuid.UUID | None = Field(default=None, description="A stored contact to personalise for")
    sample: SampleContact | None = Field(default=None, description="Or a contact-like sample")
    campaign: dict[str, Any] | None = Field(
        default=None, description="Sample `campaign` values; defaults to {\"id\": \"preview\", \"name\": \"Preview\"}")


class EmailPreview(BaseModel):
    subject: str
    html: str | None
    text: str


class TextPreview(BaseModel):
    text: str


class SmsPreview(TextPreview):
    segments: int
    encoding: Literal["GSM-7", "UCS-2"]


class WhatsAppLanguage(BaseModel):
    code: str


class WhatsAppMessageTemplate(BaseModel):
    name: str
    language: WhatsAppLanguage
    components: list[dict[str, Any]]


class WhatsAppPreview(BaseModel):
    template: WhatsAppMessageTemplate


Preview = EmailPreview | SmsPreview | TextPreview | WhatsAppPreview
