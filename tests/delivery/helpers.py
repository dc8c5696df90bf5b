"""Shared set-up for the delivery tests: templates, SMTP channels and campaigns through the public API, and
reads of what the database recorded."""

from __future__ import annotations

import uuid
from email import message_from_bytes, policy
from typing import Any

import httpx
from sqlalchemy import select

from clarion.config import Settings
from clarion.db import Database
from clarion.delivery.dispatch import Dispatcher
from clarion.models import Campaign, CampaignRecipient

CAMPAIGNS = "/api/v1/campaigns"
HTML = (
    '<html><body><p>Hi {{ contact.first_name }}</p><a href="https://shop.example/sale?x=1&amp;y=2">Sale</a>'
    '<a data-clarion-notrack href="https://shop.example/private">Private</a>'
    '<a href="mailto:help@shop.example">Mail us</a></body></html>'
)


async def import_emails(api: httpx.AsyncClient, csv: str) -> dict[str, Any]:
    imported = await api.post("/api/v1/contacts/import", files={"file": ("c.csv", csv.encode(), "text/csv")})
    assert imported.status_code == 200, imported.text
    return dict(imported.json())


async def email_template(
    api: httpx.AsyncClient, html: str = HTML, subject: str = "Hello {{ contact.first_name }}", **extra: Any
) -> str:
    response = await api.post(
        "/api/v1/templates",
        json={
            "name": f"t-{uuid.uuid4().hex[:6]}",
            "channel": "email",
            "subject": subject,
            "body_html": html,
            **extra,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def smtp_channel(api: httpx.AsyncClient, port: int, **config: Any) -> str:
    body = {
        "channel": "email",
        "provider": "smtp",
        "name": f"relay-{uuid.uuid4().hex[:6]}",
        "config": {"host": "127.0.0.1", "port": port, "security": "none", "pool_size": 2, **config},
    }
    response = await api.post("/api/v1/channels", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def running_campaign(api: httpx.AsyncClient, contacts: list[dict[str, Any]], **fields: Any) -> str:
    for contact in contacts:
        response = await api.post("/api/v1/contacts", json=contact)
        assert response.status_code == 201, response.text
    body = {"name": "Spring", "channel": "email", **fields}
    response = await api.post(CAMPAIGNS, json=body)
    assert response.status_code == 201, response.text
    campaign_id = response.json()["id"]
    emails = [c["email"] for c in contacts]
    response = await api.post(f"{CAMPAIGNS}/{campaign_id}/recipients", json={"emails": emails})
    assert response.status_code == 200 and response.json()["recipients_added"] == len(emails), response.text
    response = await api.post(f"{CAMPAIGNS}/{campaign_id}/start")
    assert response.status_code == 200, response.text
    return str(campaign_id)


def people(n: int, tag: str | None = None) -> list[dict[str, Any]]:
    tag = tag or uuid.uuid4().hex[:8]
    return [{"email": f"p{i}-{tag}@example.com", "first_name": f"Ann{i}"} for i in range(n)]


async def send_due(db: Database, settings: Settings, campaign_id: str) -> None:
    """Send what is due of one campaign through the real dispatcher, as a worker would, and close it."""
    dispatcher = Dispatcher(db, settings)
    try:
        await dispatcher.drain([uuid.UUID(campaign_id)])
    finally:
        await dispatcher.close()


async def recipients(db: Database, campaign_id: str) -> list[CampaignRecipient]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(CampaignRecipient)
            .where(CampaignRecipient.campaign_id == uuid.UUID(campaign_id))
            .order_by(CampaignRecipient.id)
        )
        return list(rows.scalars())


async def campaign_row(db: Database, campaign_id: str) -> Campaign:
    async with db.transaction() as session:
        return (
            await session.execute(select(Campaign).where(Campaign.id == uuid.UUID(campaign_id)))
        ).scalar_one()


def parsed(raw: bytes) -> Any:
    return message_from_bytes(raw, policy=policy.default)
