"""The WhatsApp Cloud API provider beyond the shared contract: settings, the credentials check, every error
code's meaning, batches, replies, and webhooks (handshake, signatures, statuses, inbound texts, consent), all
over real HTTP against the sandbox or a Graph-speaking fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clarion.delivery.channels import registry
from clarion.delivery.channels.base import (
    STATUS_FAILED,
    ChannelCheckFailed,
    EmailPayload,
    InboundMessage,
    OutgoingMessage,
    TextPayload,
    WebhookRejected,
    WebhookRequest,
)
from clarion.delivery.channels.whatsapp import WhatsAppConfig, WhatsAppProvider
from clarion.errors import Invalid
from clarion.sandbox import whatsapp as sandbox
from clarion.sandbox.control import SandboxControl
from tests.delivery.contract.whatsapp import ACCOUNT, TEMPLATE, webhook_request
from tests.fakes.serving import InFlight, serve_asgi

OTHER = sandbox.SandboxAccount(phone_number_id="200000000000002", app_secret="other-secret")


def provider_for(url: str, **overrides: Any) -> WhatsAppProvider:
    provider = registry.build_provider("whatsapp", {**ACCOUNT.channel_config(url), **overrides})
    assert isinstance(provider, WhatsAppProvider)
    return provider


def template_message(ref: str, to: str = "+447700900123") -> OutgoingMessage:
    return OutgoingMessage(ref=ref, to=to, channel="whatsapp",
                           payload=TextPayload(text="", fields={"template": TEMPLATE}))


def signed(payload: dict[str, Any], account: sandbox.SandboxAccount = ACCOUNT) -> WebhookRequest:
    return webhook_request(*sandbox.signed_call(payload, account.app_secret))


def merged(*payloads: dict[str, Any]) -> dict[str, Any]:
    """One webhook call carrying the entries of several (Meta batches changes of many numbers)."""
    return {"object": "whatsapp_business_account", "entry": [e for p in payloads for e in p["entry"]]}


@asynccontextmanager
async def running_sandbox(**options: Any):  # type: ignore[no-untyped-def]
    control = SandboxControl()
    app = sandbox.create_app(control, ACCOUNT, status_delay_seconds=0.01, **options)
    async with serve_asgi(app) as url:
        yield url, control, app


# --- settings -------------------------------------------------------------------------------------------------

def test_defaults_and_accepted_spellings() -> None:
    config = registry.validate_config("whatsapp", {**ACCOUNT.channel_config("https://graph.example/"),
                                                   "messaging_limit_tier": "TIER_10K"})
    assert isinstance(config, WhatsAppConfig)
    assert (config.api_version, config.max_concurrency, config.messaging_limit_tier) == ("v21.0", 50, 10000)
    assert config.api_base_url == "https://graph.example"
    assert ACCOUNT.access_token not in repr(config) and ACCOUNT.app_secret not in repr(config)
    assert WhatsAppConfig.model_validate({**config.model_dump(), "access_token": "t", "app_secret": "s",
                                          "verify_token": "v"}).messaging_limit_tier == 10000
    assert WhatsAppConfig(**{**ACCOUNT.channel_config("https://g.example"),
                             "messaging_limit_tier": "unlimited"}).messaging_limit_tier == "unlimited"
    assert WhatsAppConfig(**{**ACCOUNT.channel_config("https://g.example"),
                             "messaging_limit_tier": "2000"}).messaging_limit_tier == 2000
    assert WhatsAppProvider.default_rate_limit_per_second == 80


@pytest.mark.parametrize(("change", "field"), [
    ({"phone_number_id": "+15550100"}, "phone_number_id"),
    ({"access_token": ""}, "access_token"),
    ({"app_secret": None}, "app_secret"),
    ({"api_version": "21"}, "api_version"),
    ({"api_base_url": "ftp://graph.example"}, "api_base_url"),
    ({"api_base_url": "https://graph.example/?debug=1"}, "api_base_url"),
    ({"messaging_limit_tier": 500}, "messaging_limit_tier"),
    ({"messaging_limit_tier": "TIER_1M"}, "messaging_limit_tier"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"business_account_id": "waba"}, "business_account_id"),
    ({"sender": "me"}, "sender"),
])
def test_bad_settings_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as caught:
        registry.validate_config("whatsapp", {**ACCOUNT.channel_config("https://g.example"), **change})
    assert ["config", field] in [error["loc"] for error in caught.value.errors or []]


def test_a_missing_verify_token_is_refused() -> None:
    config = ACCOUNT.channel_config("https://g.example")
    del config["verify_token"]
    with pytest.raises(Invalid, match="verify_token"):
        registry.validate_config("whatsapp", config)


async def test_the_channels_api_stores_a_whatsapp_account_and_checks_it(api: httpx.AsyncClient) -> None:
    async with running_sandbox() as (url, control, _):
        created = await api.post("/api/v1/channels", json={
            "channel": "whatsapp", "provider": "whatsapp", "name": "Sandbox number",
            "config": ACCOUNT.channel_config(url)})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["config"]["phone_number_id"] == ACCOUNT.phone_number_id
        for secret in (ACCOUNT.access_token, ACCOUNT.app_secret, ACCOUNT.verify_token):
            assert secret not in created.text
        assert body["config"]["access_token"].startswith("••••")

        checked = await api.post(f"/api/v1/channels/{body['id']}/check")
        assert checked.status_code == 200, checked.text
        assert [r.path for r in control.requests] == [f"/v21.0/{ACCOUNT.phone_number_id}"]

        bad = (await api.post("/api/v1/channels", json={
            "channel": "whatsapp", "provider": "whatsapp", "name": "Wrong token",
            "config": {**ACCOUNT.channel_config(url), "access_token": "expired"}})).json()
        refused = await api.post(f"/api/v1/channels/{bad['id']}/check")
    assert refused.status_code == 422
    assert refused.json()["code"] == "channel_check_failed"
    assert ["config", "access_token"] in [e["loc"] for e in refused.json()["errors"]]

    invalid = await api.post("/api/v1/channels", json={
        "channel": "whatsapp", "provider": "whatsapp", "name": "Bad tier",
        "config": {**ACCOUNT.channel_config("https://g.example"), "messaging_limit_tier": 300}})
    assert invalid.status_code == 422
    assert ["body", "config", "messaging_limit_tier"] in [e["loc"] for e in invalid.json()["errors"]]


# --- check() --------------------------------------------------------------------------------------------------

async def test_check_asks_the_graph_api_about_the_number() -> None:
    async with running_sandbox() as (url, control, _), provider_for(url) as provider:
        await provider.check()
    [request] = control.requests
    assert request.method == "GET" and request.path == f"/v21.0/{ACCOUNT.phone_number_id}"
    assert request.headers["authorization"] == f"Bearer {ACCOUNT.access_token}"
    assert set(request.data["fields"].split(",")) == {"display_phone_number", "verified_name", "quality_rating",
                                                      "messaging_limit_tier"}


@pytest.mark.parametrize(("overrides", "field", "says"), [
    ({"access_token": "revoked"}, "access_token", "access token was refused"),
    ({"phone_number_id": "123456789"}, "phone_number_id", "no such phone number"),
])
async def test_check_failures_point_at_the_setting(overrides: dict[str, str], field: str, says: str) -> None:
    async with running_sandbox() as (url, _, _), provider_for(url, **overrides) as provider:
        with pytest.raises(ChannelCheckFailed, match=says) as caught:
            await provider.check()
    assert caught.value.errors and caught.value.errors[0]["loc"] == ["config", field]


async def test_check_of_an_unreachable_api() -> None:
    async with serve_asgi(Starlette()) as url:
        pass  # the port is free again: nothing listens there
    async with provider_for(url) as provider:
        with pytest.raises(ChannelCheckFailed, match="cannot reach") as caught:
            await provider.check()
    assert caught.value.errors and caught.value.errors[0]["loc"] == ["config", "api_base_url"]


# --- sending --------------------------------------------------------------------------------------------------

async def test_plain_text_goes_as_a_text_message() -> None:
    message = OutgoingMessage(ref="t1", to="+14155550123", channel="whatsapp", payload=TextPayload(text="Hi ✓"))
    async with running_sandbox() as (url, control, _), provider_for(url) as provider:
        [result] = await provider.send([message])
    assert result.ok and result.provider_message_id and result.provider_message_id.startswith("wamid.")
    assert result.billable_units == 1
    assert control.requests[0].data == {"messaging_product": "whatsapp", "recipient_type": "individual",
                                        "to": "14155550123", "type": "text", "text": {"body": "Hi ✓"},
                                        "biz_opaque_callback_data": "t1"}


async def test_a_template_without_components_leaves_them_out() -> None:
    bare = {"name": "hello_world", "language": {"code": "en_US"}, "components": []}
    message = OutgoingMessage(ref="b", to="+14155550123", channel="whatsapp",
                              payload=TextPayload(text="", fields={"template": bare}))
    async with running_sandbox(templates={"hello_world": ["en_US"]}) as (url, control, _), \
            provider_for(url) as provider:
        [result] = await provider.send([message])
    assert result.ok
    assert control.requests[0].data["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


async def test_a_batch_keeps_its_order_and_refuses_unsendable_messages_without_a_request() -> None:
    batch = [template_message(f"m{i}", to=f"+4477009{i:05d}") for i in range(30)]
    batch[3] = template_message("bad-number", to="+44 7700 900123")
    batch[7] = OutgoingMessage(ref="email", to="+447700900001", channel="whatsapp",
                               payload=EmailPayload(raw=b"", envelope_from="a@b.c", envelope_to=("d@e.f",)))
    batch[11] = OutgoingMessage(ref="no-lang", to="+447700900002", channel="whatsapp",
                                payload=TextPayload(text="", fields={"template": {"name": "x"}}))
    batch[12] = OutgoingMessage(ref="empty", to="+447700900003", channel="whatsapp", payload=TextPayload(text=""))
    async with running_sandbox() as (url, control, _), provider_for(url, max_concurrency=8) as provider:
        results = await provider.send(batch)
    assert [r.ref for r in results] == [m.ref for m in batch]
    refused = {r.ref: r for r in results if not r.ok}
    assert set(refused) == {"bad-number", "email", "no-lang", "empty"}
    assert all(not r.transient and r.error for r in refused.values())
    assert "not an E.164" in (refused["bad-number"].error or "")
    sent = [r for r in results if r.ok]
    assert len({r.provider_message_id for r in sent}) == len(sent) == 26
    # Each wamid answers the request that carried that message: the response was not mixed up in the fan-out.
    assert sorted(r.data["biz_opaque_callback_data"] for r in control.requests) == sorted(r.ref for r in sent)
    assert len(control.requests) == 26


async def test_a_batch_fans_out_up_to_max_concurrency_and_no_further() -> None:
    control = SandboxControl(latency_seconds=0.05)
    counted = InFlight(sandbox.create_app(control, ACCOUNT))
    async with serve_asgi(counted) as url, provider_for(url, max_concurrency=12) as provider:
        results = await provider.send([template_message(f"r{i}") for i in range(60)])
    assert all(r.ok for r in results)
    assert counted.peak == 12


async def test_a_closed_provider_reconnects() -> None:
    async with running_sandbox() as (url, _, _):
        provider = provider_for(url)
        [first] = await provider.send([template_message("a")])
        await provider.close()
        [second] = await provider.send([template_message("b")])
        await provider.close()
    assert first.ok and second.ok and first.provider_message_id != second.provider_message_id


# Graph API answers a send can meet: (HTTP status, error code, extra headers) → (ok, transient, opted_out).
GRAPH_ERRORS = [
    pytest.param(400, 130429, {}, "transient", id="130429-throughput"),
    pytest.param(400, 131056, {}, "transient", id="131056-pair-rate-limit"),
    pytest.param(400, 131048, {}, "transient", id="131048-spam-rate-limit"),
    pytest.param(400, 80007, {}, "transient", id="80007-waba-rate-limit"),
    pytest.param(400, 4, {}, "transient", id="4-app-rate-limit"),
    pytest.param(500, 131000, {}, "transient", id="131000-something-went-wrong"),
    pytest.param(503, 2, {"Retry-After": "7"}, "transient", id="2-unavailable-with-retry-after"),
    pytest.param(400, 131026, {}, "permanent", id="131026-undeliverable"),
    pytest.param(400, 132000, {}, "permanent", id="132000-param-count"),
    pytest.param(404, 132001, {}, "permanent", id="132001-no-template"),
    pytest.param(400, 100, {}, "permanent", id="100-invalid-parameter"),
    pytest.param(400, 131030, {}, "permanent", id="131030-not-in-allowed-list"),
    pytest.param(401, 190, {}, "permanent", id="190-token-expired"),
    pytest.param(400, 131050, {}, "opted_out", id="131050-stopped-marketing"),
]


def graph_fake(answer: Response) -> Starlette:
    async def messages(request: Request) -> Response:
        await request.body()
        return answer

    return Starlette(routes=[Route("/{version}/{pid}/messages", messages, methods=["POST"])])


@pytest.mark.parametrize(("http_status", "code", "headers", "outcome"), GRAPH_ERRORS)
async def test_each_graph_error_code_is_classified(http_status: int, code: int, headers: dict[str, str],
                                                   outcome: str) -> None:
    answer = sandbox.graph_error(http_status, code, f"(#{code}) some title", details="some details")
    answer.headers.update(headers)
    async with serve_asgi(graph_fake(answer)) as url, provider_for(url) as provider:
        [result] = await provider.send([template_message("r")])
    assert not result.ok and result.ref == "r"
    assert (result.transient, result.opted_out) == (outcome == "transient", outcome == "opted_out")
    assert f"code {code}" in (result.error or "") and "fbtrace_id" in (result.error or "")
    assert result.retry_after == (7.0 if "Retry-After" in headers else None)
    if code == 190:
        assert "access token was refused" in (result.error or "")


@pytest.mark.parametrize(("answer", "transient"), [
    (PlainTextResponse("Bad Gateway", status_code=502), True),
    (JSONResponse({"unexpected": True}, status_code=429), True),
    (PlainTextResponse("nope", status_code=403), False),
])
async def test_bodies_that_are_not_graph_errors_fall_back_on_the_http_status(answer: Response,
                                                                             transient: bool) -> None:
    async with serve_asgi(graph_fake(answer)) as url, provider_for(url) as provider:
        [result] = await provider.send([template_message("r")])
    assert not result.ok and result.transient is transient and not result.opted_out
    assert f"HTTP {answer.status_code}" in (result.error or "")


async def test_the_sandbox_refusals_are_meta_s() -> None:
    async with running_sandbox(templates={"spring_sale": ["pt_BR"]}) as (url, _, _):
        async with provider_for(url) as provider:
            [unknown] = await provider.send([template_message("t")])
            long_text = OutgoingMessage(ref="long", to="+447700900123", channel="whatsapp",
                                        payload=TextPayload(text="x" * 4097))
            [too_long] = await provider.send([long_text])
        async with provider_for(url, access_token="stale") as provider:
            [stale] = await provider.send([template_message("s")])
    assert not unknown.transient and "code 132001" in (unknown.error or "")
    assert not too_long.transient and "code 100" in (too_long.error or "")
    assert not stale.transient and "code 190" in (stale.error or "")


async def test_timeouts_and_refused_connections_are_transient() -> None:
    control = SandboxControl(latency_seconds=0.5)
    async with serve_asgi(sandbox.create_app(control, ACCOUNT)) as url, provider_for(url, timeout=0.1) as provider:
        [slow] = await provider.send([template_message("slow")])
    async with provider_for(url) as provider:  # the server is gone now
        [refused] = await provider.send([template_message("gone")])
    assert not slow.ok and slow.transient and "timed out" in (slow.error or "")
    assert not refused.ok and refused.transient and "cannot reach" in (refused.error or "")


async def test_raw_graph_responses_of_the_sandbox() -> None:
    async with running_sandbox() as (url, _, _):
        messages_url = f"{url}/v21.0/{ACCOUNT.phone_number_id}/messages"
        auth = {"Authorization": f"Bearer {ACCOUNT.access_token}"}
        async with httpx.AsyncClient() as client:
            no_token = await client.post(messages_url, json={"messaging_product": "whatsapp", "to": "1555"})
            no_to = await client.post(messages_url, headers=auth, json={"messaging_product": "whatsapp"})
            other_number = await client.post(f"{url}/v21.0/999/messages", headers=auth,
                                             json={"messaging_product": "whatsapp", "to": "14155550123"})
            ok = await client.post(messages_url, headers=auth, json={
                "messaging_product": "whatsapp", "to": "+14155550123", "type": "template", "template": TEMPLATE})
    assert no_token.status_code == 401 and no_token.json()["error"]["code"] == 190
    assert no_token.json()["error"]["type"] == "OAuthException" and no_token.json()["error"]["fbtrace_id"]
    assert no_to.status_code == 400 and no_to.json()["error"]["message"] == "(#100) The parameter to is required."
    assert other_number.status_code == 400
    assert (other_number.json()["error"]["code"], other_number.json()["error"]["error_subcode"]) == (100, 33)
    assert ok.status_code == 200
    assert ok.json()["contacts"] == [{"input": "+14155550123", "wa_id": "14155550123"}]
    assert ok.json()["messages"][0]["message_status"] == "accepted"


# --- replies --------------------------------------------------------------------------------------------------

async def test_reply_sends_free_form_text_to_the_person() -> None:
    inbound = InboundMessage(from_address="+447700900123", text="STOP", received_at=datetime.now(UTC),
                             provider_message_id="wamid.IN1")
    async with running_sandbox() as (url, control, _), provider_for(url) as provider:
        assert await provider.reply(inbound, "You will get no more marketing messages.") is None
        control.fail_next("permanent")
        assert await provider.reply(inbound, "lost") is None  # a failed reply is logged, not raised
    first = control.requests[0].data
    assert (first["to"], first["type"], first["text"]) == (
        "447700900123", "text", {"body": "You will get no more marketing messages."})
    assert len(control.requests) == 2


# --- webhooks -------------------------------------------------------------------------------------------------

def handshake_request(token: str, *, mode: str = "subscribe", method: str = "GET") -> WebhookRequest:
    query = {"hub.mode": mode, "hub.verify_token": token, "hub.challenge": "1158201444"}
    return WebhookRequest(method=method, url="https://clarion.example/webhooks/whatsapp?…", headers={},
                          query=query, body=b"")


def test_handshake_echoes_the_challenge_only_for_this_account_s_token() -> None:
    provider = provider_for("https://g.example")
    answer = provider.handshake(handshake_request(ACCOUNT.verify_token))
    assert answer is not None and (answer.status, answer.body, answer.media_type) == (200, b"1158201444",
                                                                                      "text/plain")
    assert provider.handshake(handshake_request("someone-else")) is None
    assert provider.handshake(handshake_request(ACCOUNT.verify_token, mode="unsubscribe")) is None
    assert provider.handshake(handshake_request(ACCOUNT.verify_token, method="POST")) is None
    assert WhatsAppProvider.webhook_accounts_named(handshake_request(ACCOUNT.verify_token)) is None


def test_signature_checks() -> None:
    provider = provider_for("https://g.example")
    genuine = signed(sandbox.status_payload(ACCOUNT, "wamid.A", "sent", recipient_id="447700900123"))
    provider.verify_webhook(genuine)
    unsigned = WebhookRequest(method="POST", url=genuine.url, headers={}, query={}, body=genuine.body)
    other_app = signed(sandbox.status_payload(ACCOUNT, "wamid.A", "sent", recipient_id="447700900123"), OTHER)
    garbage = WebhookRequest(method="POST", url=genuine.url, query={}, body=genuine.body,
                             headers={"x-hub-signature-256": "sha256=ü"})
    for forged in (unsigned, other_app, garbage):
        with pytest.raises(WebhookRejected) as caught:
            provider.verify_webhook(forged)
        assert caught.value.status == 401


def test_accounts_named_and_account_of_a_config() -> None:
    call = signed(merged(sandbox.status_payload(OTHER, "wamid.B", "read", recipient_id="1"),
                         sandbox.status_payload(ACCOUNT, "wamid.A", "read", recipient_id="1")))
    assert WhatsAppProvider.webhook_accounts_named(call) == sorted([ACCOUNT.phone_number_id,
                                                                     OTHER.phone_number_id])
    template_update = signed({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "message_template_status_update", "value": {"event": "APPROVED", "message_template_id": 1}}]}]})
    assert WhatsAppProvider.webhook_accounts_named(template_update) is None
    assert provider_for("https://g.example").parse_webhook(template_update).statuses == []
    config = ACCOUNT.channel_config("https://g.example")
    assert WhatsAppProvider.webhook_account(config) == ACCOUNT.phone_number_id
    assert WhatsAppProvider.webhook_account(WhatsAppConfig(**config)) == ACCOUNT.phone_number_id


def test_statuses_carry_the_ref_time_and_only_this_account_s_entries() -> None:
    provider = provider_for("https://g.example")
    call = signed(merged(
        sandbox.status_payload(ACCOUNT, "wamid.A", "delivered", recipient_id="447700900123", ref="rcp-42",
                               timestamp="1718000000"),
        sandbox.status_payload(OTHER, "wamid.Z", "delivered", recipient_id="447700900999", ref="theirs"),
        sandbox.status_payload(ACCOUNT, "wamid.A", "deleted", recipient_id="447700900123"),
    ))
    [update] = provider.parse_webhook(call).statuses
    assert (update.provider_message_id, update.status, update.ref) == ("wamid.A", "delivered", "rcp-42")
    assert update.occurred_at == datetime.fromtimestamp(1718000000, UTC)
    assert update.raw["pricing"]["category"] == "marketing" and not update.error_code


@pytest.mark.parametrize(("code", "transient", "opted_out"), [
    (130429, True, False), (131056, True, False), (131048, True, False),
    (131050, False, True), (131026, False, False), (132001, False, False), (131049, False, False),
])
def test_failed_statuses_are_classified_by_code(code: int, transient: bool, opted_out: bool) -> None:
    provider = provider_for("https://g.example")
    payload = sandbox.status_payload(ACCOUNT, "wamid.F", "failed", recipient_id="1", error_code=code)
    [update] = provider.parse_webhook(signed(payload)).statuses
    assert update.status == STATUS_FAILED and update.error_code == str(code)
    assert (update.transient, update.opted_out) == (transient, opted_out)
    assert update.error and str(code) in update.error


def test_inbound_texts_and_buttons_become_inbound_messages() -> None:
    provider = provider_for("https://g.example")
    text = sandbox.inbound_text_payload(ACCOUNT, "+447700900123", "STOP", name="Ada", wamid="wamid.IN1",
                                        timestamp="1718000100")
    button = sandbox.inbound_text_payload(ACCOUNT, "447700900456", "", wamid="wamid.IN2")
    button["entry"][0]["changes"][0]["value"]["messages"][0].update(
        type="button", button={"payload": "unsubscribe", "text": "Stop promotions"})
    image = sandbox.inbound_text_payload(ACCOUNT, "447700900789", "", wamid="wamid.IN3")
    image["entry"][0]["changes"][0]["value"]["messages"][0].update(type="image", image={"id": "m1"})
    theirs = sandbox.inbound_text_payload(OTHER, "447700900000", "STOP")
    result = provider.parse_webhook(signed(merged(text, button, image, theirs)))
    assert [(m.from_address, m.text, m.provider_message_id) for m in result.inbound] == [
        ("+447700900123", "STOP", "wamid.IN1"), ("+447700900456", "Stop promotions", "wamid.IN2")]
    assert result.inbound[0].sender_name == "Ada"
    assert result.inbound[0].received_at == datetime.fromtimestamp(1718000100, UTC)
    assert result.statuses == [] and result.consent == []


def test_user_preferences_become_consent_reports() -> None:
    provider = provider_for("https://g.example")
    call = signed(merged(sandbox.user_preferences_payload(ACCOUNT, "447700900123", "stop", timestamp=1718000200),
                         sandbox.user_preferences_payload(ACCOUNT, "447700900456", "resume"),
                         sandbox.user_preferences_payload(OTHER, "447700900789", "stop")))
    consent = provider.parse_webhook(call).consent
    assert [(c.address, c.subscribed) for c in consent] == [("+447700900123", False), ("+447700900456", True)]
    assert consent[0].occurred_at == datetime.fromtimestamp(1718000200, UTC)
    assert "stop marketing" in consent[0].reason


def not_json() -> Iterator[bytes]:
    yield b"not json"
    yield b"\xff\xfe"
    yield b'["a list"]'
    yield b'{"object": "page", "entry": []}'
    yield b'{"object": "whatsapp_business_account"}'
    status = sandbox.status_payload(ACCOUNT, "wamid.A", "sent", recipient_id="1")
    del status["entry"][0]["changes"][0]["value"]["statuses"][0]["id"]
    yield json.dumps(status).encode()
    bad_time = sandbox.status_payload(ACCOUNT, "wamid.A", "read", recipient_id="1", timestamp="yesterday")
    yield json.dumps(bad_time).encode()


@pytest.mark.parametrize("body", list(not_json()))
def test_a_body_that_is_not_the_cloud_api_s_format_is_invalid(body: bytes) -> None:
    provider = provider_for("https://g.example")
    request = webhook_request({"x-hub-signature-256": sandbox.signature(body, ACCOUNT.app_secret)}, body)
    provider.verify_webhook(request)
    with pytest.raises(Invalid):
        provider.parse_webhook(request)


def test_unknown_fields_and_changes_are_ignored() -> None:
    provider = provider_for("https://g.example")
    payload = sandbox.status_payload(ACCOUNT, "wamid.A", "read", recipient_id="1")
    payload["entry"][0]["changes"].append({"field": "account_alerts", "value": {"alert": "x"}})
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["brand_new_field"] = {"x": 1}
    payload["entry"].append({"id": "2", "time": 1})
    payload["entry"][0]["changes"].append("not an object")
    [update] = provider.parse_webhook(signed(payload)).statuses
    assert update.status == "read"


# --- the sandbox's own status callbacks ------------------------------------------------------------------------

async def test_the_sandbox_delivers_signed_status_callbacks() -> None:
    provider = provider_for("https://g.example")
    seen: list[tuple[str, str, str | None, bool]] = []

    async def receive(request: Request) -> Response:
        call = WebhookRequest(method="POST", url=str(request.url), headers=dict(request.headers), query={},
                              body=await request.body())
        provider.verify_webhook(call)
        for update in provider.parse_webhook(call).statuses:
            seen.append((update.provider_message_id, update.status, update.ref, update.opted_out))
        return Response(status_code=200)

    receiver = Starlette(routes=[Route("/webhooks/whatsapp", receive, methods=["POST"])])
    async with serve_asgi(receiver) as receiver_url, running_sandbox() as (url, control, app):
        control.webhook_url = f"{receiver_url}/webhooks/whatsapp"
        async with provider_for(url) as sender:
            [delivered] = await sender.send([template_message("rcp-1")])
            control.fail_next("opt_out")
            [opted_out] = await sender.send([template_message("rcp-2")])
        callbacks = await asyncio.wait_for(sandbox.settle(app), timeout=10)
    assert delivered.ok and opted_out.ok  # 131050 is only known later, from the status webhook
    assert sorted(seen) == sorted([
        (delivered.provider_message_id, "sent", "rcp-1", False),
        (delivered.provider_message_id, "delivered", "rcp-1", False),
        (delivered.provider_message_id, "read", "rcp-1", False),
        (opted_out.provider_message_id, "failed", "rcp-2", True)])
    assert [status for _, status in callbacks] == [200] * 4
    assert [s for m, s, _, _ in seen if m == delivered.provider_message_id] == ["sent", "delivered", "read"]
