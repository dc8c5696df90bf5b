"""`clarion demo`: a demo tenant with realistic data, seeded through the public API exactly as a user would."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from clarion.config import Settings
from clarion.db import Database
from clarion.kit.clock import utcnow
from clarion.sandbox import builtin as sandboxes
from clarion.tenancy import service as tenancy
from clarion.tenancy.schemas import ApiKeyCreate

DEMO_MARKER = "demo_tenant.json"
FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Hedy", "Tim", "Katherine",
         "John", "Frances", "Edsger", "Radia", "Donald", "Sophie", "Mateo", "Yuki", "Amara", "Lena", "Omar"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Lamarr",
        "Berners-Lee", "Johnson", "Backus", "Allen", "Dijkstra", "Perlman", "Knuth", "Müller", "García", "Tanaka"]
CITIES = [("New York", "America/New_York", "en-US"), ("Berlin", "Europe/Berlin", "de-DE"),
          ("London", "Europe/London", "en-GB"), ("Tokyo", "Asia/Tokyo", "ja-JP"),
          ("São Paulo", "America/Sao_Paulo", "pt-BR"), ("Dubai", "Asia/Dubai", "ar-AE")]
TAGS = ["fashion", "accessories", "electronics", "home", "sports", "beauty", "newsletter"]
TIERS = ["premium", "standard", "standard", "basic"]


@dataclass
class DemoTenant:
    tenant_id: uuid.UUID
    api_key: str
    seeded: bool
    sending_campaign_id: str | None = None
    # Sending through the built-in WhatsApp and Twilio sandboxes: their statuses arrive by webhook.
    whatsapp_campaign_id: str | None = None
    sms_campaign_id: str | None = None


def contacts_csv(count: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["email", "phone", "first_name", "last_name", "locale", "timezone", "tags",
                     "customer_tier", "city", "lifetime_value"])
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, tz, locale = rng.choice(CITIES)
        # Every third contact also has a (fictional, valid-format) US phone for the SMS and WhatsApp demos.
        phone = f"+1202555{i:04d}" if i % 3 == 0 and i < 10000 else ""
        tags = ";".join(sorted(rng.sample(TAGS, rng.randint(0, 3))))
        writer.writerow([f"{first}.{last}.{i}@example.com".lower().replace("ü", "ue"), phone, first, last, locale,
                         tz, tags, rng.choice(TIERS), city, rng.randint(0, 250_000)])
    return out.getvalue()


async def ensure_demo_tenant(settings: Settings, db: Database) -> DemoTenant:
    """Reuse the demo tenant of an earlier run (with a fresh key: keys are shown once), else create it."""
    marker = settings.data_dir / DEMO_MARKER
    async with db.transaction() as session:
        if marker.exists():
            saved = json.loads(marker.read_text())
            tenant_id = uuid.UUID(saved["tenant_id"])
            try:
                await tenancy.get_tenant(session, tenant_id)
                _, key = await tenancy.create_api_key(session, tenant_id, ApiKeyCreate(name="demo"))
                return DemoTenant(tenant_id, key, seeded=True, sending_campaign_id=saved.get("sending_campaign_id"),
                                  whatsapp_campaign_id=saved.get("whatsapp_campaign_id"),
                                  sms_campaign_id=saved.get("sms_campaign_id"))
            except Exception:  # noqa: BLE001, S110 - the database was reset: seed a new tenant
                pass
        tenant = await tenancy.create_tenant(session, "Demo Shop", plan="business", default_region="US")
        _, key = await tenancy.create_api_key(session, tenant.id, ApiKeyCreate(name="demo"))
    return DemoTenant(tenant.id, key, seeded=False)


def remember_demo(settings: Settings, demo: DemoTenant) -> None:
    marker = settings.data_dir / DEMO_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"tenant_id": str(demo.tenant_id), "sending_campaign_id": demo.sending_campaign_id,
                                  "whatsapp_campaign_id": demo.whatsapp_campaign_id,
                                  "sms_campaign_id": demo.sms_campaign_id}))


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"demo seeding failed: {response.request.method} {response.request.url} → "
                           f"{response.status_code} {response.text}")
    return response.json() if response.content else None


async def seed(api: httpx.AsyncClient, contacts: int = 5000, *, base_url: str) -> dict[str, Any]:
    """Contacts, segments, templates, channels and campaigns, all through /api/v1. `base_url`: where the app that
    serves the built-in sandboxes (settings.sandbox_providers) is reachable."""
    imported = _ok(await api.post("/api/v1/contacts/import",
                                  files={"file": ("contacts.csv", contacts_csv(contacts), "text/csv")}))
    premium = _ok(await api.post("/api/v1/segments", json={
        "name": "Premium customers", "kind": "dynamic",
        "filter": {"field": "attributes.customer_tier", "op": "eq", "value": "premium"}}))
    _ok(await api.post("/api/v1/segments", json={
        "name": "New York fashion", "kind": "dynamic",
        "target_audience": {"city": "New York", "tags": ["fashion"]}}))
    _ok(await api.post("/api/v1/segments", json={
        "name": "High value, not in Tokyo", "kind": "dynamic",
        "filter": {"all": [{"field": "attributes.lifetime_value", "op": "gte", "value": 200000},
                           {"not": {"field": "attributes.city", "op": "eq", "value": "Tokyo"}}]}}))
    first_page = _ok(await api.get("/api/v1/contacts", params={"limit": 25}))
    vip = _ok(await api.post("/api/v1/segments", json={"name": "VIP list", "kind": "static"}))
    _ok(await api.post(f"/api/v1/segments/{vip['id']}/members",
                       json={"contact_ids": [c["id"] for c in first_page["items"]]}))

    newsletter = _ok(await api.post("/api/v1/templates", json={
        "name": "Monthly newsletter", "channel": "email",
        "subject": "{{ contact.first_name | default: 'Friend' }}, your {{ campaign.name }} picks",
        "header_html": "<style>h1{color:#1a56db} .foot{color:#888;font-size:12px}</style>",
        "body_html": "<h1>Hello {{ contact.first_name | default: 'there' }}!</h1>"
                     "<p>New arrivals in {{ contact.attributes.city | default: 'your city' }}.</p>"
                     "<p><a href=\"https://shop.example.com/new\">Shop the collection</a></p>",
        "footer_html": "<p class=\"foot\"><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>",
        "variables": {"discount": "15%"}}))
    sms = _ok(await api.post("/api/v1/templates", json={
        "name": "Flash sale SMS", "channel": "sms",
        "body_text": "{{ contact.first_name }}: flash sale, {{ discount }} off today only. Reply STOP to opt out.",
        "variables": {"discount": "20%"}}))
    whatsapp = _ok(await api.post("/api/v1/templates", json={
        "name": "Summer sale (WhatsApp)", "channel": "whatsapp",
        "whatsapp": {"name": "summer_sale_promo", "language_code": "en_US", "components": [
            {"type": "header", "parameters": [{"type": "image",
                                                "image": {"link": "https://example.com/sale-banner.jpg"}}]},
            {"type": "body", "parameters": [{"type": "text", "text": "{{ contact.first_name }}"},
                                            {"type": "text", "text": "30%"}]}]}}))

    restock = _ok(await api.post("/api/v1/templates", json={
        "name": "Back in stock SMS", "channel": "sms",
        "body_text": "{{ contact.first_name }}, the {{ item }} you liked is back in stock. Reply STOP to opt out.",
        "variables": {"item": "linen shirt"}}))

    # WhatsApp and SMS go through the sandboxes this app serves; their delivered/read webhooks come back to it.
    whatsapp_account = _ok(await api.post("/api/v1/channels", json=sandboxes.whatsapp_channel(base_url)))
    twilio_account = _ok(await api.post("/api/v1/channels", json=sandboxes.twilio_channel(base_url)))

    # Seed 002's example, starting today: 250 a day, the rest on the following days.
    summer = _ok(await api.post("/api/v1/campaigns", json={
        "name": "Summer Sale 2025", "description": "Promotional campaign for summer sale",
        "template_name": "summer_sale_promo", "language_code": "en_US", "daily_send_limit": 250, "priority": 5,
        "template_id": whatsapp["id"], "target_audience": {"customer_tier": "premium"},
        "channel_config_id": whatsapp_account["id"]}))
    _ok(await api.post(f"/api/v1/campaigns/{summer['id']}/recipients", params={"use_target_audience": "true"}))
    _ok(await api.post(f"/api/v1/campaigns/{summer['id']}/activate",
                       params={"start_date": utcnow().date().isoformat()}))

    # The built-in outbox writes .eml files under the data dir; 20 messages/s so stats visibly move for a minute.
    outbox = _ok(await api.post("/api/v1/channels", json={
        "name": "Demo outbox", "channel": "email", "provider": "outbox", "rate_limit_per_second": 20,
        "from_email": "news@clarion-demo.com", "reply_to": "hello@clarion-demo.com"}))
    news = _ok(await api.post("/api/v1/campaigns", json={
        "name": "November newsletter", "channel": "email", "type": "broadcast", "channel_config_id": outbox["id"],
        "template_id": newsletter["id"], "segment_id": premium["id"], "budget": 50_000, "currency": "USD",
        "from_email": "news@clarion-demo.com", "from_name": "Demo Shop"}))
    _ok(await api.post(f"/api/v1/campaigns/{news['id']}/recipients", params={"use_target_audience": "true"}))
    # Sends as soon as the server's embedded worker runs: watch GET /api/v1/campaigns/{id}/stats and /outbox.
    _ok(await api.post(f"/api/v1/campaigns/{news['id']}/start"))

    flash = _ok(await api.post("/api/v1/campaigns", json={
        "name": "Flash sale SMS", "channel": "sms", "type": "scheduled", "template_id": sms["id"],
        "filter": {"field": "phone", "op": "exists", "value": True}, "daily_send_limit": 1000,
        "channel_config_id": twilio_account["id"]}))
    _ok(await api.post(f"/api/v1/campaigns/{flash['id']}/recipients", params={"use_target_audience": "true"}))
    _ok(await api.post(f"/api/v1/campaigns/{flash['id']}/schedule",
                       json={"scheduled_at": (utcnow() + timedelta(days=1)).isoformat()}))

    back_in_stock = _ok(await api.post("/api/v1/campaigns", json={
        # Above the newsletter's priority: claims go by priority, so it goes out now rather than after the newsletter.
        "name": "Back in stock SMS", "channel": "sms", "template_id": restock["id"], "priority": 8,
        "channel_config_id": twilio_account["id"],
        "filter": {"all": [{"field": "phone", "op": "exists", "value": True},
                           {"field": "attributes.city", "op": "eq", "value": "New York"}]}}))
    _ok(await api.post(f"/api/v1/campaigns/{back_in_stock['id']}/recipients", params={"use_target_audience": "true"}))
    _ok(await api.post(f"/api/v1/campaigns/{back_in_stock['id']}/start"))
    return {"contacts": imported, "campaigns": [summer["id"], news["id"], flash["id"], back_in_stock["id"]],
            "sending": news["id"], "whatsapp": summer["id"], "sms": back_in_stock["id"]}


def print_banner(console: Any, url: str, demo: DemoTenant, data_dir: Path) -> None:
    console.print()
    console.print("[bold green]Clarion demo is ready.[/bold green]")
    console.print(f"  API:      {url}/api/v1   (docs: {url}/docs)")
    console.print(f"  API key:  [bold]{demo.api_key}[/bold]")
    console.print(f"  Try:      curl -H 'Authorization: Bearer {demo.api_key}' {url}/api/v1/campaigns", soft_wrap=True)
    if demo.sending_campaign_id:
        console.print(f"  Watch:    curl -H 'Authorization: Bearer {demo.api_key}' "
                      f"{url}/api/v1/campaigns/{demo.sending_campaign_id}/stats   (sending into {url}/api/v1/outbox)",
                      soft_wrap=True)
    for label, campaign_id, moving in (("WhatsApp", demo.whatsapp_campaign_id, "delivered and read"),
                                       ("SMS", demo.sms_campaign_id, "delivered")):
        if campaign_id:
            console.print(f"  {label + ':':<9} curl -H 'Authorization: Bearer {demo.api_key}' "
                          f"{url}/api/v1/campaigns/{campaign_id}/stats   ({moving} arrive from the built-in "
                          f"sandbox's webhooks)", soft_wrap=True)
    console.print(f"  Data:     {data_dir.resolve()}")
    console.print()
