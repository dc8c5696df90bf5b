"""Small builders for campaign tests; everything goes through the public API unless said otherwise."""

from __future__ import annotations

import io
from typing import Any

import httpx

from clarion.audience import service as audience
from clarion.audience.schemas import ContactCreate
from clarion.db import Database

CAMPAIGNS = "/api/v1/campaigns"


async def new_campaign(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Summer Sale 2025", "channel": "email", **fields}
    response = await api.post(CAMPAIGNS, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def new_contact(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await api.post("/api/v1/contacts", json=fields)
    assert response.status_code == 201, response.text
    return response.json()


async def add_recipients(api: httpx.AsyncClient, campaign_id: str, body: dict[str, Any] | None = None,
                         **params: Any) -> httpx.Response:
    return await api.post(f"{CAMPAIGNS}/{campaign_id}/recipients", json=body, params=params)


async def campaign(api: httpx.AsyncClient, campaign_id: str) -> dict[str, Any]:
    response = await api.get(f"{CAMPAIGNS}/{campaign_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def bulk_contacts(api: httpx.AsyncClient, db: Database, count: int, *, attributes: str = "gold") -> None:
    """`count` email contacts with attributes.tier = `attributes`: by CSV import when the route exists."""
    csv = "email,tier\n" + "".join(f"bulk{i}@example.com,{attributes}\n" for i in range(count))
    response = await api.post("/api/v1/contacts/import",
                              files={"file": ("contacts.csv", io.BytesIO(csv.encode()), "text/csv")})
    if response.status_code in (404, 405):
        async with db.transaction() as session:
            for i in range(count):
                await audience.create_contact(session, api.tenant.id, ContactCreate(  # type: ignore[attr-defined]
                    email=f"bulk{i}@example.com", attributes={"tier": attributes}))
        return
    assert response.status_code == 200, response.text
    assert response.json()["created"] == count, response.text
