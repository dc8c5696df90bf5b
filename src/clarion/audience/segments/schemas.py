from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clarion.audience.schemas import ContactRead

SegmentKind = Literal["dynamic", "static"]

FILTER_DOC = ("The filter tree: {\"all\": [...]}, {\"any\": [...]}, {\"not\": node} or "
              "{\"field\": F, \"op\": O, \"value\": V}. See clarion.audience.segments.filters.")
TARGET_AUDIENCE_DOC = ("Seed 002's shortcut: {\"customer_tier\": \"premium\", \"tags\": [\"fashion\"]} means "
                       "attribute equality for every key and tags has_all for `tags`.")
MAX_MEMBER_IDS = 10_000


class SegmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    kind: SegmentKind = "dynamic"
    # Typed loosely on purpose: the filter validator reports problems by node path, which beats a schema error.
    filter: Any = Field(default=None, description=FILTER_DOC)
    target_audience: Any = Field(default=None, description=TARGET_AUDIENCE_DOC)


class SegmentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    kind: SegmentKind | None = Field(default=None, description="Cannot change; given only to restate it")
    filter: Any = Field(default=None, description=FILTER_DOC)
    target_audience: Any = Field(default=None, description=TARGET_AUDIENCE_DOC)


class SegmentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str | None
    kind: SegmentKind
    filter: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class SegmentPage(BaseModel):
    items: list[SegmentRead]
    next_cursor: str | None


class MemberIds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact_ids: list[uuid.UUID] = Field(min_length=1, max_length=MAX_MEMBER_IDS)


class MembersAdded(BaseModel):
    added: int = Field(description="Contacts that became members now")
    already_members: int
    unknown: list[uuid.UUID] = Field(description="Ids that are no contact of this tenant; nothing was done for them")


class MembersRemoved(BaseModel):
    removed: int
    not_members: list[uuid.UUID] = Field(description="Ids that were not members (or are unknown)")


class SegmentCount(BaseModel):
    count: int


class FilterPreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filter: Any = Field(default=None, description=FILTER_DOC)
    target_audience: Any = Field(default=None, description=TARGET_AUDIENCE_DOC)
    limit: int = Field(default=20, ge=1, le=500)
    cursor: str | None = Field(default=None, description="next_cursor of the previous preview of the same filter")


class FilterPreview(BaseModel):
    count: int
    filter: dict[str, Any] = Field(description="The normalised tree that was evaluated")
    items: list[ContactRead]
    next_cursor: str | None = Field(description="Send back as `cursor` with the same filter for the next contacts")
