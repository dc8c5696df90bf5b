"""Tenant B gets 404 for every object of tenant A's, through every endpoint that names an object.

The route table is walked from the OpenAPI document, so a new endpoint with a path id fails this test until it
is listed here with an object of tenant A's and a valid body.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

import httpx

from clarion.config import Settings
from clarion.db import Database
from clarion.delivery.channels.base import EmailPayload, OutgoingMessage
from clarion.delivery.email_message import build_email
from clarion.delivery.outbox_service import DatabaseOutboxIndex, outbox_provider
from clarion.kit.clock import utcnow
from clarion.sandbox import twilio as twilio_sandbox
from clarion.sandbox.webpush import PushService
from tests.conftest import make_tenant

PARAM = re.compile(r"\{(\w+)\}")


async def _objects_of_tenant_a(api: httpx.AsyncClient, db: Database, settings: Settings) -> dict[str, str]:
    def ok(response: httpx.Response) -> dict:
        assert response.status_code < 300, response.text
        return response.json()

    contact = ok(await api.post("/api/v1/contacts", json={"email": "a@example.com", "phone": "+14155550123"}))
    segment = ok(await api.post("/api/v1/segments", json={"name": "A static", "kind": "static"}))
    template = ok(await api.post("/api/v1/templates", json={
        "name": "A mail", "channel": "email", "subject": "Hi", "body_html": "<p>Hi {{ contact.first_name }}</p>"}))
    campaign = ok(await api.post("/api/v1/campaigns", json={
        "name": "A campaign", "channel": "email", "template_id": template["id"]}))
    key = ok(await api.post("/api/v1/api-keys", json={"name": "A extra"}))
    channel = ok(await api.post("/api/v1/channels", json={
        "name": "A smtp", "channel": "email", "provider": "smtp",
        "config": {"host": "127.0.0.1", "port": 2525, "security": "none"}}))
    suppression = ok(await api.post("/api/v1/suppressions", json={"channel": "email", "addresses": ["a@example.com"]}))
    browser = PushService().subscribe("https://push.example").to_json()
    push = ok(await api.post("/api/v1/push/subscriptions", json={
        "contact_id": contact["id"], "endpoint": browser["endpoint"], "keys": browser["keys"]}))
    sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    ok(await api.post("/api/v1/channels", json={
        "name": "A twilio", "channel": "sms", "provider": "twilio",
        "config": {"account_sid": sid, "auth_token": token, "from_number": "+15005550006"}}))
    headers, body = twilio_sandbox.inbound_message(f"{settings.base_url}/webhooks/twilio/inbound", account_sid=sid,
                                                   auth_token=token, sender="+14155550123", body="HELP")
    assert (await api.post("/webhooks/twilio/inbound", content=body, headers=headers)).status_code == 200
    webhook_call = ok(await api.get("/api/v1/webhook-calls", params={"provider": "twilio"}))["items"][0]
    raw = build_email(from_addr="a@shop.example", to_addr="x@example.com", subject="S", html="<p>x</p>", text="x",
                      list_unsubscribe_url="https://clarion.test/t/u/x", message_id_domain="shop.example")
    sent = await outbox_provider(DatabaseOutboxIndex(db), settings.data_dir, api.tenant.id).send([  # type: ignore[attr-defined]
        OutgoingMessage(ref="r", to="x@example.com", channel="email",
                        payload=EmailPayload(raw=raw, envelope_from="a@shop.example", envelope_to=("x@example.com",)))])
    return {"contact_id": contact["id"], "segment_id": segment["id"], "template_id": template["id"],
            "campaign_id": campaign["id"], "key_id": key["id"], "channel_id": channel["id"],
            "entry_id": sent[0].provider_message_id or "", "suppression_id": suppression["items"][0]["id"],
            "call_id": str(webhook_call["id"]),
            "subscription_id": push["id"]}


def _body(method: str, path: str, ids: dict[str, str]) -> dict | None:
    future = (utcnow() + timedelta(days=2)).isoformat()
    bodies = {
        ("patch", "/api/v1/contacts/{contact_id}"): {"first_name": "B was here"},
        ("patch", "/api/v1/segments/{segment_id}"): {"name": "B was here"},
        ("post", "/api/v1/segments/{segment_id}/members"): {"contact_ids": [ids["contact_id"]]},
        ("delete", "/api/v1/segments/{segment_id}/members"): {"contact_ids": [ids["contact_id"]]},
        ("put", "/api/v1/templates/{template_id}"): {"name": "B was here"},
        ("post", "/api/v1/templates/{template_id}/preview"): {"sample": {"first_name": "B"}},
        ("patch", "/api/v1/campaigns/{campaign_id}"): {"name": "B was here"},
        ("post", "/api/v1/campaigns/{campaign_id}/schedule"): {"scheduled_at": future},
        ("post", "/api/v1/campaigns/{campaign_id}/recipients"): {"contact_ids": [ids["contact_id"]]},
        ("post", "/api/v1/campaigns/{campaign_id}/test"): {"to": ["b@example.com"]},
        ("patch", "/api/v1/channels/{channel_id}"): {"name": "B was here"},
    }
    return bodies.get((method, path))


async def test_tenant_b_gets_404_for_every_object_of_tenant_a(api: httpx.AsyncClient, app, db: Database,  # type: ignore[no-untyped-def]
                                                             settings: Settings) -> None:
    ids = await _objects_of_tenant_a(api, db, settings)
    other = await make_tenant(db, "Tenant B")
    checked = 0
    for path, operations in app.openapi()["paths"].items():
        names = PARAM.findall(path)
        if not names or not path.startswith("/api/"):
            continue
        missing = [n for n in names if n not in ids]
        assert not missing, f"{path}: give tenant A an object for {missing} in this test"
        url = path.format(**ids)
        for method in operations:
            body = _body(method, path, ids)
            response = await api.request(method.upper(), url, json=body, headers=other.headers)
            assert response.status_code == 404, f"{method.upper()} {path} as tenant B → {response.status_code}"
            assert response.headers["content-type"].startswith("application/problem+json")
            checked += 1
    assert checked >= 30

    # Nothing of A's changed under B's attempts.
    contact = (await api.get(f"/api/v1/contacts/{ids['contact_id']}")).json()
    assert contact["first_name"] is None
    campaign = (await api.get(f"/api/v1/campaigns/{ids['campaign_id']}")).json()
    assert campaign["name"] == "A campaign" and campaign["status"] == "draft"
    assert (await api.get(f"/api/v1/segments/{ids['segment_id']}/count")).json()["count"] == 0
    suppressed = await api.post("/api/v1/suppressions/check", json={"channel": "email", "address": "a@example.com"})
    assert suppressed.json()["suppression_id"] == ids["suppression_id"]
    assert (await api.get(f"/api/v1/push/subscriptions/{ids['subscription_id']}")).status_code == 200
    assert (await api.get(f"/api/v1/webhook-calls/{ids['call_id']}")).status_code == 200
