"""Events: a recipient's status only moves forward, replays count once, machine events only in the totals,
and the campaign's event log over the API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from clarion.campaign import sending
from clarion.db import Database
from clarion.errors import NotFound
from clarion.kit.clock import utcnow
from tests.campaign.helpers import CAMPAIGNS
from tests.campaign.test_sending import (
    assert_counters_match,
    contacts,
    frozen_clock,  # noqa: F401 - autouse: the clock is frozen at Monday 2025-01-06 10:00 UTC
    recipients,
    running_campaign,
    send_all,
)
from tests.conftest import make_tenant

MACHINE = {"flags": {"machine": True}, "user_agent": "GoogleImageProxy"}


async def event(db: Database, tenant_id: uuid.UUID, campaign_id: uuid.UUID, recipient_id: int | None, type_: str,
                metadata: dict[str, Any] | None = None, **kwargs: Any) -> bool:
    async with db.transaction() as session:
        return await sending.record_event(session, tenant_id=tenant_id, campaign_id=campaign_id,
                                          recipient_id=recipient_id, type=type_, occurred_at=utcnow(),
                                          metadata=metadata, **kwargs)


async def sent_campaign(api: httpx.AsyncClient, db: Database, count: int) -> tuple[uuid.UUID, list[int]]:
    campaign_id = await running_campaign(api, await contacts(api, count))
    claimed = await send_all(db, campaign_id)
    return campaign_id, [c.id for c in claimed]


async def test_status_moves_forward_only_and_replays_count_once(api: httpx.AsyncClient, db: Database) -> None:
    campaign_id, (first, second) = await sent_campaign(api, db, 2)
    tenant = api.tenant.id
    assert await event(db, tenant, campaign_id, first, "opened", {"ip": "203.0.113.9"}) is True
    assert await event(db, tenant, campaign_id, first, "opened") is False  # the same open again
    assert await event(db, tenant, campaign_id, first, "delivered") is False  # late delivery report
    assert await event(db, tenant, campaign_id, first, "sent") is False
    assert await event(db, tenant, campaign_id, first, "clicked", {"url": "https://a.example/"}) is True
    assert await event(db, tenant, campaign_id, first, "opened") is False  # an open after the click
    assert await event(db, tenant, campaign_id, first, "converted") is True
    assert await event(db, tenant, campaign_id, first, "bounced") is False  # a converted message did not bounce
    rows = {r.id: r for r in await recipients(db, campaign_id)}
    one = rows[first]
    assert (one.status, one.open_count, one.click_count) == ("converted", 3, 1)
    opened_at = one.opened_at
    assert opened_at is not None and one.delivered_at == opened_at and one.converted_at is not None

    # A machine open (image proxy) and a scanner click count in the totals only.
    assert await event(db, tenant, campaign_id, second, "opened", MACHINE) is False
    assert await event(db, tenant, campaign_id, second, "clicked", MACHINE) is False
    two = {r.id: r for r in await recipients(db, campaign_id)}[second]
    assert (two.status, two.opened_at, two.clicked_at, two.open_count, two.click_count) == ("sent", None, None, 1, 1)

    campaign = await assert_counters_match(db, campaign_id)
    assert (campaign.opened, campaign.opened_total, campaign.clicked, campaign.clicked_total,
            campaign.delivered, campaign.converted) == (1, 4, 1, 2, 1, 1)
    stats = (await api.get(f"{CAMPAIGNS}/{campaign_id}/stats")).json()
    assert (stats["opened"], stats["opened_total"], stats["open_rate"], stats["clicked_total"],
            stats["click_rate"]) == (1, 4, 50.0, 2, 50.0)


async def test_a_bounce_ends_a_sent_message_and_later_engagement_changes_nothing(api: httpx.AsyncClient,
                                                                                db: Database) -> None:
    campaign_id, (bounced, failed) = await sent_campaign(api, db, 2)
    tenant = api.tenant.id
    assert await event(db, tenant, campaign_id, bounced, "bounced", {"reason": "5.1.1 user unknown"}) is True
    assert await event(db, tenant, campaign_id, bounced, "bounced") is False
    assert await event(db, tenant, campaign_id, bounced, "opened") is False
    assert await event(db, tenant, campaign_id, failed, "failed", {"reason": "undeliverable"}) is True
    rows = {r.id: r for r in await recipients(db, campaign_id)}
    assert (rows[bounced].status, rows[bounced].failure_reason, rows[bounced].open_count) == \
        ("bounced", "5.1.1 user unknown", 0)
    assert rows[failed].status == "failed"
    campaign = await assert_counters_match(db, campaign_id)
    assert (campaign.sent, campaign.bounced, campaign.failed, campaign.opened_total) == (2, 1, 1, 0)


async def test_events_of_unsent_recipients_are_kept_but_move_nothing(api: httpx.AsyncClient, db: Database) -> None:
    campaign_id = await running_campaign(api, await contacts(api, 1))
    [row] = await recipients(db, campaign_id)
    assert await event(db, api.tenant.id, campaign_id, row.id, "opened") is False
    [after] = await recipients(db, campaign_id)
    assert (after.status, after.open_count) == ("pending", 0)
    await assert_counters_match(db, campaign_id)
    listed = (await api.get(f"{CAMPAIGNS}/{campaign_id}/events")).json()["items"]
    assert [e["type"] for e in listed] == ["opened"]


async def test_an_event_for_another_campaigns_recipient_is_refused(api: httpx.AsyncClient, db: Database) -> None:
    campaign_id, [recipient_id] = await sent_campaign(api, db, 1)
    other = await running_campaign(api, await contacts(api, 1))
    with pytest.raises(NotFound):
        await event(db, api.tenant.id, other, recipient_id, "opened")
    with pytest.raises(NotFound):
        await event(db, uuid.uuid4(), campaign_id, recipient_id, "opened")
    assert (await api.get(f"{CAMPAIGNS}/{campaign_id}/events", params={"type": "opened"})).json()["items"] == []


async def test_recipient_refs_by_id_and_provider_message_id(api: httpx.AsyncClient, db: Database) -> None:
    campaign_id, [recipient_id] = await sent_campaign(api, db, 1)
    async with db.transaction() as session:
        by_id = await sending.get_recipient_ref(session, recipient_id)
        by_message = await sending.find_recipient_by_provider_message_id(session, f"pm-{recipient_id}")
        unknown = await sending.find_recipient_by_provider_message_id(session, "pm-nobody")
    assert by_id == by_message
    assert by_id is not None and unknown is None
    assert (by_id.campaign_id, by_id.tenant_id, by_id.channel, by_id.status, by_id.sent_at) == \
        (campaign_id, api.tenant.id, "email", "sent", utcnow())


async def test_events_endpoint_filters_by_type_and_pages_newest_first(api: httpx.AsyncClient, db: Database,
                                                                     app: Any) -> None:
    campaign_id, ids = await sent_campaign(api, db, 3)
    for recipient_id in ids:
        await event(db, api.tenant.id, campaign_id, recipient_id, "opened", {"ip": "198.51.100.7"})
    first = await api.get(f"{CAMPAIGNS}/{campaign_id}/events", params={"type": "opened", "limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["recipient_id"] for e in page["items"]] == [ids[2], ids[1]]
    assert page["items"][0]["metadata"] == {"ip": "198.51.100.7"}
    assert page["items"][0]["contact_id"] is not None
    rest = (await api.get(f"{CAMPAIGNS}/{campaign_id}/events",
                          params={"type": "opened", "limit": 2, "cursor": page["next_cursor"]})).json()
    assert [e["recipient_id"] for e in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    everything = (await api.get(f"{CAMPAIGNS}/{campaign_id}/events", params={"limit": 500})).json()["items"]
    assert [e["type"] for e in everything] == ["opened"] * 3 + ["sent"] * 3
    assert (await api.get(f"{CAMPAIGNS}/{campaign_id}/events", params={"type": "nonsense"})).status_code == 422
    # Another tenant sees a 404, not the log.
    transport = httpx.ASGITransport(app=app)
    stranger = await make_tenant(db, "Stranger")
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test",
                                 headers=stranger.headers) as other:
        assert (await other.get(f"{CAMPAIGNS}/{campaign_id}/events")).status_code == 404
