"""Channel accounts: a tenant's providers per channel (CRUD with write-only, encrypted secrets), and resolving
which account a send goes through — the entry point of the dispatcher.

Secrets: the config is validated by the provider's Pydantic schema, then every SecretStr field is encrypted
with a key derived from the install secret (kit.crypto) before it is stored; responses show them masked.
The install secret is passed in by the caller (the edge has it on app.state, the worker in its settings).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.delivery import channel_repository
from clarion.delivery.channel_repository import ChannelConfigRepo
from clarion.delivery.channel_schemas import ChannelCheck, ChannelCreate, ChannelRead, ChannelUpdate
from clarion.delivery.channels import registry
from clarion.delivery.channels.base import ChannelProvider, ProviderContext
from clarion.delivery.channels.outbox import OutboxConfig
from clarion.delivery.outbox_service import SessionOutboxIndex
from clarion.errors import Conflict, Invalid, field_error
from clarion.kit.crypto import MASK, DecryptionError, SecretBox, decrypt_config, encrypt_config, mask_config
from clarion.kit.ids import new_id
from clarion.kit.pagination import PageRows
from clarion.kit.repository import conflict_on_violation
from clarion.models.delivery import ChannelConfig

logger = logging.getLogger("clarion.delivery.channels")

OUTBOX = "outbox"
# Providers whose config the server builds (the outbox's folder is the install's data directory): an account
# of theirs stores no config, and a user-given one is refused — a path from the API must never reach the disk.
SERVER_MANAGED = frozenset({OUTBOX})


@dataclass(frozen=True, slots=True)
class ResolvedChannel:
    """The account a send goes through, ready to build a provider from. Holds decrypted secrets: keep it in
    memory for the send, never log or store it."""

    tenant_id: uuid.UUID
    channel: str
    provider: str  # the slug
    config: BaseModel  # the provider's validated config model, secrets decrypted
    # None for the built-in outbox a tenant without an email account sends through.
    channel_config_id: uuid.UUID | None = None
    from_email: str | None = None
    reply_to: str | None = None
    # Messages per second across all workers (delivery.throttle); None: no limit.
    rate_limit_per_second: float | None = None
    cost_per_message: int = 0  # minor units
    currency: str = "USD"

    @property
    def throttle_key(self) -> str:
        """The rate bucket of this account: every worker sending through it shares this key."""
        if self.channel_config_id is None:
            return f"outbox:{self.tenant_id}"
        return f"channel:{self.channel_config_id}"


def _under_body(exc: Invalid) -> Invalid:
    """Registry errors name fields relative to the config document; the API names them from the body."""
    errors = [{**err, "loc": ["body", *err["loc"]]} for err in exc.errors or []]
    return Invalid(exc.message, errors=errors)


def _provider_for(slug: str, channel: str) -> type[ChannelProvider[Any]]:
    try:
        cls = registry.provider_class(slug)
    except Invalid as exc:
        raise _under_body(exc) from None
    if cls.channel != channel:
        raise Invalid(f"provider {slug!r} sends {cls.channel}, not {channel}",
                      errors=[field_error(["body", "provider"], f"a {cls.channel} provider; {channel} needs one "
                                          f"of: {', '.join(_slugs_for(channel)) or 'none yet'}")])
    return cls


def _slugs_for(channel: str) -> list[str]:
    return [slug for slug in registry.slugs() if registry.provider_class(slug).channel == channel]


def _validated(slug: str, config: dict[str, Any]) -> BaseModel | None:
    """The provider's config model for `config`; None for server-managed providers, which take none."""
    if slug in SERVER_MANAGED:
        if config:
            raise Invalid(f"the {slug} provider is configured by the server; send an empty config",
                          errors=[field_error(["body", "config"], "must be empty for this provider")])
        return None
    try:
        return registry.validate_config(slug, config)
    except Invalid as exc:
        raise _under_body(exc) from None


def _webhook_account(slug: str, model: BaseModel | None) -> str | None:
    """What the provider's webhook calls name this account by (stored in the clear beside the encrypted config)."""
    return None if model is None else registry.provider_class(slug).webhook_account(model)


def _reveal(value: Any) -> Any:
    """A config model as plain data with its secrets in clear, to merge a partial update into."""
    if isinstance(value, BaseModel):
        return {name: _reveal(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def _merge(current: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(current)
    for key, value in patch.items():
        old = current.get(key)
        if isinstance(value, str) and value.startswith(MASK) and isinstance(old, str):
            continue  # a masked secret sent back as it was shown: keep the stored one
        merged[key] = _merge(old, value) if isinstance(value, dict) and isinstance(old, dict) else value
    return merged


def _stored_model(row: ChannelConfig, box: SecretBox) -> BaseModel:
    """Raises DecryptionError or ValidationError when the stored config no longer reads back."""
    return decrypt_config(registry.provider_class(row.provider).config_schema, row.config, box)


def view(row: ChannelConfig, *, secret: str) -> ChannelRead:
    """The API's view of an account: secrets masked. Never fails on unreadable secrets (an install secret
    changed since they were stored): the account is still listed, with the reason."""
    config: dict[str, Any] | None = {}
    config_error = None
    if row.provider not in SERVER_MANAGED:
        try:
            config = mask_config(_stored_model(row, SecretBox(secret)))
        except (DecryptionError, ValidationError) as exc:
            config = None
            config_error = f"the stored config no longer reads back ({type(exc).__name__}); send it again"
    return ChannelRead(id=row.id, channel=row.channel, provider=row.provider, name=row.name,  # type: ignore[arg-type]
                       config=config, config_error=config_error, enabled=row.enabled, is_default=row.is_default,
                       from_email=row.from_email, reply_to=row.reply_to,
                       rate_limit_per_second=row.rate_limit_per_second, cost_per_message=row.cost_per_message,
                       currency=row.currency, created_at=row.created_at, updated_at=row.updated_at)


async def _check_name(repo: ChannelConfigRepo, name: str, except_id: uuid.UUID | None = None) -> None:
    if await repo.name_taken(name, except_id=except_id):
        raise Conflict(f"a channel named {name!r} already exists",
                       errors=[field_error(["body", "name"], "already taken")])


async def _flush(session: AsyncSession) -> None:
    # Only a concurrent request can violate a constraint here (the checks above ran first): a 409, not a 500.
    async with conflict_on_violation(session, "another request changed this tenant's channels at the same "
                                     "time; retry"):
        await session.flush()


async def create_channel(session: AsyncSession, tenant_id: uuid.UUID, data: ChannelCreate, *,
                         secret: str) -> ChannelConfig:
    _provider_for(data.provider, data.channel)
    model = _validated(data.provider, data.config)
    repo = ChannelConfigRepo(session, tenant_id)
    await _check_name(repo, data.name)
    is_default = data.is_default
    if "is_default" not in data.model_fields_set and not await repo.has_default(data.channel):
        is_default = True  # the first account of a channel is the one it uses
    row = ChannelConfig(
        id=new_id(), channel=data.channel, provider=data.provider, name=data.name,
        config={} if model is None else encrypt_config(model, SecretBox(secret)),
        webhook_account=_webhook_account(data.provider, model),
        enabled=data.enabled, is_default=is_default, from_email=data.from_email, reply_to=data.reply_to,
        rate_limit_per_second=data.rate_limit_per_second, cost_per_message=data.cost_per_message,
        currency=data.currency,
    )
    if is_default:
        await repo.clear_default(data.channel, except_id=row.id)
    repo.add(row)
    await _flush(session)
    return row


async def list_channels(session: AsyncSession, tenant_id: uuid.UUID, *, channel: str | None = None,
                        enabled: bool | None = None, limit: int = 50,
                        cursor: str | None = None) -> PageRows[ChannelConfig]:
    return await ChannelConfigRepo(session, tenant_id).page(channel=channel, enabled=enabled, limit=limit,
                                                            cursor=cursor)


async def get_channel(session: AsyncSession, tenant_id: uuid.UUID, channel_id: uuid.UUID) -> ChannelConfig:
    return await ChannelConfigRepo(session, tenant_id).get(channel_id)


async def update_channel(session: AsyncSession, tenant_id: uuid.UUID, channel_id: uuid.UUID,
                         data: ChannelUpdate, *, secret: str) -> ChannelConfig:
    repo = ChannelConfigRepo(session, tenant_id)
    row = await repo.get(channel_id, for_update=True)
    given = data.model_fields_set
    for required in ("provider", "name", "config", "enabled", "is_default", "cost_per_message", "currency"):
        if required in given and getattr(data, required) is None:
            raise Invalid(f"{required} cannot be null", errors=[field_error(["body", required], "cannot be null")])

    if "provider" in given or "config" in given:
        box = SecretBox(secret)
        slug = data.provider if data.provider is not None else row.provider
        _provider_for(slug, row.channel)
        patch = data.config or {}
        if slug == row.provider and slug not in SERVER_MANAGED:
            try:
                current = _reveal(_stored_model(row, box))
            except (DecryptionError, ValidationError):
                current = {}  # unreadable: the patch must carry the whole config, and validation says so
            patch = _merge(current, patch)
        model = _validated(slug, patch)
        row.provider = slug
        row.config = {} if model is None else encrypt_config(model, box)
        row.webhook_account = _webhook_account(slug, model)

    if data.name is not None and data.name != row.name:
        await _check_name(repo, data.name, except_id=row.id)
        row.name = data.name
    for field in ("enabled", "from_email", "reply_to", "rate_limit_per_second", "cost_per_message", "currency"):
        if field in given:
            setattr(row, field, getattr(data, field))
    if data.is_default is not None:
        if data.is_default and not row.is_default:
            await repo.clear_default(row.channel, except_id=row.id)
        row.is_default = data.is_default
    await _flush(session)
    return row


async def delete_channel(session: AsyncSession, tenant_id: uuid.UUID, channel_id: uuid.UUID) -> None:
    """Sends that named no account move to the next enabled one (or, for email, the outbox).
    NOTE for the campaign domain: campaigns do not reference channel accounts yet. When they do, give the
    column ON DELETE SET NULL (the campaign then falls back to the channel's default), or refuse the delete
    here with a Conflict while an unfinished campaign names the account. The account's rate bucket row is
    left behind on purpose: it is keyed by a uuid that is never reused, and a few bytes."""
    repo = ChannelConfigRepo(session, tenant_id)
    await repo.remove(await repo.get(channel_id))
    await session.flush()


def _outbox(tenant_id: uuid.UUID, data_dir: Path, row: ChannelConfig | None = None) -> ResolvedChannel:
    config = OutboxConfig(data_dir=data_dir, tenant_id=tenant_id)
    if row is None:
        return ResolvedChannel(tenant_id=tenant_id, channel="email", provider=OUTBOX, config=config)
    return _resolved(row, config)


def _resolved(row: ChannelConfig, config: BaseModel) -> ResolvedChannel:
    rate = row.rate_limit_per_second
    if rate is None:
        # A provider may declare the limit its service enforces (WhatsApp 80/s); none declared means no limit.
        rate = registry.provider_class(row.provider).default_rate_limit_per_second
    return ResolvedChannel(tenant_id=row.tenant_id, channel=row.channel, provider=row.provider, config=config,
                           channel_config_id=row.id, from_email=row.from_email, reply_to=row.reply_to,
                           rate_limit_per_second=rate, cost_per_message=row.cost_per_message,
                           currency=row.currency)


def _resolve_row(row: ChannelConfig, *, secret: str, data_dir: Path) -> ResolvedChannel:
    if row.provider in SERVER_MANAGED:
        return _outbox(row.tenant_id, data_dir, row)
    try:
        config = _stored_model(row, SecretBox(secret))
    except (DecryptionError, ValidationError) as exc:
        raise Conflict(f"the {row.channel} channel {row.name!r} has a stored config that no longer reads back "
                       f"(install secret changed?); send its config again", code="channel_config_unreadable") \
            from exc
    return _resolved(row, config)


async def resolve_channel(session: AsyncSession, tenant_id: uuid.UUID, channel: str,
                          channel_config_id: uuid.UUID | None = None, *, secret: str,
                          data_dir: Path) -> ResolvedChannel:
    """The account a send on `channel` goes through, for the dispatcher.

    - `channel_config_id` given: that account of this tenant (another tenant's → NotFound); it must be of
      `channel` (else Invalid on channel_config_id) and enabled (else Conflict, code channel_disabled).
    - not given: the tenant's enabled default account of `channel`, else its oldest enabled one; with none,
      email goes through the built-in outbox (channel_config_id None, provider "outbox", an OutboxConfig
      under `data_dir`), and any other channel is a Conflict (409, code channel_not_configured) naming it.
    `secret` is the install secret (CLARION_SECRET_KEY) the configs were encrypted with."""
    repo = ChannelConfigRepo(session, tenant_id)
    if channel_config_id is not None:
        row = await repo.get(channel_config_id)
        if row.channel != channel:
            raise Invalid(f"channel {row.name!r} is a {row.channel} channel, not {channel}",
                          errors=[field_error(["channel_config_id"], f"a {row.channel} channel, not {channel}")])
        if not row.enabled:
            raise Conflict(f"the {channel} channel {row.name!r} is disabled", code="channel_disabled")
        return _resolve_row(row, secret=secret, data_dir=data_dir)
    row = await repo.usable_for(channel)
    if row is not None:
        return _resolve_row(row, secret=secret, data_dir=data_dir)
    if channel == "email":
        return _outbox(tenant_id, data_dir)
    raise Conflict(f"no enabled {channel} channel is configured; add one with POST /api/v1/channels",
                   code="channel_not_configured")


def webhook_providers(webhook_name: str) -> list[type[ChannelProvider[Any]]]:
    """The provider classes that receive calls at /webhooks/<webhook_name>; empty for a name nobody uses."""
    return [cls for cls in map(registry.provider_class, registry.slugs()) if cls.webhook_name == webhook_name]


async def webhook_candidates(session: AsyncSession, webhook_name: str, accounts: list[str] | None, *,
                             secret: str) -> list[ResolvedChannel]:
    """The enabled accounts, across tenants, that a call to /webhooks/<webhook_name> naming `accounts` may be for
    (None: all of them), ready to verify the call against. Accounts whose stored config no longer reads back are
    left out (and logged): they cannot verify anything."""
    slugs = [cls.slug for cls in webhook_providers(webhook_name)]
    candidates = []
    for row in await channel_repository.enabled_accounts_for_webhook(session, slugs, accounts):
        try:
            candidates.append(_resolved(row, _stored_model(row, SecretBox(secret))))
        except (DecryptionError, ValidationError) as exc:
            logger.warning("webhooks: channel %s (%s) has an unreadable config (%s); it cannot verify calls",
                           row.id, row.provider, type(exc).__name__)
    return candidates


async def telegram_bot_username(session: AsyncSession, tenant_id: uuid.UUID, *, secret: str,
                                data_dir: Path) -> str | None:
    """The username of the bot the tenant's Telegram sends go through (for /start deep links); None when it has
    no usable Telegram channel or the channel names no bot_username."""
    try:
        resolved = await resolve_channel(session, tenant_id, "telegram", secret=secret, data_dir=data_dir)
    except Conflict:
        return None
    return getattr(resolved.config, "bot_username", None)


def build_provider(resolved: ResolvedChannel, *, context: ProviderContext | None = None) -> ChannelProvider[Any]:
    """The provider for a resolved account. The outbox needs `context.outbox_index`
    (outbox_service.DatabaseOutboxIndex or SessionOutboxIndex). Close it after use (`async with`)."""
    return registry.provider_class(resolved.provider)(resolved.config, context)


async def check_channel(session: AsyncSession, tenant_id: uuid.UUID, channel_id: uuid.UUID, *, secret: str,
                        data_dir: Path, public_base_url: str | None = None) -> ChannelCheck:
    """Try the account's settings against the real service (a disabled account too). A failure is the
    provider's ChannelCheckFailed: 422 with its message."""
    row = await ChannelConfigRepo(session, tenant_id).get(channel_id)
    resolved = _resolve_row(row, secret=secret, data_dir=data_dir)
    context = ProviderContext(outbox_index=SessionOutboxIndex(session), public_base_url=public_base_url)
    async with build_provider(resolved, context=context) as p:
        await p.check()
    return ChannelCheck(ok=True, provider=row.provider)
