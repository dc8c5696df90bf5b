"""Channel accounts over the API (both databases): validation by the provider's schema, write-only encrypted
secrets, one default per channel, tenant isolation, checks, and resolving the account a send goes through."""

from __future__ import annotations

import uuid

import httpx
import pytest

from clarion.config import Settings
from clarion.db import Database
from clarion.delivery import channel_service
from clarion.delivery.channels.base import ProviderContext
from clarion.delivery.channels.outbox import OutboxConfig, OutboxProvider
from clarion.delivery.channels.smtp import SmtpProvider
from clarion.delivery.outbox_service import DatabaseOutboxIndex
from clarion.errors import Conflict, Invalid, NotFound
from clarion.models.delivery import ChannelConfig
from tests.conftest import make_tenant
from tests.delivery.smtp_server import RecordingHandler, smtp_server, unused_port

PASSWORD = "correct-horse-battery-staple"


def smtp_body(name: str = "Mail relay", **config: object) -> dict:
    return {"channel": "email", "provider": "smtp", "name": name, "from_email": "news@shop.example",
            "config": {"host": "mail.example.com", "port": 587, "username": "mailer", "password": PASSWORD,
                       **config}}


async def resolve(db: Database, settings: Settings, tenant_id: uuid.UUID, channel: str = "email",
                  channel_config_id: uuid.UUID | None = None) -> channel_service.ResolvedChannel:
    async with db.transaction() as session:
        return await channel_service.resolve_channel(session, tenant_id, channel, channel_config_id,
                                                     secret=settings.secret_key or "", data_dir=settings.data_dir)


async def test_secrets_are_stored_encrypted_and_shown_masked(api: httpx.AsyncClient, db: Database) -> None:
    created = await api.post("/api/v1/channels", json=smtp_body())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["config"]["password"] == "••••" + PASSWORD[-4:]
    assert body["config"]["host"] == "mail.example.com" and body["config"]["username"] == "mailer"
    assert body["is_default"] is True  # the first email account becomes the default
    assert PASSWORD not in created.text

    async with db.transaction() as session:
        stored = await session.get(ChannelConfig, uuid.UUID(body["id"]))
        assert stored is not None
        assert stored.config["password"].startswith("v1:") and PASSWORD not in str(stored.config)

    listed = await api.get("/api/v1/channels")
    assert [item["id"] for item in listed.json()["items"]] == [body["id"]]
    assert PASSWORD not in listed.text and PASSWORD not in (await api.get(f"/api/v1/channels/{body['id']}")).text


@pytest.mark.parametrize(("body", "loc"), [
    (smtp_body(port=70000), ["body", "config", "port"]),
    (smtp_body(security="ssl"), ["body", "config", "security"]),
    (smtp_body(password=None), ["body", "config", "password"]),
    ({**smtp_body(), "provider": "carrier-pigeon"}, ["body", "provider"]),
    ({**smtp_body(), "channel": "sms"}, ["body", "provider"]),
    ({"channel": "email", "provider": "outbox", "name": "o", "config": {"data_dir": "/etc"}}, ["body", "config"]),
    ({**smtp_body(), "rate_limit_per_second": 0}, ["body", "rate_limit_per_second"]),
    ({**smtp_body(), "currency": "usd"}, ["body", "currency"]),
])
async def test_bad_input_is_a_422_naming_the_field(api: httpx.AsyncClient, body: dict, loc: list) -> None:
    response = await api.post("/api/v1/channels", json=body)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["errors"]]
    assert (await api.get("/api/v1/channels")).json()["items"] == []


async def test_a_patch_keeps_secrets_it_omits_or_sends_back_masked(api: httpx.AsyncClient, db: Database,
                                                                   settings: Settings) -> None:
    channel = (await api.post("/api/v1/channels", json=smtp_body())).json()
    url = f"/api/v1/channels/{channel['id']}"

    omitted = await api.patch(url, json={"config": {"port": 2525}})
    assert omitted.status_code == 200, omitted.text
    assert omitted.json()["config"]["port"] == 2525 and omitted.json()["config"]["host"] == "mail.example.com"
    echoed = await api.patch(url, json={"config": omitted.json()["config"] | {"host": "smtp.example.net"}})
    assert echoed.status_code == 200, echoed.text

    resolved = await resolve(db, settings, api.tenant.id)  # type: ignore[attr-defined]
    assert resolved.config.password.get_secret_value() == PASSWORD  # type: ignore[attr-defined]
    assert (resolved.config.host, resolved.config.port) == ("smtp.example.net", 2525)  # type: ignore[attr-defined]

    assert (await api.patch(url, json={"config": {"password": "a-brand-new-password"}})).status_code == 200
    resolved = await resolve(db, settings, api.tenant.id)  # type: ignore[attr-defined]
    assert resolved.config.password.get_secret_value() == "a-brand-new-password"  # type: ignore[attr-defined]

    bad = await api.patch(url, json={"config": {"port": 0}})
    assert bad.status_code == 422 and ["body", "config", "port"] in [e["loc"] for e in bad.json()["errors"]]
    assert (await api.patch(url, json={"name": None})).status_code == 422


async def test_a_tenant_has_at_most_one_default_per_channel(api: httpx.AsyncClient) -> None:
    first = (await api.post("/api/v1/channels", json=smtp_body("first"))).json()
    second = await api.post("/api/v1/channels", json=smtp_body("second") | {"is_default": True})
    assert second.status_code == 201
    third = (await api.post("/api/v1/channels", json=smtp_body("third"))).json()
    assert third["is_default"] is False  # a default exists already

    async def defaults() -> list[str]:
        items = (await api.get("/api/v1/channels", params={"channel": "email"})).json()["items"]
        return [item["name"] for item in items if item["is_default"]]

    assert await defaults() == ["second"]
    assert (await api.patch(f"/api/v1/channels/{first['id']}", json={"is_default": True})).status_code == 200
    assert await defaults() == ["first"]

    duplicate = await api.post("/api/v1/channels", json=smtp_body("first"))
    assert duplicate.status_code == 409 and duplicate.json()["errors"][0]["loc"] == ["body", "name"]


async def test_another_tenants_channel_is_a_404(api: httpx.AsyncClient, db: Database, settings: Settings) -> None:
    other = await make_tenant(db, "Other")
    theirs = (await api.post("/api/v1/channels", json=smtp_body(), headers=other.headers)).json()
    url = f"/api/v1/channels/{theirs['id']}"
    assert (await api.get(url)).status_code == 404
    assert (await api.patch(url, json={"enabled": False})).status_code == 404
    assert (await api.delete(url)).status_code == 404
    assert (await api.post(f"{url}/check")).status_code == 404
    assert (await api.get("/api/v1/channels")).json()["items"] == []
    with pytest.raises(NotFound):
        await resolve(db, settings, api.tenant.id, channel_config_id=uuid.UUID(theirs["id"]))  # type: ignore[attr-defined]
    assert (await api.get(url, headers=other.headers)).json()["enabled"] is True


async def test_a_read_only_key_lists_but_cannot_change(api: httpx.AsyncClient) -> None:
    read_headers = api.tenant.read_headers  # type: ignore[attr-defined]
    assert (await api.post("/api/v1/channels", json=smtp_body(), headers=read_headers)).status_code == 403
    assert (await api.get("/api/v1/channels", headers=read_headers)).status_code == 200


async def test_check_tries_the_real_server_and_reports_its_failure(api: httpx.AsyncClient) -> None:
    with smtp_server(RecordingHandler()) as server:
        live = (await api.post("/api/v1/channels", json={
            "channel": "email", "provider": "smtp", "name": "local",
            "config": {"host": "127.0.0.1", "port": server.port, "security": "none"}})).json()
        ok = await api.post(f"/api/v1/channels/{live['id']}/check")
    assert ok.status_code == 200 and ok.json() == {"ok": True, "provider": "smtp"}

    dead = (await api.post("/api/v1/channels", json={
        "channel": "email", "provider": "smtp", "name": "dead",
        "config": {"host": "127.0.0.1", "port": unused_port(), "security": "none", "timeout": 2}})).json()
    failed = await api.post(f"/api/v1/channels/{dead['id']}/check")
    assert failed.status_code == 422
    assert failed.json()["code"] == "channel_check_failed" and "SMTP check failed" in failed.json()["detail"]


async def test_email_without_an_enabled_account_goes_to_the_outbox(api: httpx.AsyncClient, db: Database,
                                                                  settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    fallback = await resolve(db, settings, tenant_id)
    assert (fallback.provider, fallback.channel_config_id) == ("outbox", None)
    assert fallback.config == OutboxConfig(data_dir=settings.data_dir, tenant_id=tenant_id)
    assert fallback.throttle_key == f"outbox:{tenant_id}"
    provider = channel_service.build_provider(fallback, context=ProviderContext(outbox_index=DatabaseOutboxIndex(db)))
    assert isinstance(provider, OutboxProvider)

    channel = (await api.post("/api/v1/channels", json=smtp_body() | {
        "rate_limit_per_second": 14, "cost_per_message": 3, "currency": "EUR"})).json()
    resolved = await resolve(db, settings, tenant_id)
    assert resolved.channel_config_id == uuid.UUID(channel["id"]) and resolved.provider == "smtp"
    assert (resolved.rate_limit_per_second, resolved.cost_per_message, resolved.currency) == (14, 3, "EUR")
    assert resolved.from_email == "news@shop.example"
    assert resolved.throttle_key == f"channel:{channel['id']}"
    assert isinstance(channel_service.build_provider(resolved), SmtpProvider)

    await api.patch(f"/api/v1/channels/{channel['id']}", json={"enabled": False})
    assert (await resolve(db, settings, tenant_id)).provider == "outbox"
    with pytest.raises(Conflict) as disabled:
        await resolve(db, settings, tenant_id, channel_config_id=uuid.UUID(channel["id"]))
    assert disabled.value.code == "channel_disabled"

    assert (await api.delete(f"/api/v1/channels/{channel['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/channels/{channel['id']}")).status_code == 404


async def test_other_channels_need_an_account_and_a_named_account_must_fit(api: httpx.AsyncClient, db: Database,
                                                                          settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    with pytest.raises(Conflict) as missing:
        await resolve(db, settings, tenant_id, "sms")
    assert missing.value.code == "channel_not_configured" and "sms" in missing.value.message

    email = (await api.post("/api/v1/channels", json=smtp_body())).json()
    with pytest.raises(Invalid) as wrong:
        await resolve(db, settings, tenant_id, "sms", uuid.UUID(email["id"]))
    assert wrong.value.errors and wrong.value.errors[0]["loc"] == ["channel_config_id"]


async def test_an_explicit_outbox_account_is_built_by_the_server(api: httpx.AsyncClient, db: Database,
                                                                 settings: Settings) -> None:
    await api.post("/api/v1/channels", json=smtp_body())
    outbox = await api.post("/api/v1/channels", json={"channel": "email", "provider": "outbox", "name": "Staging",
                                                      "is_default": True})
    assert outbox.status_code == 201 and outbox.json()["config"] == {}
    resolved = await resolve(db, settings, api.tenant.id)  # type: ignore[attr-defined]
    assert resolved.provider == "outbox" and resolved.channel_config_id == uuid.UUID(outbox.json()["id"])
    assert resolved.config == OutboxConfig(data_dir=settings.data_dir, tenant_id=api.tenant.id)  # type: ignore[attr-defined]
