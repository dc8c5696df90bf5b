"""The channel provider protocol: the one seam between the send pipeline and the outside world.

A provider takes already-rendered messages and hands them to a transport (an SMTP server, an HTTP API, a
folder). It knows nothing of campaigns, contacts or tenants beyond the plain identifiers carried on a
message or in its config, so it imports only kit/config/errors and libraries — never domain code.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from clarion.errors import ClarionError


@dataclass(frozen=True, slots=True)
class EmailPayload:
    """A finished RFC 5322 message (already signed when signing happens upstream) and its SMTP envelope."""

    raw: bytes
    envelope_from: str
    envelope_to: tuple[str, ...]
    # Kept beside the bytes so indexes (the outbox) need not parse the message again.
    subject: str = ""


@dataclass(frozen=True, slots=True)
class TextPayload:
    """A text-channel message (SMS, WhatsApp, Telegram, push): the body and provider-specific fields
    (a WhatsApp template name and components, a Telegram parse mode, a push title, ...)."""

    text: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    # The caller's handle for this message (a campaign recipient id, a test-send id); echoed on its result.
    ref: str
    to: str
    channel: str
    payload: EmailPayload | TextPayload
    # Plain identifiers, not domain objects: providers that keep their own record (the outbox) or tag
    # messages at the provider (for webhooks) use them; others ignore them.
    campaign_id: uuid.UUID | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendResult:
    ref: str
    ok: bool
    provider_message_id: str | None = None
    # Only meaningful when not ok: True means "try again later" (4xx, connection trouble), False means
    # "this message will never go through as it is" (5xx, an invalid address).
    transient: bool = False
    error: str | None = None

    @classmethod
    def sent(cls, ref: str, provider_message_id: str | None) -> SendResult:
        return cls(ref=ref, ok=True, provider_message_id=provider_message_id)

    @classmethod
    def failed(cls, ref: str, error: str, *, transient: bool) -> SendResult:
        return cls(ref=ref, ok=False, transient=transient, error=error)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One delivery status a provider reported through a webhook."""

    provider_message_id: str
    status: str  # delivered, read, failed, bounced, ... — the tracking domain maps these onto recipients
    occurred_at: datetime
    error_code: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A webhook call reduced to what signature checks and parsers need, free of any web framework."""

    method: str
    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


class ChannelCheckFailed(ClarionError):
    """The provider's settings are well-formed but do not work (unreachable host, refused credentials)."""

    status = 422
    code = "channel_check_failed"


class WebhookNotSupported(ClarionError):
    status = 404
    code = "webhook_not_supported"


class OutboxIndex(Protocol):
    """Where the outbox provider records what it wrote, so the API can list it. Implemented in the
    delivery domain over the database; the provider only sees this protocol."""

    async def record(self, entries: Sequence[OutboxEntry]) -> None: ...


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: uuid.UUID
    tenant_id: uuid.UUID
    campaign_id: uuid.UUID | None
    ref: str
    to: str
    subject: str
    path: str  # relative to the data directory
    size: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """Runtime resources a provider may need beside its (serialisable, per-tenant) config."""

    outbox_index: OutboxIndex | None = None


C = TypeVar("C", bound=BaseModel)


class ChannelProvider(ABC, Generic[C]):
    """Subclasses set `slug`, `channel` and `config_schema`, and implement `send`.

    `send` returns exactly one result per message, in the same order, and never raises because one
    message failed: a per-message failure is a result, classified transient or permanent.
    """

    slug: ClassVar[str]
    channel: ClassVar[str]  # "email", "sms", "whatsapp", "telegram", "push"
    config_schema: ClassVar[type[BaseModel]]

    def __init__(self, config: C, context: ProviderContext | None = None) -> None:
        self.config = config
        self.context = context or ProviderContext()

    @abstractmethod
    async def send(self, batch: list[OutgoingMessage]) -> list[SendResult]: ...

    async def check(self) -> None:
        """Verify the settings against the real service where it can be done without sending.
        Raises ChannelCheckFailed. The default has nothing to check."""

    def parse_webhook(self, request: WebhookRequest) -> list[StatusUpdate]:
        raise WebhookNotSupported(f"the {self.slug} channel does not receive webhooks")

    async def close(self) -> None:
        """Release connections; the provider may be used again afterwards (it reconnects)."""

    async def __aenter__(self) -> ChannelProvider[C]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
