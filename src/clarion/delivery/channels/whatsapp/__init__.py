"""The WhatsApp channel: Meta's WhatsApp Business Cloud API."""

from clarion.delivery.channels.whatsapp.config import WhatsAppConfig
from clarion.delivery.channels.whatsapp.provider import WhatsAppProvider

__all__ = ["WhatsAppConfig", "WhatsAppProvider"]
