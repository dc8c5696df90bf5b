from __future__ import annotations

from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey


class Template(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    header_html: Mapped[str | None] = mapped_column(Text)
    footer_html: Mapped[str | None] = mapped_column(Text)
    variables: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(default=True)
    is_default: Mapped[bool] = mapped_column(default=False)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    # WhatsApp Cloud API template (seed 002): the provider-approved name, language and components.
    provider_template_name: Mapped[str | None] = mapped_column(String(512))
    language_code: Mapped[str | None] = mapped_column(String(16))
    components: Mapped[list[Any] | None]
