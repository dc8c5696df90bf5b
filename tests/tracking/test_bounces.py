"""Bounce messages: parsing real-world shapes, hard vs soft rules, auto-replies, the API and the Maildir."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from clarion.kit.clock import clock
from clarion.tracking import maildir
from clarion.tracking.bounces import parse_bounce
from clarion.tracking.service import BounceSettings
from clarion.tracking.tasks import process_bounce_maildir
from clarion.worker import registry
from tests.tracking.helpers import counters, events, recipient, sent_campaign

FIXTURES = Path(__file__).parent / "fixtures"
BOUNCES = "/api/v1/bounces"


def fixture(name: str, *, message_id: str | None = None, to: str | None = None) -> bytes:
    """A hand-written sample, its returned Message-ID and failing address swapped for this test's own."""
    raw = (FIXTURES / name).read_bytes()
    placeholders = {"postfix_hard.eml": ("<clarion.POSTFIX01@mail.shop.example>", "ann@example.com"),
                    "exchange_hard.eml": ("<clarion.EXCHANGE01@mail.shop.example>", "bob@contoso.com"),
                    "gmail_delayed.eml": ("<clarion.GMAIL01@mail.shop.example>", "cid@example.org"),
                    "qmail_hard.eml": ("<clarion.QMAIL01@mail.shop.example>", "dee@legacy.example")}
    if name in placeholders:
        old_id, old_to = placeholders[name]
        if message_id:
            raw = raw.replace(old_id.encode(), message_id.encode())
        if to:
            raw = raw.replace(old_to.encode(), to.encode())
    return raw


@pytest.mark.parametrize(("name", "email", "kind", "status", "message_id"), [
    ("postfix_hard.eml", "ann@example.com", "hard", "5.1.1", "<clarion.POSTFIX01@mail.shop.example>"),
    ("exchange_hard.eml", "bob@contoso.com", "hard", "5.1.10", "<clarion.EXCHANGE01@mail.shop.example>"),
    ("gmail_delayed.eml", "cid@example.org", "soft", "4.2.2", "<clarion.GMAIL01@mail.shop.example>"),
    ("qmail_hard.eml", "dee@legacy.example", "hard", None, "<clarion.QMAIL01@mail.shop.example>"),
])
def test_each_sample_parses_to_its_address_kind_and_original_message(name, email, kind, status,
                                                                     message_id) -> None:
    report = parse_bounce(fixture(name))
    assert report.ignored is None
    [bounced] = report.recipients
    assert (bounced.email, bounced.kind, bounced.status) == (email, kind, status)
    assert report.original_message_id == message_id
    assert report.source == ("heuristic" if name == "qmail_hard.eml" else "dsn")


@pytest.mark.parametrize("name", ["vacation_reply.eml", "vacation_plain.eml"])
def test_auto_replies_are_not_bounces(name) -> None:
    report = parse_bounce(fixture(name))
    assert (report.recipients, report.ignored) == ([], "auto_reply")


async def _consent(api, contact_id: str) -> str:
    return (await api.get(f"/api/v1/contacts/{contact_id}")).json()["subscriptions"]["email"]["status"]


async def test_a_hard_bounce_marks_the_address_and_the_recipient_at_once(api, db) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    raw = fixture("postfix_hard.eml", message_id=ann.message_id)
    response = await api.post(BOUNCES, content=raw, headers={"Content-Type": "message/rfc822"})
    assert response.status_code == 200, response.text
    [result] = response.json()["bounces"]
    assert (result["recipient_id"], result["kind"], result["contact_marked"]) == (ann.id, "hard", True)
    assert await _consent(api, ann.contact_id) == "bounced"
    assert (await recipient(api, ann.campaign_id, ann.id))["status"] == "bounced"
    [event] = await events(db, ann.id, "bounced")
    assert event.metadata_["status"] == "5.1.1"
    assert (await counters(db, api.tenant.id, ann.campaign_id))["bounced"] == 1


async def test_a_multipart_upload_works_and_an_unknown_message_falls_back_to_the_address(api, db) -> None:
    [bob] = await sent_campaign(api, db, ["bob@contoso.com"])
    raw = fixture("exchange_hard.eml", message_id="<not-ours@elsewhere.example>")
    response = await api.post(BOUNCES, files={"file": ("ndr.eml", raw, "message/rfc822")})
    assert response.status_code == 200, response.text
    [result] = response.json()["bounces"]
    assert (result["contact_id"], result["recipient_id"]) == (bob.contact_id, None)
    assert await _consent(api, bob.contact_id) == "bounced"
    assert (await recipient(api, bob.campaign_id, bob.id))["status"] == "sent"


async def test_soft_bounces_mark_the_address_after_three_within_seven_days(api, db) -> None:
    [cid] = await sent_campaign(api, db, ["cid@example.org"])
    raw = fixture("gmail_delayed.eml", message_id=cid.message_id)
    clock.freeze(clock.now())
    try:
        for _ in range(2):
            outcome = (await api.post(BOUNCES, content=raw, headers={"Content-Type": "message/rfc822"})).json()
            assert outcome["bounces"][0]["address_bounced"] is False
            clock.advance(timedelta(days=4))
        # Days 0, 4, 8: the first has left the 7-day window, so only two count.
        third = (await api.post(BOUNCES, content=raw, headers={"Content-Type": "message/rfc822"})).json()
        assert third["bounces"][0]["address_bounced"] is False
        assert await _consent(api, cid.contact_id) == "subscribed"
        clock.advance(timedelta(days=1))
        fourth = (await api.post(BOUNCES, content=raw, headers={"Content-Type": "message/rfc822"})).json()
    finally:
        clock.reset()
    assert fourth["bounces"][0]["address_bounced"] is True and fourth["bounces"][0]["contact_marked"] is True
    assert await _consent(api, cid.contact_id) == "bounced"
    assert (await recipient(api, cid.campaign_id, cid.id))["status"] == "bounced"


async def test_an_auto_reply_changes_nothing(api, db) -> None:
    [eve] = await sent_campaign(api, db, ["eve@example.com"])
    response = await api.post(BOUNCES, content=fixture("vacation_reply.eml"),
                              headers={"Content-Type": "message/rfc822"})
    assert response.status_code == 200
    assert response.json()["ignored"] == "auto_reply" and response.json()["bounces"] == []
    assert await _consent(api, eve.contact_id) == "subscribed"
    assert (await recipient(api, eve.campaign_id, eve.id))["status"] == "sent"


async def test_another_tenants_message_is_not_touched(api, db, app) -> None:
    import httpx

    from tests.conftest import make_tenant

    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    other = await make_tenant(db, "Other")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://clarion.test",
                                 headers=other.headers) as intruder:
        response = await intruder.post(BOUNCES, content=fixture("postfix_hard.eml", message_id=ann.message_id),
                                       headers={"Content-Type": "message/rfc822"})
    assert response.status_code == 200
    assert response.json()["bounces"][0]["recipient_id"] is None
    assert await _consent(api, ann.contact_id) == "subscribed"
    assert (await api.post(BOUNCES, content=b"x", headers={"Content-Type": "image/png"})).status_code == 415


async def test_the_worker_polls_the_maildir_and_moves_processed_messages_out_of_new(api, db, tmp_path) -> None:
    [ann, dee] = await sent_campaign(api, db, [f"ann-{uuid.uuid4().hex[:6]}@example.com",
                                               f"dee-{uuid.uuid4().hex[:6]}@legacy.example"])
    box = tmp_path / "bounces"
    maildir.ensure(box)
    (box / "new" / "1717.M1.host").write_bytes(fixture("postfix_hard.eml", message_id=ann.message_id,
                                                       to=ann.email))
    (box / "new" / "1718.M2.host").write_bytes(fixture("qmail_hard.eml", message_id=dee.message_id, to=dee.email))
    (box / "new" / "1719.M3.host").write_bytes(fixture("vacation_plain.eml"))
    assert "tracking.bounce_maildir" in registry.loops

    handled = await process_bounce_maildir(db, box, rules=BounceSettings())
    assert handled == 3
    assert list((box / "new").iterdir()) == []
    assert sorted(p.name for p in (box / "cur").iterdir()) == ["1717.M1.host:2,S", "1718.M2.host:2,S",
                                                               "1719.M3.host:2,S"]
    assert await _consent(api, ann.contact_id) == "bounced"
    assert await _consent(api, dee.contact_id) == "bounced"
    assert (await recipient(api, dee.campaign_id, dee.id))["status"] == "bounced"
    assert await process_bounce_maildir(db, box, rules=BounceSettings()) == 0


async def test_an_upload_that_is_no_message_at_all_is_not_a_500(api, db) -> None:  # type: ignore[no-untyped-def]
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU"
    response = await api.post("/api/v1/bounces", files={"file": ("file.png", png, "image/png")})
    assert response.status_code < 500, response.text
