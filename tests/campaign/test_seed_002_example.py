"""Seed 002's "Complete Step-by-Step Example", on both databases, through the public API and over real HTTP: a
WhatsApp channel on the Cloud API sandbox, a template campaign to 10,000 premium fashion customers at 250 a day,
day 1's 250 template messages arriving at the sandbox, Meta's signed delivered/read webhooks moving /stats, two
contacts who stopped after being added skipped on their day, then pause, resume and a final cancel."""

from __future__ import annotations

import secrets
import uuid
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from clarion.db import Database
from clarion.kit.clock import clock
from clarion.models import CampaignSendSchedule
from clarion.sandbox import whatsapp as sandbox
from clarion.sandbox.control import SandboxControl
from tests.fakes.serving import serve_asgi

START = date(2031, 1, 15)
DAILY_LIMIT = 250
TEMPLATE, LANGUAGE = "new_year_promo", "en_US"
# Premium customers tagged fashion; a few of them stopped WhatsApp before the campaign; some standard-tier
# customers outside the target audience come in only through the explicit number list, with a few of the
# matching ones (which the audience then does not add twice).
MATCHING, STOPPED_BEFORE, OTHERS, LISTED_MATCHING = 9_980, 5, 20, 30
TOTAL = MATCHING + OTHERS
COMPONENTS = [
    {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/sale-banner.jpg"}}]},
    {"type": "body", "parameters": [{"type": "text", "text": "{{ contact.first_name }}"},
                                    {"type": "text", "text": "50%"}]},
]
HOOK = "/webhooks/whatsapp"


def _phone(i: int) -> str:
    return f"+1415{3_000_000 + i:07d}"


# phone → (first name, tier, tags), in import order.
CUSTOMERS = {_phone(i): (f"Fan{i}", "premium", "fashion;accessories") for i in range(MATCHING + STOPPED_BEFORE)}
CUSTOMERS |= {_phone(MATCHING + STOPPED_BEFORE + i): (f"Other{i}", "standard", "fashion") for i in range(OTHERS)}


def _contacts_csv() -> bytes:
    rows = ["phone,first_name,customer_tier,tags"]
    rows += [f"{phone},{name},{tier},{tags}" for phone, (name, tier, tags) in CUSTOMERS.items()]
    return ("\n".join(rows) + "\n").encode()


def _statuses_call(account: sandbox.SandboxAccount, status: str, sent: list[tuple[str, str]],
                   at: datetime) -> dict[str, Any]:
    """One webhook call carrying `status` for each (wamid, wa_id), as Meta batches statuses."""
    stamp = str(int(at.timestamp()))
    calls = [sandbox.status_payload(account, wamid, status, recipient_id=wa_id, timestamp=stamp)
             for wamid, wa_id in sent]
    merged = calls[0]
    merged["entry"][0]["changes"][0]["value"]["statuses"] = [
        c["entry"][0]["changes"][0]["value"]["statuses"][0] for c in calls]
    return merged


async def _post_signed(client: httpx.AsyncClient, account: sandbox.SandboxAccount,
                       payload: dict[str, Any]) -> None:
    headers, body = sandbox.signed_call(payload, account.app_secret)
    response = await client.post(HOOK, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def _ok(request: Awaitable[httpx.Response], status: int = 200) -> Any:
    answered = await request
    assert answered.status_code == status, f"{answered.request.method} {answered.request.url}: {answered.text}"
    return answered.json()


async def _all_recipients(api: httpx.AsyncClient, campaign_id: str, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await _ok(api.get(f"/api/v1/campaigns/{campaign_id}/recipients",
                                 params={"limit": 500, **params, **({"cursor": cursor} if cursor else {})}))
        found += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return found


def _templates_sent(control: SandboxControl, since: int = 0) -> list[dict[str, Any]]:
    return [r.data for r in control.requests[since:]
            if r.path.endswith("/messages") and isinstance(r.data, dict) and r.data.get("type") == "template"]


async def test_seed_002_complete_example(api: httpx.AsyncClient, client: httpx.AsyncClient, db: Database) -> None:
    clock.freeze(datetime.combine(START, time(9, 0), tzinfo=UTC))
    # A business number of its own: webhooks of other tests' tenants never name it.
    account = sandbox.SandboxAccount(phone_number_id=str(10**14 + secrets.randbelow(10**14)),
                                     app_secret=secrets.token_hex(16), verify_token=secrets.token_hex(8))
    control = SandboxControl()
    wa_app = sandbox.create_app(control, account, templates={TEMPLATE: [LANGUAGE]})
    async with serve_asgi(wa_app) as graph_url:
        channel = await _ok(api.post("/api/v1/channels", json={
            "channel": "whatsapp", "provider": "whatsapp", "name": "WhatsApp Business",
            # A new number's 250 tier: 250 unique people in a rolling 24 hours, so yesterday's 250 at 09:00 free
            # their slots at exactly 09:00 today, when the next day's run comes.
            "config": {**account.channel_config(graph_url), "messaging_limit_tier": "TIER_250"}}), 201)
        assert channel["provider"] == "whatsapp"

        imported = await _ok(api.post("/api/v1/contacts/import",
                                      files={"file": ("customers.csv", _contacts_csv(), "text/csv")}))
        assert (imported["created"], imported["rejected"]) == (MATCHING + STOPPED_BEFORE + OTHERS, [])
        stopped_before = [_phone(MATCHING + i) for i in range(STOPPED_BEFORE)]
        for number in stopped_before:
            [contact] = (await _ok(api.get("/api/v1/contacts", params={"q": number})))["items"]
            await _ok(api.patch(f"/api/v1/contacts/{contact['id']}",
                                json={"subscriptions": {"whatsapp": "unsubscribed"}}))

        # Step 1: the campaign, a draft.
        created = await _ok(api.post("/api/v1/campaigns", json={
            "name": "New Year Sale 2025", "description": "50% off everything", "template_name": TEMPLATE,
            "language_code": LANGUAGE, "template_components": COMPONENTS, "daily_send_limit": DAILY_LIMIT,
            "priority": 5, "target_audience": {"customer_tier": "premium", "tags": ["fashion"]}}), 201)
        campaign_id = created["id"]
        assert (created["status"], created["channel"], created["total_target"]) == ("draft", "whatsapp", 0)
        assert created["message"] == "Campaign 'New Year Sale 2025' created successfully"

        # Step 2: recipients, by number and then from the target audience; nobody twice, nobody unsubscribed.
        listed = [_phone(MATCHING + STOPPED_BEFORE + i) for i in range(OTHERS)]
        listed += [_phone(i) for i in range(LISTED_MATCHING)]
        by_number = await _ok(api.post(f"/api/v1/campaigns/{campaign_id}/recipients",
                                       json={"phone_numbers": [p.removeprefix("+") for p in listed]}))
        assert (by_number["recipients_added"], by_number["unknown"]) == (len(listed), [])
        by_audience = await _ok(api.post(f"/api/v1/campaigns/{campaign_id}/recipients",
                                         params={"use_target_audience": "true"}))
        assert by_audience["recipients_added"] == MATCHING - LISTED_MATCHING
        assert (by_audience["skipped_duplicates"], by_audience["skipped_unsubscribed"]) == (LISTED_MATCHING,
                                                                                          STOPPED_BEFORE)
        assert by_audience["total_recipients"] == TOTAL == 10_000
        draft = await _ok(api.get(f"/api/v1/campaigns/{campaign_id}"))
        assert (draft["status"], draft["total_target"], draft["pending"]) == ("draft", TOTAL, TOTAL)

        # Step 3: activation lays 10,000 out over 40 days of 250.
        activated = await _ok(api.post(f"/api/v1/campaigns/{campaign_id}/activate",
                                       params={"start_date": START.isoformat()}))
        last_day = START + timedelta(days=39)
        assert activated["recipients_scheduled"] == TOTAL and activated["daily_limit"] == DAILY_LIMIT
        assert (activated["estimated_days"], activated["estimated_completion_date"]) == (40, last_day.isoformat())
        assert activated["status"] == "running"  # seed 002's "active"
        async with db.transaction() as session:
            schedule = (await session.execute(select(CampaignSendSchedule).where(
                CampaignSendSchedule.campaign_id == uuid.UUID(campaign_id))
                .order_by(CampaignSendSchedule.send_date))).scalars().all()
        assert [s.send_date for s in schedule] == [START + timedelta(days=d) for d in range(40)]
        assert {(s.batch_size, s.messages_remaining, s.status) for s in schedule} == {(250, 250, "pending")}
        recipients = await _all_recipients(api, campaign_id)
        per_day = Counter(r["scheduled_send_date"] for r in recipients)
        assert len(recipients) == TOTAL and set(per_day.values()) == {DAILY_LIMIT} and len(per_day) == 40

        # Two recipients of day 2 leave after being added: one texts STOP to the business number, one is
        # unsubscribed through the API.
        day_two = [r for r in recipients if r["scheduled_send_date"] == (START + timedelta(days=1)).isoformat()]
        texted_stop, patched = day_two[0], day_two[1]
        await _post_signed(client, account, sandbox.inbound_text_payload(account, texted_stop["phone"], "STOP"))
        await _ok(api.patch(f"/api/v1/contacts/{patched['contact_id']}",
                            json={"subscriptions": {"whatsapp": "unsubscribed"}}))

        # Step 4, day 1: exactly 250 template messages go out, in the Cloud API's format, rendered per contact.
        day_one = await _ok(api.post("/api/v1/process-daily"))
        assert (day_one["date"], day_one["messages_sent"], day_one["campaigns_processed"]) == (START.isoformat(),
                                                                                              DAILY_LIMIT, 1)
        sent = _templates_sent(control)
        assert len(sent) == DAILY_LIMIT
        for message in sent:
            assert message["messaging_product"] == "whatsapp" and message["recipient_type"] == "individual"
            template = message["template"]
            assert (template["name"], template["language"]) == (TEMPLATE, {"code": LANGUAGE})
            header, body = template["components"]
            assert header == COMPONENTS[0]
            assert body["parameters"] == [{"type": "text", "text": CUSTOMERS["+" + message["to"].removeprefix("+")][0]},
                                          {"type": "text", "text": "50%"}]
        day_one_phones = {"+" + m["to"].removeprefix("+") for m in sent}
        assert day_one_phones == {r["phone"] for r in recipients if r["scheduled_send_date"] == START.isoformat()}
        queued = await _all_recipients(api, campaign_id, status="sent")
        assert len(queued) == DAILY_LIMIT and all(r["provider_message_id"].startswith("wamid.") for r in queued)

        # Step 5: Meta's signed status webhooks; 240 delivered, 180 of them read.
        wa_sent = [(r["provider_message_id"], r["phone"].removeprefix("+")) for r in queued]
        at = clock.now() + timedelta(minutes=5)
        for chunk in range(0, 240, 60):
            await _post_signed(client, account, _statuses_call(account, "delivered", wa_sent[chunk:chunk + 60], at))
        for chunk in range(0, 180, 60):
            await _post_signed(client, account, _statuses_call(account, "read", wa_sent[chunk:chunk + 60], at))
        stats = await _ok(api.get(f"/api/v1/campaigns/{campaign_id}/stats"))
        assert (stats["sent"], stats["delivered"], stats["read"], stats["pending"]) == (250, 240, 180, 9_750)
        assert (stats["delivery_rate"], stats["read_rate"], stats["progress_percentage"]) == (96.0, 72.0, 2.5)
        assert stats["estimated_completion_date"] == last_day.isoformat() and stats["total_target"] == TOTAL

        # Pause: day 2's processing leaves the campaign alone; resume: day 2 goes out without the two who left.
        clock.advance(timedelta(days=1))
        paused = await _ok(api.post(f"/api/v1/campaigns/{campaign_id}/pause"))
        assert paused["status"] == "paused" and paused["message"].startswith("Campaign 'New Year Sale 2025'")
        before = len(control.requests)
        assert (await _ok(api.post("/api/v1/process-daily")))["messages_sent"] == 0
        assert len(control.requests) == before
        assert (await _ok(api.post(f"/api/v1/campaigns/{campaign_id}/resume")))["status"] == "running"
        assert (await _ok(api.post("/api/v1/process-daily")))["messages_sent"] == DAILY_LIMIT - 2
        day_two_sent = {"+" + m["to"].removeprefix("+") for m in _templates_sent(control, before)}
        assert len(day_two_sent) == DAILY_LIMIT - 2
        assert not day_two_sent & {texted_stop["phone"], patched["phone"]}
        skipped = await _all_recipients(api, campaign_id, status="skipped")
        assert {r["id"] for r in skipped} == {texted_stop["id"], patched["id"]}
        assert {r["failure_reason"] for r in skipped} == {"no longer subscribed to whatsapp"}
        stats = await _ok(api.get(f"/api/v1/campaigns/{campaign_id}/stats"))
        assert (stats["sent"], stats["skipped"], stats["pending"]) == (498, 2, TOTAL - 500)

        # Cancel is final: nothing resumes or reactivates it, and no later day sends.
        cancelled = await _ok(api.post(f"/api/v1/campaigns/{campaign_id}/cancel"))
        assert cancelled["status"] == "cancelled" and cancelled["pending"] == 0
        for refused in (api.post(f"/api/v1/campaigns/{campaign_id}/resume"),
                        api.post(f"/api/v1/campaigns/{campaign_id}/activate",
                                 params={"start_date": clock.today().isoformat()})):
            answer = await refused
            assert answer.status_code == 409, answer.text
            assert "cancelled" in answer.json()["detail"]
        clock.advance(timedelta(days=1))
        assert (await _ok(api.post("/api/v1/process-daily")))["messages_sent"] == 0
        assert len(_templates_sent(control)) == 2 * DAILY_LIMIT - 2
    assert (await _ok(api.get(f"/api/v1/campaigns/{campaign_id}/stats")))["status"] == "cancelled"

