"""Builders for tracking tests: campaigns whose recipients were really sent, through the services."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from clarion.campaign import claims, sending
from clarion.db import Database
from clarion.kit import tracking_urls
from clarion.kit.clock import utcnow
from clarion.tracking.recorder import recorder_for

SECRET = "test-secret-" + "x" * 32  # tests/conftest.py's install secret
BASE = "http://clarion.test"


@dataclass
class Sent:
    id: int
    contact_id: str
    email: str
    campaign_id: str
    message_id: str


async def sent_campaign(api: httpx.AsyncClient, db: Database, emails: list[str], *,
                        currency: str = "USD", **campaign_fields: Any) -> list[Sent]:
    """An email campaign whose recipients (one per address) were claimed and recorded as sent just now."""
    contacts = []
    for address in emails:
        response = await api.post("/api/v1/contacts", json={"email": address})
        assert response.status_code == 201, response.text
        contacts.append(response.json())
    created = await api.post("/api/v1/campaigns", json={"name": "Summer Sale", "channel": "email",
                                                        "currency": currency, **campaign_fields})
    assert created.status_code == 201, created.text
    campaign_id = created.json()["id"]
    added = await api.post(f"/api/v1/campaigns/{campaign_id}/recipients",
                           json={"contact_ids": [c["id"] for c in contacts]})
    assert added.status_code == 200, added.text
    started = await api.post(f"/api/v1/campaigns/{campaign_id}/start")
    assert started.status_code == 200, started.text
    owner = f"test-{uuid.uuid4().hex[:8]}"
    async with db.transaction() as session:
        claimed = await claims.claim_due(session, now=utcnow(), limit=len(emails), lease_owner=owner,
                                          lease_seconds=60, campaign_id=uuid.UUID(campaign_id))
    assert len(claimed) == len(emails)
    message_ids = {c.id: f"<clarion.{uuid.uuid4().hex}@mail.shop.example>" for c in claimed}
    async with db.transaction() as session:
        await sending.record_outcomes(
            session, [sending.SendOutcome(recipient_id=c.id, ok=True, provider_message_id=message_ids[c.id])
                      for c in claimed], now=utcnow(), lease_owner=owner)
    by_contact = {c.contact_id: c for c in claimed}
    return [Sent(by_contact[uuid.UUID(c["id"])].id, c["id"], c["email"], campaign_id,
                 message_ids[by_contact[uuid.UUID(c["id"])].id]) for c in contacts]


async def register_link(db: Database, tenant_id: uuid.UUID, campaign_id: str, url: str) -> int:
    async with db.transaction() as session:
        ids = await sending.register_links(session, tenant_id=tenant_id, campaign_id=uuid.UUID(campaign_id),
                                           urls=[url])
    return ids[url]


def path_of(url: str) -> str:
    return url[len(BASE):]


def open_path(recipient_id: int) -> str:
    return path_of(tracking_urls.open_url(BASE, SECRET, recipient_id))


def click_path(recipient_id: int, link_id: int) -> str:
    return path_of(tracking_urls.click_url(BASE, SECRET, recipient_id, link_id))


def unsubscribe_path(recipient_id: int) -> str:
    return path_of(tracking_urls.unsubscribe_url(BASE, SECRET, recipient_id))


async def flush(app: Any) -> None:
    """Write the buffered opens and clicks now (the app's writer would within tracking_flush_interval)."""
    await recorder_for(app).flush()


async def campaign(api: httpx.AsyncClient, campaign_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/campaigns/{campaign_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def recipient(api: httpx.AsyncClient, campaign_id: str, recipient_id: int) -> dict[str, Any]:
    response = await api.get(f"/api/v1/campaigns/{campaign_id}/recipients", params={"limit": 500})
    assert response.status_code == 200, response.text
    return next(r for r in response.json()["items"] if r["id"] == recipient_id)


async def events(db: Database, recipient_id: int, type_: str | None = None) -> list[Any]:
    """The recipient's campaign_events rows, oldest first (read straight from the table to see the metadata)."""
    from sqlalchemy import select

    from clarion.models import CampaignEvent

    stmt = select(CampaignEvent).where(CampaignEvent.recipient_id == recipient_id).order_by(CampaignEvent.id)
    if type_:
        stmt = stmt.where(CampaignEvent.type == type_)
    async with db.transaction() as session:
        return list((await session.execute(stmt)).scalars().all())


async def counters(db: Database, tenant_id: uuid.UUID, campaign_id: str) -> dict[str, int]:
    from clarion.campaign import service

    async with db.transaction() as session:
        c = await service.get_campaign(session, tenant_id, uuid.UUID(campaign_id))
        return {name: getattr(c, name) for name in ("opened", "opened_total", "clicked", "clicked_total",
                                                    "converted", "revenue", "bounced")}
