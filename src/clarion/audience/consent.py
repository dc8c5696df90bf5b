"""Consent per channel, as stored: a contact_subscriptions row where consent was set, else the contact's default.

A contact is created subscribed to the channels of the addresses it was created with (email → email; phone → sms
and whatsapp). That default is not a row but a bit per channel in `Contact.default_subscribed_channels`, dated by
the contact's `created_at` and sourced by its `created_via`: creating a contact, above all by import, writes no
subscription rows. The first change on a channel writes its row, and from then on the row alone decides.

The rule lives twice, once in Python for a loaded contact (here) and once in SQL (audience.repository); the tests
hold the two to the same answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clarion.models.audience import CHANNEL_BITS

# Which channels an address makes reachable, and so which channels a new contact is subscribed to by default.
CHANNELS_OF_ADDRESS: Mapping[str, tuple[str, ...]] = {"email": ("email",), "phone": ("sms", "whatsapp")}


@dataclass(frozen=True, slots=True)
class ChannelConsent:
    """One channel's consent as the API shows it (a stored row, or the contact's default)."""

    channel: str
    status: str
    changed_at: datetime
    source: str


def channel_bits(channels: Iterable[str]) -> int:
    bits = 0
    for channel in channels:
        bits |= CHANNEL_BITS[channel]
    return bits


def default_bits(addresses: Iterable[str]) -> int:
    """The default-subscription bits of a new contact that has these addresses ("email", "phone")."""
    return channel_bits(channel for address in addresses for channel in CHANNELS_OF_ADDRESS.get(address, ()))


def default_bits_of(email: str | None, phone: str | None) -> int:
    """The default-subscription bits of a new contact created with this email and phone (either may be None)."""
    return _BITS_BY_PRESENCE[email is not None, phone is not None]


def is_default_channel(contact: Any, channel: str) -> bool:
    return bool((contact.default_subscribed_channels or 0) & CHANNEL_BITS[channel])


def consents(contact: Any) -> dict[str, ChannelConsent]:
    """Channel → consent of a loaded contact: its rows, and its default channels that have no row."""
    found = {row.channel: ChannelConsent(row.channel, row.status, row.changed_at, row.source)
             for row in contact.subscriptions}
    for channel in CHANNEL_BITS:
        if channel not in found and is_default_channel(contact, channel):
            found[channel] = ChannelConsent(channel, "subscribed", contact.created_at, contact.created_via)
    # A stable order, whichever way each channel is stored: CHANNELS order.
    return {channel: found[channel] for channel in CHANNEL_BITS if channel in found} | found


def status_on(contact: Any, channel: str) -> str | None:
    """A loaded contact's consent status on `channel`; None when it has none there."""
    consent = consents(contact).get(channel)
    return consent.status if consent is not None else None


_BITS_BY_PRESENCE = {(has_email, has_phone): default_bits(address for address, present in
                                                        (("email", has_email), ("phone", has_phone)) if present)
                     for has_email in (False, True) for has_phone in (False, True)}
