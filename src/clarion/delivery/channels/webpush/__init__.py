"""The Web Push channel (RFC 8030 / 8291 / 8292)."""

from clarion.delivery.channels.webpush.config import WebPushConfig
from clarion.delivery.channels.webpush.keys import generate_vapid_keys
from clarion.delivery.channels.webpush.provider import WebPushProvider

__all__ = ["WebPushConfig", "WebPushProvider", "generate_vapid_keys"]
