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
    # What the provider bills this message as, in the channel config's cost units: SMS segments, else 1.
    billable_units: int = 1
    # The provider refused because the person opted out or blocked us (Twilio 21610, Telegram 403, WhatsApp
    # 131050): the contact's subscription on this channel is ended, not just this message.
    opted_out: bool = False
    # A transient failure may say how long to wait (Telegram's parameters.retry_after, a Retry-After header).
    retry_after: float | None = None
    # For a message that goes to several addresses of one person (Web Push: every browser subscription of the
    # contact): those that took it, and those the provider says no longer exist and must be forgotten (404/410
    # Gone), whatever the message's own outcome.
    delivered_addresses: tuple[str, ...] = ()
    expired_addresses: tuple[str, ...] = ()

    @classmethod
    def sent(cls, ref: str, provider_message_id: str | None, *, billable_units: int = 1) -> SendResult:
        return cls(ref=ref, ok=True, provider_message_id=provider_message_id, billable_units=billable_units)

    @classmethod
    def failed(cls, ref: str, error: str, *, transient: bool, opted_out: bool = False,
               retry_after: float | None = None) -> SendResult:
        return cls(ref=ref, ok=False, transient=transient, error=error, opted_out=opted_out,
                   retry_after=retry_after)


# The statuses a provider's own vocabulary is mapped onto (Twilio "undelivered" → failed, WhatsApp "read" → read…).
STATUS_SENT, STATUS_DELIVERED, STATUS_READ, STATUS_FAILED = "sent", "delivered", "read", "failed"


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One delivery status a provider reported through a webhook, already in our vocabulary."""

    provider_message_id: str
    status: str  # one of STATUS_*; the tracking domain maps these onto recipients
    occurred_at: datetime
    error_code: str | None = None
    error: str | None = None
    # Our own reference echoed back by the provider (WhatsApp biz_opaque_callback_data = OutgoingMessage.ref).
    ref: str | None = None
    # A failed status that means "try again later" (WhatsApp 130429/131056 throttling) rather than "never".
    transient: bool = False
    # A failed status that means the person opted out of this channel (WhatsApp 131050, Twilio 21610).
    opted_out: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a person sent to one of our numbers or bots (an SMS, a WhatsApp text, a Telegram message)."""

    from_address: str  # E.164 for sms/whatsapp; the chat id for telegram
    text: str
    received_at: datetime
    provider_message_id: str | None = None
    # Telegram: the display name / username the chat came with, for linking.
    sender_name: str | None = None


@dataclass(frozen=True, slots=True)
class ConsentReport:
    """The provider told us, outside any one message's status, that a person opted out of (or back into)
    this channel: WhatsApp `user_preferences` marketing stops and resumes."""

    address: str  # E.164 for sms/whatsapp; the chat id for telegram
    subscribed: bool
    reason: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookResponse:
    """What to answer the provider with, when it expects more than an empty 200 (a challenge echo, TwiML)."""

    status: int = 200
    body: bytes = b""
    media_type: str = "text/plain"


@dataclass(slots=True)
class WebhookResult:
    """Everything one authentic webhook call carried for one channel account."""

    statuses: list[StatusUpdate] = field(default_factory=list)
    inbound: list[InboundMessage] = field(default_factory=list)
    consent: list[ConsentReport] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A webhook call reduced to what signature checks and parsers need, free of any web framework."""

    method: str
    # The public URL the provider called: CLARION_BASE_URL + path + query string, exactly as the provider
    # signed it (Twilio signs the URL), not the URL as seen behind a proxy.
    url: str
    headers: Mapping[str, str]  # lower-cased names
    query: Mapping[str, str]
    body: bytes


class ChannelCheckFailed(ClarionError):
    """The provider's settings are well-formed but do not work (unreachable host, refused credentials)."""

    status = 422
    code = "channel_check_failed"


class WebhookNotSupported(ClarionError):
    status = 404
    code = "webhook_not_supported"


class WebhookRejected(ClarionError):
    """A webhook call that is not authentic (bad or missing signature, wrong verify token): nothing is written."""

    status = 401
    code = "webhook_rejected"

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


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
    # The install's public URL (CLARION_BASE_URL): where providers are told to send status callbacks
    # (Twilio's StatusCallback is per message).
    public_base_url: str | None = None


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

    # --- throughput -------------------------------------------------------------------------------------
    # Messages per second when the channel config sets none (WhatsApp Cloud API: 80); None: unlimited.
    default_rate_limit_per_second: ClassVar[float | None] = None

    # --- webhooks: providers that receive them set `webhook_name` (the <name> in /webhooks/<name>) ----------
    webhook_name: ClassVar[str | None] = None
    # The status a call that no account verifies is refused with (the provider's convention: 401 for WhatsApp and
    # Telegram, 403 for Twilio); the webhook endpoint needs it also when no account is a candidate at all.
    webhook_rejected_status: ClassVar[int] = 401

    @classmethod
    def webhook_account(cls, config: Any) -> str | None:
        """The identifier of this account that the provider's webhook calls carry in the clear (WhatsApp:
        the phone_number_id; Twilio: the AccountSid; Telegram: a digest of the secret token). Stored beside the
        channel config so a call finds its candidate accounts without decrypting every config."""
        return None

    @classmethod
    def webhook_accounts_named(cls, request: WebhookRequest) -> list[str] | None:
        """The accounts an incoming call names, read without trusting it (the signature is checked next,
        per candidate). None: the call names none, so every enabled account of this provider is a candidate
        (WhatsApp's GET verification handshake)."""
        return None

    def handshake(self, request: WebhookRequest) -> WebhookResponse | None:
        """A GET verification call (WhatsApp hub.challenge): the response when it is for this account, else
        None (the endpoint answers 403 when no account claims it)."""
        return None

    def verify_webhook(self, request: WebhookRequest) -> None:
        """Raise WebhookRejected unless the call is authentic for this account (compare in constant time)."""
        raise WebhookNotSupported(f"the {self.slug} channel does not receive webhooks")

    def parse_webhook(self, request: WebhookRequest) -> WebhookResult:
        """What an authentic call carried for this account (entries for other accounts are left out).
        Raises Invalid (422) for a body that is not the provider's format."""
        raise WebhookNotSupported(f"the {self.slug} channel does not receive webhooks")

    def acknowledge(self) -> WebhookResponse:
        """The answer to an authentic call that needs no reply (Twilio wants empty TwiML, others an empty 200)."""
        return WebhookResponse()

    async def reply(self, to: InboundMessage, text: str) -> WebhookResponse | None:
        """Answer an inbound message (the STOP confirmation, HELP): providers whose webhook response can carry
        the reply (Twilio TwiML) return it; the others send it through their API and return None."""
        return None

    async def close(self) -> None:
        """Release connections; the provider may be used again afterwards (it reconnects)."""

    async def __aenter__(self) -> ChannelProvider[C]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
