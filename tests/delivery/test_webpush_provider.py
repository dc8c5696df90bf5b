"""The Web Push provider over real HTTP against the sandbox push service (which also decrypts as the browser
would): encryption and VAPID on the wire, fan-out to every subscription of a contact, gone subscriptions, error
classification, VAPID token reuse, config rules — and the sandbox's own push-service checks."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pydantic import ValidationError

from clarion.delivery.channels import registry
from clarion.delivery.channels.base import OutgoingMessage, TextPayload
from clarion.delivery.channels.webpush import WebPushConfig, WebPushProvider, generate_vapid_keys
from clarion.delivery.channels.webpush.provider import MAX_PAYLOAD, notification
from clarion.sandbox import webpush as sandbox
from clarion.sandbox.control import SandboxControl
from tests.fakes.serving import serve_asgi

KEYS = generate_vapid_keys()
SUBJECT = "mailto:push@shop.example"


def config(**overrides: Any) -> dict[str, Any]:
    return {"vapid_private_key": KEYS["vapid_private_key"], "vapid_subject": SUBJECT, **overrides}


def push(ref: str, subscriptions: list[sandbox.BrowserSubscription], body: str = "20% off today",
         **fields: Any) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, to=f"contact-{ref}", channel="push", payload=TextPayload(
        text=body, fields={"subscriptions": [s.to_json() for s in subscriptions], **fields}))


@asynccontextmanager
async def push_service(control: SandboxControl | None = None) -> AsyncIterator[tuple[str, sandbox.PushService,
                                                                                     SandboxControl]]:
    control = control or SandboxControl()
    service = sandbox.PushService()
    async with serve_asgi(sandbox.create_app(control, service)) as url:
        yield url, service, control


def provider(**overrides: Any) -> WebPushProvider:
    built = registry.build_provider("webpush", config(**overrides))
    assert isinstance(built, WebPushProvider)
    return built


async def test_every_browser_of_the_contact_gets_the_notification_decrypted() -> None:
    async with push_service() as (url, service, control), provider(ttl=600, urgency="high") as p:
        laptop, phone = service.subscribe(url), service.subscribe(url, application_server_key=KEYS["vapid_public_key"])
        [result] = await p.send([push("r1", [laptop, phone], title="Spring sale", url="https://shop.example/s",
                                      icon="https://shop.example/i.png")])
    assert result.ok and result.provider_message_id and result.provider_message_id.startswith(f"{url}/m/")
    assert set(result.delivered_addresses) == {laptop.endpoint, phone.endpoint} and result.expired_addresses == ()
    expected = {"title": "Spring sale", "body": "20% off today", "url": "https://shop.example/s",
                "icon": "https://shop.example/i.png"}
    assert [r.json() for r in service.received_by(laptop)] == [expected]
    assert [r.json() for r in service.received_by(phone)] == [expected]
    for received in service.received:
        assert (received.ttl, received.urgency) == (600, "high")
        assert received.claims["aud"] == url and received.claims["sub"] == SUBJECT
    headers = control.requests[0].headers
    assert headers["content-encoding"] == "aes128gcm" and headers["content-type"] == "application/octet-stream"


async def test_a_batch_fans_out_and_keeps_one_result_per_message_in_order() -> None:
    async with push_service(SandboxControl(latency_seconds=0.02)) as (url, service, _), provider() as p:
        batch = [push(f"r{i}", [service.subscribe(url) for _ in range(1 + i % 3)]) for i in range(30)]
        results = await p.send(batch)
    assert [r.ref for r in results] == [m.ref for m in batch]
    assert all(r.ok for r in results)
    assert len(service.received) == sum(1 + i % 3 for i in range(30))


async def test_a_gone_subscription_is_reported_and_the_message_still_counts_as_sent() -> None:
    async with push_service() as (url, service, _), provider() as p:
        alive, gone = service.subscribe(url), service.subscribe(url)
        service.unsubscribe(gone.endpoint)
        unknown = sandbox.BrowserSubscription(id="nope", endpoint=f"{url}/push/nope",
                                              private_key=ec.generate_private_key(ec.SECP256R1()),
                                              auth_secret=b"0123456789abcdef")
        [result] = await p.send([push("r1", [alive, gone, unknown])])
    assert result.ok and result.delivered_addresses == (alive.endpoint,)
    assert set(result.expired_addresses) == {gone.endpoint, unknown.endpoint}
    assert not result.opted_out


async def test_when_every_subscription_is_gone_the_contact_opted_out() -> None:
    async with push_service() as (url, service, _), provider() as p:
        first, second = service.subscribe(url), service.subscribe(url)
        service.unsubscribe(first.endpoint)
        service.unsubscribe(second.endpoint)
        [result] = await p.send([push("r1", [first, second])])
    assert not result.ok and result.opted_out and not result.transient
    assert set(result.expired_addresses) == {first.endpoint, second.endpoint}
    assert "every push subscription of the contact is gone" in (result.error or "")


async def test_throttling_is_transient_with_retry_after_and_beats_a_permanent_refusal() -> None:
    async with push_service() as (url, service, control), provider() as p:
        control.fail_next("transient")
        [throttled] = await p.send([push("r1", [service.subscribe(url)])])
        control.fail_next("transient")
        control.fail_next("permanent")
        [mixed] = await p.send([push("r2", [service.subscribe(url), service.subscribe(url)])])
        control.fail_next("permanent")
        [refused] = await p.send([push("r3", [service.subscribe(url)])])
    assert not throttled.ok and throttled.transient and throttled.retry_after == sandbox.RETRY_AFTER_SECONDS
    assert "429" in (throttled.error or "")
    assert not mixed.ok and mixed.transient  # one browser may take it later: retry
    assert not refused.ok and not refused.transient and not refused.opted_out and "400" in (refused.error or "")


async def test_a_vapid_key_the_subscription_was_not_made_with_is_refused_permanently() -> None:
    other = generate_vapid_keys()
    async with push_service() as (url, service, _), provider() as p:
        restricted = service.subscribe(url, application_server_key=other["vapid_public_key"])
        [result] = await p.send([push("r1", [restricted])])
    assert not result.ok and not result.transient and "403" in (result.error or "")
    assert "not the key this subscription was made with" in (result.error or "")


async def test_the_vapid_token_is_signed_once_per_push_service_and_reused() -> None:
    async with push_service() as (url, service, control), provider() as p:
        await p.send([push("r1", [service.subscribe(url)])])
        await p.send([push("r2", [service.subscribe(url)])])
    first, second = (r.headers["authorization"] for r in control.requests)
    assert first == second
    token = first.split("t=", 1)[1].split(",", 1)[0]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert 11 * 3600 < claims["exp"] - time.time() <= 12 * 3600


async def test_what_cannot_be_sent_fails_alone_before_any_request() -> None:
    async with push_service() as (url, service, control), provider() as p:
        good = service.subscribe(url)
        broken = {"endpoint": f"{url}/push/x", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}
        no_subscription = push("r1", [])
        too_big = push("r2", [good], body="x" * MAX_PAYLOAD)
        bad_keys = OutgoingMessage(ref="r3", to="c", channel="push",
                                   payload=TextPayload(text="hi", fields={"subscriptions": [broken]}))
        ok = push("r4", [good])
        results = await p.send([no_subscription, too_big, bad_keys, ok])
    assert [r.ok for r in results] == [False, False, False, True]
    assert all(not r.transient for r in results[:3])
    assert "no push subscription" in (results[0].error or "")
    assert f"push services take {MAX_PAYLOAD}" in (results[1].error or "")
    assert "cannot encrypt" in (results[2].error or "")
    assert len(control.requests) == 1


async def test_an_unreachable_push_service_is_transient() -> None:
    async with provider(timeout=2) as p:
        subscription = sandbox.PushService().subscribe("http://127.0.0.1:9")
        [result] = await p.send([push("r1", [subscription])])
    assert not result.ok and result.transient and "cannot reach the push service" in (result.error or "")


async def test_check_signs_a_token_with_the_configured_key() -> None:
    async with provider() as p:
        await p.check()


def test_the_notification_is_the_json_a_service_worker_shows() -> None:
    payload = TextPayload(text="Body", fields={"title": "T", "url": "", "subscriptions": []})
    assert json.loads(notification(payload)) == {"title": "T", "body": "Body"}


def test_config_takes_pem_or_raw_keys_and_derives_the_public_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    expected = base64.urlsafe_b64encode(key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)).decode().rstrip("=")
    assert WebPushConfig.model_validate(config(vapid_private_key=pem)).vapid_public_key == expected
    raw = WebPushConfig.model_validate(config())
    assert raw.vapid_public_key == KEYS["vapid_public_key"]
    assert WebPushConfig.model_validate(config(vapid_public_key=KEYS["vapid_public_key"])).vapid_public_key


@pytest.mark.parametrize(("field", "value"), [
    ("vapid_private_key", "not a key"),
    ("vapid_subject", "push@shop.example"),
    ("vapid_subject", "http://shop.example"),
    ("ttl", -1),
    ("urgency", "urgent"),
    ("max_concurrency", 0),
])
def test_config_rules(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        WebPushConfig.model_validate(config(**{field: value}))
    assert caught.value.errors()[0]["loc"] == (field,)


def test_a_public_key_of_another_pair_is_refused() -> None:
    with pytest.raises(ValidationError, match="does not belong"):
        WebPushConfig.model_validate(config(vapid_public_key=generate_vapid_keys()["vapid_public_key"]))


def test_generated_keys_load_and_match() -> None:
    keys = generate_vapid_keys()
    assert len(base64.urlsafe_b64decode(keys["vapid_private_key"] + "=")) == 32
    assert WebPushConfig.model_validate(config(**keys)).vapid_public_key == keys["vapid_public_key"]


# --- the sandbox push service itself -------------------------------------------------------------------------

async def test_the_sandbox_checks_pushes_like_a_push_service() -> None:
    vapid = Vapid.from_string(KEYS["vapid_private_key"])
    async with push_service() as (url, service, _), httpx.AsyncClient() as client:
        subscription = service.subscribe(url)
        endpoint = subscription.endpoint

        def auth(**claims: Any) -> str:
            base = {"aud": url, "sub": SUBJECT, "exp": int(time.time()) + 3600}
            return vapid.sign({**base, **claims})["Authorization"]

        no_ttl = await client.post(endpoint, headers={"Authorization": auth()})
        no_auth = await client.post(endpoint, headers={"TTL": "60"})
        wrong_aud = await client.post(endpoint, headers={"TTL": "60", "Authorization": auth(aud="https://x.example")})
        expired = await client.post(endpoint, headers={"TTL": "60", "Authorization": auth(exp=int(time.time()) - 5)})
        token = auth().split("t=", 1)[1].split(",", 1)[0]
        someone_else = generate_vapid_keys()["vapid_public_key"]  # our token presented under another key
        forged = await client.post(endpoint, headers={"TTL": "60", "Authorization": f"vapid t={token},k={someone_else}"})
        not_encrypted = await client.post(endpoint, content=b"hello", headers={"TTL": "60", "Authorization": auth(),
                                                                               "Content-Encoding": "aes128gcm"})
        too_big = await client.post(endpoint, content=b"x" * 5000, headers={"TTL": "60", "Authorization": auth(),
                                                                            "Content-Encoding": "aes128gcm"})
        empty = await client.post(endpoint, headers={"TTL": "60", "Authorization": auth()})
        missing = await client.post(f"{url}/push/unknown", headers={"TTL": "60", "Authorization": auth()})
    assert no_ttl.status_code == 400 and no_ttl.json()["errno"] == 111
    assert no_auth.status_code == 401 and no_auth.json()["errno"] == 109
    assert wrong_aud.status_code == 403 and "aud" in wrong_aud.json()["message"]
    assert expired.status_code == 403 and "exp" in expired.json()["message"]
    assert forged.status_code == 403 and "signature" in forged.json()["message"]
    assert not_encrypted.status_code == 400 and "does not decrypt" in not_encrypted.json()["message"]
    assert too_big.status_code == 413
    assert empty.status_code == 201 and empty.headers["location"].startswith(f"{url}/m/")  # a tickle: no payload
    assert missing.status_code == 404 and set(missing.json()) == {"code", "errno", "error", "message", "more_info"}
