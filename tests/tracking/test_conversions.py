"""POST /api/v1/conversions: by contact or by token, currency rule, idempotency."""

from __future__ import annotations

from tests.tracking.helpers import click_path, counters, open_path, recipient, register_link, sent_campaign

CONVERSIONS = "/api/v1/conversions"


async def test_a_conversion_by_contact_moves_the_recipient_and_grows_revenue(api, db) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"], currency="EUR")
    response = await api.post(CONVERSIONS, json={
        "campaign_id": ann.campaign_id, "contact_id": ann.contact_id, "revenue": 4_999, "currency": "eur",
        "occurred_at": "2030-01-02T10:00:00Z", "metadata": {"order": "A-1"}})
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["recipient_id"], body["revenue"], body["currency"], body["duplicate"]) == (ann.id, 4_999, "EUR",
                                                                                         False)
    assert (await recipient(api, ann.campaign_id, ann.id))["status"] == "converted"
    seen = await counters(db, api.tenant.id, ann.campaign_id)
    assert (seen["converted"], seen["revenue"]) == (1, 4_999)

    again = await api.post(CONVERSIONS, json={"campaign_id": ann.campaign_id, "contact_id": ann.contact_id,
                                              "revenue": 1_000})
    assert again.status_code == 201, again.text
    seen = await counters(db, api.tenant.id, ann.campaign_id)
    assert (seen["converted"], seen["revenue"]) == (1, 5_999)  # one converted recipient, two purchases


async def test_a_conversion_by_tracking_token(api, db) -> None:
    [ann, bob] = await sent_campaign(api, db, ["ann@example.com", "bob@example.com"])
    link = await register_link(db, api.tenant.id, ann.campaign_id, "https://shop.example/")
    by_click = await api.post(CONVERSIONS, json={"token": click_path(bob.id, link).rsplit("/", 1)[1],
                                                 "revenue": 250, "currency": "USD"})
    assert by_click.status_code == 201, by_click.text
    assert by_click.json()["contact_id"] == bob.contact_id
    by_open = await api.post(CONVERSIONS, json={"token": open_path(ann.id).rsplit("/", 1)[1].removesuffix(".gif"),
                                                "revenue": 0})
    assert by_open.status_code == 201, by_open.text
    assert (await recipient(api, ann.campaign_id, ann.id))["status"] == "converted"
    seen = await counters(db, api.tenant.id, ann.campaign_id)
    assert (seen["converted"], seen["revenue"]) == (2, 250)
    forged = await api.post(CONVERSIONS, json={"token": "n1.AAAAAAAAAAAAAAAAAAAAAA", "revenue": 1})
    assert forged.status_code == 404


async def test_currency_must_match_and_input_is_checked(api, db) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"], currency="EUR")
    wrong = await api.post(CONVERSIONS, json={"campaign_id": ann.campaign_id, "contact_id": ann.contact_id,
                                              "revenue": 100, "currency": "USD"})
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["loc"] == ["body", "currency"]
    for bad in ({"campaign_id": ann.campaign_id, "revenue": 1},                      # who converted?
                {"campaign_id": ann.campaign_id, "contact_id": ann.contact_id, "revenue": -1},
                {"campaign_id": ann.campaign_id, "contact_id": ann.contact_id,
                 "occurred_at": "2030-01-02T10:00:00"}):                            # naive time
        assert (await api.post(CONVERSIONS, json=bad)).status_code == 422, bad
    assert (await counters(db, api.tenant.id, ann.campaign_id))["revenue"] == 0


async def test_a_retried_post_with_the_same_idempotency_key_counts_once(api, db) -> None:
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    body = {"campaign_id": ann.campaign_id, "contact_id": ann.contact_id, "revenue": 1_200,
            "idempotency_key": "order-77"}
    first = await api.post(CONVERSIONS, json=body)
    replay = await api.post(CONVERSIONS, json=body)
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json()["id"] == first.json()["id"] and replay.json()["duplicate"] is True
    assert (await counters(db, api.tenant.id, ann.campaign_id))["revenue"] == 1_200


async def test_another_tenants_campaign_or_token_is_not_found(api, db, app) -> None:
    import httpx

    from tests.conftest import make_tenant

    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    other = await make_tenant(db, "Other")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://clarion.test",
                                 headers=other.headers) as intruder:
        by_ids = await intruder.post(CONVERSIONS, json={"campaign_id": ann.campaign_id,
                                                        "contact_id": ann.contact_id, "revenue": 5})
        by_token = await intruder.post(CONVERSIONS, json={
            "token": open_path(ann.id).rsplit("/", 1)[1].removesuffix(".gif"), "revenue": 5})
    assert (by_ids.status_code, by_token.status_code) == (404, 404)
    assert (await counters(db, api.tenant.id, ann.campaign_id))["revenue"] == 0
