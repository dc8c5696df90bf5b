from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from clarion.models import WebhookCall


class WebhookCallRead(BaseModel):
    id: int
    provider: str
    kind: str | None = Field(description="The /webhooks/<provider>/<kind> segment the call came to (status, inbound …)")
    channel_config_id: uuid.UUID | None = Field(description="The channel account it verified for (null once deleted)")
    received_at: datetime
    headers: dict[str, Any] = Field(description="As received, lower-cased; signature and credential values redacted")
    body: str
    body_sha256: str
    outcome: dict[str, Any] | None = Field(
        description="What the call did: statuses applied, deferred (their send not recorded yet; `later` sums what "
                    "the deferred ones did once applied), unknown message ids, keywords, consent changes, or why it "
                    "could not be read")

    @classmethod
    def of(cls, row: WebhookCall) -> WebhookCallRead:
        return cls(id=row.id, provider=row.provider, kind=row.kind, channel_config_id=row.channel_config_id,
                   received_at=row.received_at, headers=row.headers, body=row.body, body_sha256=row.body_sha256,
                   outcome=row.outcome)


class WebhookCallPage(BaseModel):
    items: list[WebhookCallRead]
    next_cursor: str | None = None
