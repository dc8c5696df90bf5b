"""Turning one campaign's claimed recipients into ready-to-send messages: render the template for each contact,
track links and opens, and build the channel's payload (RFC 5322 bytes for email).

No database and no provider here: the dispatcher loads what a batch needs, calls these functions, registers the
batch's links in between, and sends. A recipient whose message cannot be made fails alone (`Composed.error`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formataddr
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlsplit

import css_inline

from clarion.audience import service as audience
from clarion.content import rendering
from clarion.delivery.channels.base import EmailPayload, OutgoingMessage, TextPayload
from clarion.delivery.email_message import build_email
from clarion.kit import tracking_urls
from clarion.kit.signing import signer_for

TEST_SUBJECT_PREFIX = "[TEST] "
# A recipient's channel → the address field a message goes to.
_ADDRESS_OF_CHANNEL = {"email": "email", "sms": "phone", "whatsapp": "phone", "telegram": "telegram chat",
                       "push": "push subscription"}
# The template fields that may name `telegram_start_url` (the dispatcher looks the bot up only for those).
_TEMPLATE_TEXT_FIELDS = ("subject", "body_html", "body_text", "header_html", "footer_html")


class CampaignLike(Protocol):
    """What composing needs of a campaign (campaign.sending.SendingCampaign has it)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    channel: str
    from_email: str | None
    from_name: str | None
    reply_to: str | None
    track_opens: bool
    track_clicks: bool
    template_name: str | None
    language_code: str | None
    template_components: list[Any] | None


@dataclass(frozen=True, slots=True)
class Content:
    """A campaign's message source: a stored template's parts, or a WhatsApp template named on the campaign."""

    channel: str
    variables: Mapping[str, Any]
    email: rendering.EmailParts | None = None
    body_text: str | None = None
    whatsapp_name: str | None = None
    whatsapp_language: str | None = None
    whatsapp_components: list[Any] | None = None
    # Push: the notification's title (the template's subject, Liquid) and icon (its thumbnail_url).
    subject: str | None = None
    icon_url: str | None = None
    # The tenant's Telegram bot username when the template uses `telegram_start_url` (set by the caller).
    telegram_bot: str | None = None
    # False when no part of the template can read view_in_browser_url: its signed URL is then not made.
    view_in_browser: bool = True


@dataclass(frozen=True, slots=True)
class Sender:
    """From, Reply-To and where List-Unsubscribe's mailto goes, for one campaign on one channel account."""

    from_header: str
    from_address: str
    reply_to: str | None

    @property
    def domain(self) -> str:
        return self.from_address.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Links:
    """How a message's public URLs are made: the install's base URL and secret."""

    base_url: str
    secret: str

    def view_in_browser(self, recipient_id: int) -> str:
        # Signed like the tracking tokens, so /t/v serves it without a lookup table.
        return f"{self.base_url}/t/v/{signer_for(self.secret).sign('view', (recipient_id,))}"


@dataclass(slots=True)
class Rendered:
    """One recipient's rendered content, before links are tracked and the payload is built."""

    recipient_id: int
    to: str
    subject: str = ""
    html: str | None = None
    text: str = ""
    fields: dict[str, Any] | None = None
    unsubscribe_url: str | None = None  # the one the template saw; List-Unsubscribe names the same
    unsubscribe_token: str | None = None  # the recipient's, signed once for the URL and List-Unsubscribe's mailto


@dataclass(frozen=True, slots=True)
class Composed:
    recipient_id: int
    message: OutgoingMessage | None = None
    error: str | None = None  # why no message could be made (a permanent failure for this recipient)


@lru_cache(maxsize=256)
def _id_text(value: uuid.UUID) -> str:
    # Every message of a campaign names its campaign and tenant: each id is made text once (~1 µs).
    return str(value)


def pick_sender(campaign: CampaignLike, resolved: Any, *, base_url: str) -> Sender | None:
    """Email only (None for other channels): the campaign's own From wins, then the channel account's, then
    the provider config's; with none set (the built-in outbox of a fresh install) mail comes from no-reply at
    the install's host."""
    if campaign.channel != "email":
        return None
    channel_reply_to = resolved.reply_to
    address = campaign.from_email or resolved.from_email or getattr(resolved.config, "from_email", None)
    if not address:
        address = f"no-reply@{urlsplit(base_url).hostname or 'localhost'}"
    header = formataddr((campaign.from_name, address)) if campaign.from_name else address
    return Sender(from_header=header, from_address=address, reply_to=campaign.reply_to or channel_reply_to)


def content_of(campaign: CampaignLike, template: Any | None) -> Content:
    """The message source of a campaign; ValueError when it has none it can send on its channel."""
    if template is not None:
        if template.channel != campaign.channel:
            raise ValueError(
                f"template {template.id} is for {template.channel}, the campaign sends {campaign.channel}"
            )
        variables = dict(template.variables or {})
        if campaign.channel == "email":
            parts = rendering.EmailParts(
                subject=template.subject or "",
                body_html=template.body_html,
                body_text=template.body_text,
                header_html=template.header_html,
                footer_html=template.footer_html,
            )
            reads_view = rendering.may_read("view_in_browser_url", [
                ("text", parts.subject), ("html", parts.body_html), ("text", parts.body_text),
                ("html", parts.header_html), ("html", parts.footer_html)])
            return Content(channel="email", variables=variables, email=parts, view_in_browser=reads_view)
        if campaign.channel == "whatsapp":
            return Content(
                channel="whatsapp",
                variables=variables,
                whatsapp_name=template.provider_template_name,
                whatsapp_language=template.language_code,
                whatsapp_components=list(template.components or []),
            )
        if campaign.channel == "push":
            return Content(channel="push", variables=variables, body_text=template.body_text or "",
                           subject=template.subject, icon_url=template.thumbnail_url)
        return Content(channel=campaign.channel, variables=variables, body_text=template.body_text or "")
    if campaign.channel == "whatsapp" and campaign.template_name:
        # Seed 002: the WhatsApp template is named on the campaign itself.
        return Content(
            channel="whatsapp",
            variables={},
            whatsapp_name=campaign.template_name,
            whatsapp_language=campaign.language_code or "en_US",
            whatsapp_components=list(campaign.template_components or []),
        )
    raise ValueError("the campaign has no template to send")


def uses_telegram_link(template: Any | None) -> bool:
    """Whether the template names telegram_start_url (only then is the tenant's Telegram bot looked up)."""
    if template is None:
        return False
    sources = [getattr(template, name, None) or "" for name in _TEMPLATE_TEXT_FIELDS]
    sources.append(repr(getattr(template, "components", None) or ""))
    return any("telegram_start_url" in source for source in sources)


def recipient_address(channel: str, email: str | None, phone: str | None,
                      contact: Mapping[str, Any] | None) -> str | None:
    """Where a recipient's message goes: the email or phone snapshotted on the recipient; for telegram the chat
    the contact has linked now; for push the contact id, when it has a browser subscription (the message carries
    them all)."""
    if channel == "email":
        return email
    if channel in ("sms", "whatsapp"):
        return phone
    if contact is None:
        return None
    if channel == "telegram":
        return contact.get("telegram_chat_id")
    if channel == "push" and contact.get("push_subscriptions"):
        return str(contact["id"])
    return None


def render_one(
    content: Content,
    campaign: CampaignLike,
    recipient_id: int,
    to: str,
    contact: Mapping[str, Any],
    links: Links,
    *,
    unsubscribe_url: str | None = None,
) -> Rendered:
    """Render one recipient's message. Raises rendering.RenderError (or css_inline.InlineError) when the template
    needs data this contact lacks."""
    unsubscribe_token = tracking_urls.unsubscribe_token(links.secret, recipient_id)
    unsubscribe_url = unsubscribe_url or tracking_urls.unsubscribe_url_of(links.base_url, unsubscribe_token)
    context = rendering.build_context(
        contact,
        campaign={"id": _id_text(campaign.id), "name": campaign.name},
        variables=content.variables,
        unsubscribe_url=unsubscribe_url,
        view_in_browser_url=links.view_in_browser(recipient_id) if content.view_in_browser else "",
    )
    if content.telegram_bot:
        contact_id = contact.get("id")
        # A sample contact (a test send) has no link of its own: its stand-in opens the bot and links nothing.
        context["telegram_start_url"] = f"https://t.me/{content.telegram_bot}" if contact_id is None else \
            audience.telegram_deep_link(content.telegram_bot, campaign.tenant_id, contact_id, secret=links.secret)
    if content.email is not None:
        email = rendering.render_email(content.email, context)
        return Rendered(recipient_id, to, subject=email.subject, html=email.html, text=email.text,
                        unsubscribe_url=unsubscribe_url, unsubscribe_token=unsubscribe_token)
    if content.whatsapp_name is not None:
        components = rendering.render_whatsapp_components(content.whatsapp_components or [], context)
        return Rendered(
            recipient_id,
            to,
            fields={
                "template": {
                    "name": content.whatsapp_name,
                    "language": {"code": content.whatsapp_language},
                    "components": components,
                }
            },
        )
    if content.channel == "telegram":
        # Sent with parse_mode HTML: the template's own tags stay, values from the data are escaped.
        return Rendered(recipient_id, to, text=rendering.render_html(content.body_text or "", context,
                                                                      field="body_text"))
    text = rendering.render_text(content.body_text or "", context)
    if content.channel == "push":
        return Rendered(recipient_id, to, text=text, fields=_notification_fields(content, context, contact))
    return Rendered(recipient_id, to, text=text)


def _notification_fields(content: Content, context: Mapping[str, Any],
                         contact: Mapping[str, Any]) -> dict[str, Any]:
    """A push message's title (the subject), url (the `push_url` variable, Liquid), icon (the template's
    thumbnail) and the browser subscriptions it goes to."""
    fields: dict[str, Any] = {"subscriptions": list(contact.get("push_subscriptions") or [])}
    if content.subject:
        fields["title"] = " ".join(rendering.render_text(content.subject, context, field="subject").split())
    url = context.get("push_url")
    if isinstance(url, str) and url:
        fields["url"] = rendering.render_text(url, context, field="variables.push_url").strip()
    if content.icon_url:
        fields["icon"] = content.icon_url
    return fields


def render_all(
    content: Content,
    campaign: CampaignLike,
    recipients: list[tuple[int, str | None, Any]],
    contacts: Mapping[Any, Mapping[str, Any]],
    links: Links,
) -> tuple[list[Rendered], list[Composed]]:
    """(rendered, failed) for (recipient id, address, contact id) triples; a missing address or contact, or a
    template that cannot render for this contact, fails that recipient only."""
    rendered: list[Rendered] = []
    failed: list[Composed] = []
    for recipient_id, address, contact_id in recipients:
        contact = contacts.get(contact_id)
        if not address:
            failed.append(
                Composed(
                    recipient_id,
                    error=f"no {_ADDRESS_OF_CHANNEL.get(campaign.channel, 'address')} "
                    f"to send {campaign.channel} to",
                )
            )
        elif contact is None:
            failed.append(Composed(recipient_id, error="the contact no longer exists"))
        else:
            try:
                rendered.append(render_one(content, campaign, recipient_id, address, contact, links))
            except rendering.RenderError as exc:
                failed.append(Composed(recipient_id, error=f"render failed: {exc}"))
            except css_inline.InlineError as exc:
                failed.append(
                    Composed(
                        recipient_id, error=f"render failed: body_html: the CSS cannot be inlined: {exc}"
                    )
                )
    return rendered, failed


def trackable_urls(rendered: list[Rendered], campaign: CampaignLike) -> list[str]:
    """Every trackable link of the batch's HTML, each once: what the campaign's link table must hold."""
    if not campaign.track_clicks:
        return []
    urls: dict[str, None] = {}
    for message in rendered:
        if message.html:
            urls.update(dict.fromkeys(tracking_urls.extract_links(message.html)))
    return list(urls)


def track(message: Rendered, campaign: CampaignLike, link_ids: Mapping[str, int], links: Links) -> None:
    """Rewrite the message's links to click-tracking URLs and add the open pixel, as the campaign asks."""
    if message.html is None:
        return
    if campaign.track_clicks and link_ids:
        message.html = tracking_urls.rewrite_links(
            message.html,
            link_ids,
            base_url=links.base_url,
            secret=links.secret,
            recipient_id=message.recipient_id,
        )
    if campaign.track_opens:
        message.html = tracking_urls.add_open_pixel(
            message.html, tracking_urls.open_url(links.base_url, links.secret, message.recipient_id)
        )


def build_message(
    message: Rendered,
    campaign: CampaignLike,
    sender: Sender | None,
    links: Links,
    *,
    ref: str | None = None,
    subject_prefix: str = "",
    unsubscribe_url: str | None = None,
) -> OutgoingMessage:
    """The provider-ready message. Email gets List-Unsubscribe (the one-click URL and a mailto naming the
    recipient's unsubscribe token) and List-Unsubscribe-Post; the SMTP provider signs with DKIM when its
    account has a key. Raises ValueError for an address or header the message cannot carry."""
    ref = ref or str(message.recipient_id)
    if campaign.channel != "email":
        return OutgoingMessage(
            ref=ref,
            to=message.to,
            channel=campaign.channel,
            campaign_id=campaign.id,
            payload=TextPayload(text=message.text, fields=message.fields or {}),
        )
    assert sender is not None
    mailto_target = sender.reply_to or sender.from_address
    token = message.unsubscribe_token or tracking_urls.unsubscribe_token(links.secret, message.recipient_id)
    unsubscribe_url = unsubscribe_url or message.unsubscribe_url or tracking_urls.unsubscribe_url_of(links.base_url, token)
    raw = build_email(
        from_addr=sender.from_header,
        to_addr=message.to,
        subject=subject_prefix + message.subject,
        html=message.html,
        text=message.text,
        reply_to=sender.reply_to,
        list_unsubscribe_url=unsubscribe_url,
        list_unsubscribe_mailto=f"mailto:{mailto_target}?subject=unsubscribe%20{token}",
        message_id_domain=sender.domain,
    )
    payload = EmailPayload(
        raw=raw,
        envelope_from=sender.from_address,
        envelope_to=(message.to,),
        subject=subject_prefix + message.subject,
    )
    return OutgoingMessage(
        ref=ref,
        to=message.to,
        channel="email",
        campaign_id=campaign.id,
        payload=payload,
        metadata={"tenant_id": _id_text(campaign.tenant_id)},
    )


def compose_all(
    rendered: list[Rendered],
    campaign: CampaignLike,
    sender: Sender | None,
    links: Links,
    link_ids: Mapping[str, int],
) -> list[Composed]:
    """Track and build every rendered message; a message that cannot be built fails alone."""
    composed = []
    for message in rendered:
        track(message, campaign, link_ids, links)
        try:
            composed.append(Composed(message.recipient_id, build_message(message, campaign, sender, links)))
        except ValueError as exc:
            composed.append(Composed(message.recipient_id, error=f"cannot build the message: {exc}"))
    return composed
