"""The Telegram channel (Bot API)."""

from clarion.delivery.channels.telegram.config import TelegramConfig
from clarion.delivery.channels.telegram.provider import TelegramProvider, secret_token_digest

__all__ = ["TelegramConfig", "TelegramProvider", "secret_token_digest"]
