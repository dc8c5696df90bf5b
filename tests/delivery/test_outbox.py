"""The outbox channel writes .eml files and the API lists them (both databases)."""

from __future__ import annotations

import uuid
from email import message_from_bytes, policy
from pathlib import Path

import httpx

from clarion.config import Settings
from clarion.db import Database
from clarion.delivery.channels.base import (
    EmailPayload,
    OutboxEntry,
    OutgoingMessage,
    ProviderContext,
    TextPayload,
)
from clarion.delivery.channels.outbox import OutboxConfig, OutboxProvider
from clarion.delivery.email_message import build_email
from clarion.delivery.outbox_service import DatabaseOutboxIndex, SessionOutboxIndex, outbox_provider
from tests.conftest import make_tenant


def outgoing(n: int, campaign_id: uuid.UUID | None = None, subject: str | None = None) -> OutgoingMessage:
    to = f"user{n}@example.com"
    subject = subject if subject is not None else f"Offer {n}"
    raw = build_email(from_addr="news@shop.example", to_addr=to, subject=subject, html=f"<p>{n}</p>",
                      text=str(n), list_unsubscribe_url=f"https://clarion.test/t/u/{n}",
                      message_id_domain="shop.example")
    return OutgoingMessage(ref=f"r{n}", to=to, channel="email", campaign_id=campaign_id,
                           payload=EmailPayload(raw=raw, envelope_from="news@shop.example", envelope_to=(to,),
                                                subject=subject))


async def test_sent_messages_are_listed_newest_first_with_keyset_pages(api: httpx.AsyncClient, db: Database,
                                                                       settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    campaign = uuid.uuid4()
    outbox = outbox_provider(DatabaseOutboxIndex(db), settings.data_dir, tenant_id)
    batch = [outgoing(n, campaign) for n in range(5)]
    results = await outbox.send(batch)
    assert [r.ref for r in results] == [m.ref for m in batch] and all(r.ok for r in results)

    seen: list[dict] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/v1/outbox", params=params)).json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["to"] for e in seen] == [m.to for m in reversed(batch)]  # newest first
    assert [e["id"] for e in seen] == [r.provider_message_id for r in reversed(results)]
    first = seen[0]
    assert first["campaign_id"] == str(campaign) and first["subject"] == "Offer 4"
    assert set(first) >= {"id", "campaign_id", "to", "subject", "created_at"}

    raw = await api.get(f"/api/v1/outbox/{first['id']}/raw")
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("message/rfc822")
    assert raw.content == batch[4].payload.raw  # type: ignore[union-attr]
    eml = settings.data_dir / "outbox" / str(tenant_id) / f"{first['id']}.eml"
    assert eml.read_bytes() == raw.content


async def test_the_listing_filters_by_campaign_and_works_with_a_read_only_key(api: httpx.AsyncClient,
                                                                              db: Database,
                                                                              settings: Settings) -> None:
    tenant = api.tenant  # type: ignore[attr-defined]
    wanted, other = uuid.uuid4(), uuid.uuid4()
    outbox = outbox_provider(DatabaseOutboxIndex(db), settings.data_dir, tenant.id)
    await outbox.send([outgoing(1, wanted), outgoing(2, other), outgoing(3, None)])

    response = await api.get("/api/v1/outbox", params={"campaign_id": str(wanted)},
                             headers=tenant.read_headers)
    assert response.status_code == 200
    assert [e["to"] for e in response.json()["items"]] == ["user1@example.com"]


async def test_another_tenants_outbox_is_invisible(api: httpx.AsyncClient, db: Database,
                                                   settings: Settings) -> None:
    stranger = await make_tenant(db, "Stranger")
    their_outbox = outbox_provider(DatabaseOutboxIndex(db), settings.data_dir, stranger.id)
    theirs = await their_outbox.send([outgoing(7)])

    assert (await api.get("/api/v1/outbox")).json()["items"] == []
    response = await api.get(f"/api/v1/outbox/{theirs[0].provider_message_id}/raw")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_auth_is_required_and_bad_cursors_are_422(api: httpx.AsyncClient) -> None:
    transport = api._transport  # the same app, without the key
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as anonymous:
        assert (await anonymous.get("/api/v1/outbox")).status_code == 401
    assert (await api.get("/api/v1/outbox", params={"cursor": "!!!"})).status_code == 422
    assert (await api.get("/api/v1/outbox", params={"limit": 0})).status_code == 422
    assert (await api.get(f"/api/v1/outbox/{uuid.uuid4()}/raw")).status_code == 404


async def test_a_missing_file_is_a_404_not_a_500(api: httpx.AsyncClient, db: Database,
                                                 settings: Settings) -> None:
    [result] = await outbox_provider(DatabaseOutboxIndex(db), settings.data_dir,
                                     api.tenant.id).send([outgoing(1)])  # type: ignore[attr-defined]
    (settings.data_dir / "outbox" / str(api.tenant.id) / f"{result.provider_message_id}.eml").unlink()  # type: ignore[attr-defined]
    assert (await api.get(f"/api/v1/outbox/{result.provider_message_id}/raw")).status_code == 404


async def test_the_session_index_commits_with_the_callers_transaction(api: httpx.AsyncClient, db: Database,
                                                                     settings: Settings) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    try:
        async with db.transaction() as session:
            outbox = outbox_provider(SessionOutboxIndex(session), settings.data_dir, tenant_id)
            await outbox.send([outgoing(1)])
            raise RuntimeError("the dispatcher fails before committing")
    except RuntimeError:
        pass
    assert (await api.get("/api/v1/outbox")).json()["items"] == []

    async with db.transaction() as session:
        await outbox_provider(SessionOutboxIndex(session), settings.data_dir, tenant_id).send([outgoing(2)])
    assert [e["to"] for e in (await api.get("/api/v1/outbox")).json()["items"]] == ["user2@example.com"]


class BrokenIndex:
    async def record(self, entries: list[OutboxEntry]) -> None:
        raise OSError("disk full")


async def test_a_failed_index_write_is_transient_and_leaves_no_files(tmp_path: Path) -> None:
    tenant_id = uuid.uuid4()
    outbox = OutboxProvider(OutboxConfig(data_dir=tmp_path, tenant_id=tenant_id),
                            ProviderContext(outbox_index=BrokenIndex()))
    sms = OutgoingMessage(ref="sms", to="+15550100", channel="sms", payload=TextPayload(text="hi"))
    results = await outbox.send([outgoing(1), sms, outgoing(2)])

    assert [r.ref for r in results] == ["r1", "sms", "r2"]
    assert all(not r.ok for r in results)
    assert results[0].transient and results[2].transient and "disk full" in (results[0].error or "")
    assert not results[1].transient  # not an email: never will be
    assert list((tmp_path / "outbox" / str(tenant_id)).glob("*")) == []


async def test_the_subject_is_read_from_the_message_when_not_given(tmp_path: Path) -> None:
    recorded: list[OutboxEntry] = []

    class ListIndex:
        async def record(self, entries: list[OutboxEntry]) -> None:
            recorded.extend(entries)

    message = outgoing(1, subject="Grüße")
    bare = OutgoingMessage(ref=message.ref, to=message.to, channel="email",
                           payload=EmailPayload(raw=message.payload.raw,  # type: ignore[union-attr]
                                                envelope_from="news@shop.example", envelope_to=(message.to,)))
    outbox = OutboxProvider(OutboxConfig(data_dir=tmp_path, tenant_id=uuid.uuid4()),
                            ProviderContext(ListIndex()))
    [result] = await outbox.send([bare])
    assert result.ok
    assert recorded[0].subject == "Grüße"
    eml = tmp_path / recorded[0].path
    assert str(message_from_bytes(eml.read_bytes(), policy=policy.default)["Subject"]) == "Grüße"
