from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

TELEGRAM_API = "https://api.telegram.org"
# BotFather's tokens: the bot's numeric id, a colon, 35 characters of base64url (checked loosely on length).
_BOT_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")
# Telegram's rules for setWebhook's secret_token.
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
# A bot's username: 5-32 characters of letters, digits and underscores, ending in "bot" (any case).
_BOT_USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,29}[Bb][Oo][Tt]$")
# Secret field → the shape its value must have, and the rule a value of another shape is told.
_SECRET_SHAPES = {
    "bot_token": (_BOT_TOKEN, "not a bot token as BotFather issues them (<bot id>:<secret>)"),
    "webhook_secret_token": (
        _SECRET_TOKEN, "1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule for secret_token)"),
}


class TelegramConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bot_token: SecretStr = Field(description="The token BotFather gave, e.g. 123456789:AAH…")
    bot_username: str | None = Field(default=None, description="The bot's @username without the @: deep links "
                                     "https://t.me/<bot_username>?start=… link chats to contacts")
    webhook_secret_token: SecretStr = Field(description="The secret_token given to setWebhook: Telegram sends it "
                                            "in X-Telegram-Bot-Api-Secret-Token on every update (1-256 of "
                                            "A-Z a-z 0-9 _ -)")
    api_base_url: str = Field(default=TELEGRAM_API, description="The Bot API's address (a sandbox in tests)")
    max_concurrency: int = Field(default=50, ge=1, le=1000, description="Requests in flight per send")
    timeout: float = Field(default=15.0, gt=0, le=120)

    @field_validator(*_SECRET_SHAPES)
    @classmethod
    def _secret_shape(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        shape, rule = _SECRET_SHAPES[info.field_name or ""]
        if not shape.match(value.get_secret_value()):
            raise ValueError(rule)
        return value

    @field_validator("bot_username")
    @classmethod
    def _username_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.removeprefix("@")
        if not _BOT_USERNAME.match(value):
            raise ValueError("a bot username is 5-32 letters, digits or _ and ends in 'bot'")
        return value

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("an http(s) URL")
        return value.rstrip("/")
