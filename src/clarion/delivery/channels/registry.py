"""Provider slug → provider class, and building a provider from stored or submitted config."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from clarion.delivery.channels.base import ChannelProvider, ProviderContext
from clarion.delivery.channels.outbox import OutboxProvider
from clarion.delivery.channels.smtp import SmtpProvider
from clarion.delivery.channels.telegram import TelegramProvider
from clarion.delivery.channels.twilio import TwilioProvider
from clarion.delivery.channels.webpush import WebPushProvider
from clarion.delivery.channels.whatsapp import WhatsAppProvider
from clarion.errors import Invalid, field_error

_PROVIDERS: dict[str, type[ChannelProvider[Any]]] = {}


def register(provider: type[ChannelProvider[Any]]) -> type[ChannelProvider[Any]]:
    """Usable as a class decorator; a slug is registered once."""
    existing = _PROVIDERS.get(provider.slug)
    if existing is not None and existing is not provider:
        raise ValueError(f"channel provider slug {provider.slug!r} is already taken by {existing.__name__}")
    _PROVIDERS[provider.slug] = provider
    return provider


for _builtin in (SmtpProvider, OutboxProvider, WhatsAppProvider, TwilioProvider, TelegramProvider,
                 WebPushProvider):
    register(_builtin)


def slugs() -> list[str]:
    return sorted(_PROVIDERS)


def provider_class(slug: str) -> type[ChannelProvider[Any]]:
    try:
        return _PROVIDERS[slug]
    except KeyError:
        raise Invalid(f"unknown channel provider {slug!r}; known: {', '.join(slugs())}",
                      errors=[field_error(["provider"], f"must be one of: {', '.join(slugs())}")]) from None


def validate_config(slug: str, config: dict[str, Any]) -> Any:
    """The provider's config model for `config`, or Invalid (422) naming each bad field under `config`."""
    schema = provider_class(slug).config_schema
    try:
        return schema.model_validate(config)
    except ValidationError as exc:
        errors = [field_error(["config", *err["loc"]], err["msg"], err["type"]) for err in exc.errors()]
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Invalid(f"{where}: {first['msg']}", errors=errors) from None


def build_provider(slug: str, config: dict[str, Any], *,
                   context: ProviderContext | None = None) -> ChannelProvider[Any]:
    return provider_class(slug)(validate_config(slug, config), context)
