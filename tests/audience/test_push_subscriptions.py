"""POST/GET/DELETE /api/v1/push/subscriptions on both databases: registering a browser for a contact (and its push
consent), updating by endpoint, keyset pages, validation, and the pipeline's reads and pruning."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from clarion.audience import service as audience
from clarion.db import Database
from clarion.sandbox.webpush import PushService
from tests.conftest import make_tenant

URL = "/api/v1/push/subscriptions"


def browser(base: str = "https://updates.push.example") -> dict[str, Any]:
    subscription = PushService().subscribe(base).to_json()
    return {"endpoint": subscription["endpoint"], "keys": subscription["keys"]}


async def new_contact(api: httpx.AsyncClient, **fields: Any) -> str:
    response = await api.post("/api/v1/contacts", json={"email": f"{uuid.uuid4().hex[:10]}@example.com", **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_registering_a_browser_subscribes_the_contact_to_push(api: httpx.AsyncClient) -> None:
    contact_id = await new_contact(api, subscriptions={"push": "unsubscribed"})
    given = browser()
    response = await api.post(URL, json={"contact_id": contact_id, **given, "user_agent": "Firefox/128"})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["contact_id"] == contact_id and created["endpoint"] == given["endpoint"]
    assert created["keys"] == given["keys"] and created["user_agent"] == "Firefox/128"
    assert created["last_success_at"] is None
    contact = (await api.get(f"/api/v1/contacts/{contact_id}")).json()
    assert contact["subscriptions"]["push"]["status"] == "subscribed"
    assert contact["subscriptions"]["push"]["source"] == "push_register"
    assert (await api.get(f"{URL}/{created['id']}")).json() == created


async def test_the_same_endpoint_again_updates_it(api: httpx.AsyncClient) -> None:
    first, second = await new_contact(api), await new_contact(api)
    given = browser()
    created = (await api.post(URL, json={"contact_id": first, **given})).json()
    new_keys = browser()["keys"]  # the browser re-subscribed: new keys, same endpoint
    again = await api.post(URL, json={"contact_id": second, "endpoint": given["endpoint"], "keys": new_keys})
    assert again.status_code == 200, again.text
    updated = again.json()
    assert updated["id"] == created["id"] and updated["contact_id"] == second and updated["keys"] == new_keys
    assert (await api.get(URL, params={"contact_id": first})).json()["items"] == []


async def test_listing_is_keyset_paginated_and_filtered_by_contact(api: httpx.AsyncClient) -> None:
    contact_id, other = await new_contact(api), await new_contact(api)
    ids = {(await api.post(URL, json={"contact_id": contact_id, **browser()})).json()["id"] for _ in range(3)}
    await api.post(URL, json={"contact_id": other, **browser()})
    seen: list[str] = []
    cursor = None
    while True:
        page = (await api.get(URL, params={"contact_id": contact_id, "limit": 2,
                                           **({"cursor": cursor} if cursor else {})})).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert set(seen) == ids and len(seen) == 3 and seen == sorted(seen)
    assert len((await api.get(URL)).json()["items"]) == 4


async def test_deleting_a_subscription(api: httpx.AsyncClient) -> None:
    contact_id = await new_contact(api)
    created = (await api.post(URL, json={"contact_id": contact_id, **browser()})).json()
    assert (await api.delete(f"{URL}/{created['id']}")).status_code == 204
    gone = await api.get(f"{URL}/{created['id']}")
    assert gone.status_code == 404 and gone.headers["content-type"].startswith("application/problem+json")
    assert (await api.delete(f"{URL}/{created['id']}")).status_code == 404


async def test_deleting_the_contact_deletes_its_subscriptions(api: httpx.AsyncClient) -> None:
    contact_id = await new_contact(api)
    created = (await api.post(URL, json={"contact_id": contact_id, **browser()})).json()
    assert (await api.delete(f"/api/v1/contacts/{contact_id}")).status_code == 204
    assert (await api.get(f"{URL}/{created['id']}")).status_code == 404


@pytest.mark.parametrize(("change", "where"), [
    ({"endpoint": "http://push.example/x"}, ["body", "endpoint"]),
    ({"endpoint": "ftp://push.example/x"}, ["body", "endpoint"]),
    ({"endpoint": "https://10.0.0.8/push/x"}, ["body", "endpoint"]),
    ({"endpoint": "https://169.254.169.254/latest"}, ["body", "endpoint"]),
    ({"keys": {"p256dh": "BAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, ["body", "keys", "p256dh"]),
    ({"keys": {"p256dh": "B" + "A" * 86, "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, ["body", "keys", "p256dh"]),
    ({"keys": {"p256dh": "not base64!", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}, ["body", "keys", "p256dh"]),
    ({"keys": "auth"}, ["body", "keys"]),
    ({"expirationTime": None}, ["body", "expirationTime"]),
])
async def test_bad_subscriptions_are_422_naming_the_field(api: httpx.AsyncClient, change: dict[str, Any],
                                                          where: list[str]) -> None:
    contact_id = await new_contact(api)
    body = {"contact_id": contact_id, **browser(), **change}
    response = await api.post(URL, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert any(error["loc"] == where for error in response.json()["errors"]), response.json()


async def test_a_short_auth_secret_and_a_missing_key_are_422(api: httpx.AsyncClient) -> None:
    contact_id = await new_contact(api)
    given = browser()
    short = await api.post(URL, json={"contact_id": contact_id, "endpoint": given["endpoint"],
                                      "keys": {"p256dh": given["keys"]["p256dh"], "auth": "AAAA"}})
    missing = await api.post(URL, json={"contact_id": contact_id, "endpoint": given["endpoint"],
                                        "keys": {"p256dh": given["keys"]["p256dh"]}})
    assert short.status_code == 422 and short.json()["errors"][0]["loc"] == ["body", "keys", "auth"]
    assert missing.status_code == 422 and missing.json()["errors"][0]["loc"] == ["body", "keys", "auth"]


async def test_a_local_sandbox_endpoint_is_allowed_over_http(api: httpx.AsyncClient) -> None:
    contact_id = await new_contact(api)
    response = await api.post(URL, json={"contact_id": contact_id, **browser("http://127.0.0.1:8099")})
    assert response.status_code == 201, response.text


async def test_a_contact_that_is_not_the_tenants_is_404(api: httpx.AsyncClient, db: Database) -> None:
    unknown = await api.post(URL, json={"contact_id": str(uuid.uuid4()), **browser()})
    theirs = await new_contact(api)
    other = await make_tenant(db, "Tenant B")
    foreign = await api.post(URL, json={"contact_id": theirs, **browser()}, headers=other.headers)
    for response in (unknown, foreign):
        assert response.status_code == 404 and "contact" in response.json()["detail"]
    assert (await api.get(URL, params={"contact_id": theirs})).json()["items"] == []


async def test_the_pipeline_reads_targets_and_prunes_gone_endpoints(api: httpx.AsyncClient, db: Database) -> None:
    tenant_id = api.tenant.id  # type: ignore[attr-defined]
    contact_id, lonely = uuid.UUID(await new_contact(api)), uuid.UUID(await new_contact(api))
    kept, dropped = browser(), browser()
    for given in (kept, dropped):
        assert (await api.post(URL, json={"contact_id": str(contact_id), **given})).status_code == 201
    async with db.transaction() as session:
        targets = await audience.push_targets(session, tenant_id, [contact_id, lonely, contact_id])
        removed = await audience.record_push_outcomes(session, tenant_id, delivered=[kept["endpoint"]],
                                                      expired=[dropped["endpoint"], "https://push.example/never"])
    assert list(targets) == [contact_id]
    assert sorted(t["endpoint"] for t in targets[contact_id]) == sorted([kept["endpoint"], dropped["endpoint"]])
    assert all(set(t["keys"]) == {"p256dh", "auth"} for t in targets[contact_id])
    assert removed == 1
    [left] = (await api.get(URL, params={"contact_id": str(contact_id)})).json()["items"]
    assert left["endpoint"] == kept["endpoint"] and left["last_success_at"] is not None
