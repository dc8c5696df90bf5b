"""The Twilio SMS provider over real HTTP against its sandbox: wire format, error classification, concurrency,
the credentials check, webhook signatures and parsing, TwiML replies — and the sandbox's own Twilio behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clarion.delivery.channels import registry
from clarion.delivery.channels.base import (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_SENT,
    ChannelCheckFailed,
    OutgoingMessage,
    ProviderContext,
    TextPayload,
    WebhookRejected,
    WebhookRequest,
)
from clarion.delivery.channels.twilio import TwilioConfig, TwilioProvider, twilio_signature
from clarion.errors import Invalid
from clarion.sandbox import twilio as sandbox
from clarion.sandbox.control import SandboxControl
from tests.delivery.contract.twilio import request_of
from tests.fakes.serving import InFlight, serve_asgi

SID, TOKEN, NUMBER = sandbox.DEFAULT_ACCOUNT_SID, sandbox.DEFAULT_AUTH_TOKEN, sandbox.DEFAULT_NUMBER
SERVICE = "MG" + "0123456789abcdef" * 2
STATUS_URL = "https://clarion.example/webhooks/twilio/status"


def config(url: str, **overrides: Any) -> dict[str, Any]:
    return {"account_sid": SID, "auth_token": TOKEN, "from_number": NUMBER, "api_base_url": url, **overrides}


def sms(ref: str, to: str = "+14155550123", text: str = "Hi there") -> OutgoingMessage:
    return OutgoingMessage(ref=ref, to=to, channel="sms", payload=TextPayload(text=text))


@asynccontextmanager
async def twilio(control: SandboxControl | None = None, **account: Any) -> AsyncIterator[tuple[str, SandboxControl]]:
    control = control or SandboxControl()
    app = sandbox.create_app(control, **account)
    async with serve_asgi(app) as url:
        yield url, control
    await app.state.sandbox.close()


def form_of(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


# --- the signature ------------------------------------------------------------------------------------------

def test_signature_is_twilios_published_example() -> None:
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"), ("Digits", "1234"),
              ("From", "+12349013030"), ("To", "+18005551212")]
    assert twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params) == \
        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    # Parameter order on the wire does not matter: Twilio sorts them by name.
    assert twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params[::-1]) == \
        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def _provider(**overrides: Any) -> TwilioProvider:
    return TwilioProvider(TwilioConfig.model_validate(config("http://127.0.0.1:9", **overrides)))


def test_a_signature_made_with_the_default_port_written_out_still_verifies() -> None:
    headers, body = sandbox.status_callback("https://clarion.example:443/webhooks/twilio/status", account_sid=SID,
                                            auth_token=TOKEN, message_sid="SM1", status="delivered")
    _provider().verify_webhook(request_of(STATUS_URL, headers, body))


@pytest.mark.parametrize("tamper", ["no_header", "other_token", "other_url", "changed_body", "not_a_form"])
def test_calls_not_signed_by_this_account_are_rejected_with_403(tamper: str) -> None:
    headers, body = sandbox.status_callback(STATUS_URL, account_sid=SID, auth_token=TOKEN, message_sid="SM1",
                                            status="delivered")
    url = STATUS_URL
    if tamper == "no_header":
        headers.pop("x-twilio-signature")
    elif tamper == "other_token":
        headers, body = sandbox.status_callback(STATUS_URL, account_sid=SID, auth_token="f" * 32,
                                                message_sid="SM1", status="delivered")
    elif tamper == "other_url":
        url = "https://clarion.example/webhooks/twilio/inbound"
    elif tamper == "changed_body":
        body = body.replace(b"MessageStatus=delivered", b"MessageStatus=failed")
    else:
        body = b'{"MessageSid": "SM1"}'
    with pytest.raises(WebhookRejected) as caught:
        _provider().verify_webhook(request_of(url, headers, body))
    assert caught.value.status == 403


# --- config -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "complaint"), [
    ({"messaging_service_sid": SERVICE}, "exactly one of from_number and messaging_service_sid"),
    ({"from_number": None}, "exactly one of from_number and messaging_service_sid"),
    ({"account_sid": "AC123"}, "account_sid"),
    ({"from_number": "4155550100"}, "E.164"),
    ({"auth_token": " "}, "auth_token is required"),
    ({"api_base_url": "ftp://x"}, "http(s) URL"),
    ({"region": "us1"}, "Extra inputs are not permitted"),
])
def test_config_refuses_what_twilio_would_not_take(overrides: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TwilioConfig.model_validate(config("https://api.twilio.com", **overrides))
    assert complaint in str(caught.value)


def test_short_code_and_messaging_service_senders_are_accepted() -> None:
    assert TwilioConfig.model_validate(config("https://api.twilio.com", from_number="55555")).from_number == "55555"
    service = TwilioConfig.model_validate(config("https://api.twilio.com", from_number=None,
                                                 messaging_service_sid=SERVICE))
    assert service.messaging_service_sid == SERVICE and TwilioProvider.webhook_account(service) == SID


# --- sending ------------------------------------------------------------------------------------------------

async def test_a_long_message_is_billed_by_twilios_segment_count() -> None:
    async with twilio() as (url, _), registry.build_provider("twilio", config(url)) as provider:
        [short, long_, unicode_] = await provider.send([
            sms("a"), sms("b", text="x" * 400), sms("c", text="Grüße 👋 " * 12)])
    assert [r.billable_units for r in (short, long_, unicode_)] == [1, 3, 2]
    assert all(r.ok and r.provider_message_id.startswith("SM") for r in (short, long_, unicode_))  # type: ignore[union-attr]
    assert len({r.provider_message_id for r in (short, long_, unicode_)}) == 3


async def test_status_callback_defaults_to_the_installs_public_webhook_url() -> None:
    async with twilio() as (url, control):
        context = ProviderContext(public_base_url="https://crm.example.com/")
        async with registry.build_provider("twilio", config(url), context=context) as provider:
            [result] = await provider.send([sms("r1")])
    assert result.ok
    assert (form_of(control.requests[0].body)["StatusCallback"]
            == "https://crm.example.com/webhooks/twilio/status?clarion_ref=r1")


async def test_without_a_public_url_no_status_callback_is_asked_for() -> None:
    async with twilio() as (url, control), registry.build_provider("twilio", config(url)) as provider:
        await provider.send([sms("r1")])
    assert "StatusCallback" not in form_of(control.requests[0].body)


async def test_sending_through_a_messaging_service() -> None:
    service = config("", from_number=None, messaging_service_sid=SERVICE)
    async with twilio(messaging_services=(SERVICE,)) as (url, control), \
            registry.build_provider("twilio", {**service, "api_base_url": url}) as provider:
        [result] = await provider.send([sms("r1")])
    form = form_of(control.requests[0].body)
    assert result.ok and form["MessagingServiceSid"] == SERVICE and "From" not in form


@pytest.mark.parametrize(("to", "code", "opted_out"), [
    ("+15005550001", "21211", False),  # invalid To
    ("+15005550003", "21408", False),  # region not enabled
    ("+15005550009", "21614", False),  # not a mobile number
    ("+15005550002", "21612", False),  # cannot route
    ("+15005550004", "21610", True),   # replied STOP
])
async def test_twilios_refusals_are_permanent_or_an_opt_out(to: str, code: str, opted_out: bool) -> None:
    async with twilio() as (url, _), registry.build_provider("twilio", config(url)) as provider:
        [result] = await provider.send([sms("r1", to=to)])
    assert not result.ok and not result.transient and result.opted_out is opted_out
    assert result.error is not None and result.error.startswith(f"Twilio {code}:")


async def test_throttling_is_transient_and_says_when_to_retry() -> None:
    async with twilio() as (url, control):
        control.fail_next("transient")
        async with registry.build_provider("twilio", config(url)) as provider:
            [result] = await provider.send([sms("r1")])
    assert not result.ok and result.transient and result.retry_after == 1.0 and "20429" in (result.error or "")


async def test_refused_credentials_are_permanent_with_a_clear_message() -> None:
    async with twilio() as (url, _), registry.build_provider("twilio", config(url, auth_token="0" * 32)) as provider:
        [result] = await provider.send([sms("r1")])
    assert not result.ok and not result.transient
    assert "20003" in (result.error or "") and "account_sid and auth_token" in (result.error or "")


async def test_an_unreachable_api_is_transient_for_every_message() -> None:
    async with twilio() as (url, _):
        pass  # the server is gone: connections are refused
    async with registry.build_provider("twilio", config(url, timeout=2)) as provider:
        results = await provider.send([sms("a"), sms("b")])
    assert [(r.ref, r.ok, r.transient) for r in results] == [("a", False, True), ("b", False, True)]


async def test_a_payload_that_is_not_text_fails_only_that_message() -> None:
    from clarion.delivery.channels.base import EmailPayload

    email = OutgoingMessage(ref="e", to="+14155550123", channel="sms",
                            payload=EmailPayload(raw=b"x", envelope_from="a@b.c", envelope_to=("d@e.f",)))
    async with twilio() as (url, _), registry.build_provider("twilio", config(url)) as provider:
        results = await provider.send([sms("a"), email, sms("b")])
    assert [(r.ref, r.ok) for r in results] == [("a", True), ("e", False), ("b", True)]


async def test_a_batch_goes_out_concurrently_up_to_max_concurrency_in_order() -> None:
    control = SandboxControl(latency_seconds=0.02)
    app = InFlight(sandbox.create_app(control))
    batch = [sms(str(i), to=f"+1415555{i:04d}") for i in range(60)]
    async with serve_asgi(app) as url, registry.build_provider("twilio", config(url, max_concurrency=8)) as provider:
        results = await provider.send(batch)
    assert [r.ref for r in results] == [m.ref for m in batch] and all(r.ok for r in results)
    sent_to = {form_of(r.body)["To"] for r in control.requests}
    assert sent_to == {m.to for m in batch}
    assert app.peak == 8


# --- the credentials check ----------------------------------------------------------------------------------

async def test_check_passes_for_the_accounts_own_number() -> None:
    async with twilio() as (url, control), registry.build_provider("twilio", config(url)) as provider:
        await provider.check()
    assert [r.path for r in control.requests] == [f"/2010-04-01/Accounts/{SID}.json",
                                                  f"/2010-04-01/Accounts/{SID}/IncomingPhoneNumbers.json"]


@pytest.mark.parametrize(("overrides", "field"), [
    ({"auth_token": "0" * 32}, "auth_token"),
    ({"from_number": "+14155550199"}, "from_number"),
])
async def test_check_names_what_twilio_refused(overrides: dict[str, Any], field: str) -> None:
    async with twilio() as (url, _), registry.build_provider("twilio", config(url, **overrides)) as provider:
        with pytest.raises(ChannelCheckFailed) as caught:
            await provider.check()
    assert caught.value.errors is not None and caught.value.errors[0]["loc"] == ["config", field]


async def test_check_of_an_unreachable_api_fails_clearly() -> None:
    async with twilio() as (url, _):
        pass
    async with registry.build_provider("twilio", config(url, timeout=2)) as provider:
        with pytest.raises(ChannelCheckFailed, match="cannot reach Twilio"):
            await provider.check()


# --- parsing webhooks ---------------------------------------------------------------------------------------

def _status(status: str, code: int | None = None, account: str = SID) -> WebhookRequest:
    headers, body = sandbox.status_callback(STATUS_URL, account_sid=account, auth_token=TOKEN, message_sid="SM9",
                                            status=status, error_code=code)
    return request_of(STATUS_URL, headers, body)


@pytest.mark.parametrize(("twilio_status", "ours"), [
    ("queued", None), ("accepted", None), ("sending", None),
    ("sent", STATUS_SENT), ("delivered", STATUS_DELIVERED), ("read", "read"),
    ("undelivered", STATUS_FAILED), ("failed", STATUS_FAILED),
])
def test_message_statuses_map_onto_ours(twilio_status: str, ours: str | None) -> None:
    statuses = _provider().parse_webhook(_status(twilio_status)).statuses
    assert [(s.provider_message_id, s.status) for s in statuses] == ([("SM9", ours)] if ours else [])


def test_the_ref_in_the_status_callback_url_comes_back_with_the_status() -> None:
    """Twilio may call back before the send's answer is recorded: the ref names the recipient without the sid."""
    url = f"{STATUS_URL}?clarion_ref=42"
    headers, body = sandbox.status_callback(url, account_sid=SID, auth_token=TOKEN, message_sid="SM9",
                                            status="delivered")
    request = WebhookRequest("POST", url, {k.lower(): v for k, v in headers.items()}, {"clarion_ref": "42"}, body)
    _provider().verify_webhook(request)  # the signature covers the query, so the ref cannot be forged
    [update] = _provider().parse_webhook(request).statuses
    assert (update.provider_message_id, update.status, update.ref) == ("SM9", STATUS_DELIVERED, "42")


@pytest.mark.parametrize(("code", "transient", "opted_out"), [
    (30001, True, False), (30017, True, False), (30003, False, False), (30007, False, False),
    (21610, False, True), (None, False, False),
])
def test_failure_codes_are_classified(code: int | None, transient: bool, opted_out: bool) -> None:
    [update] = _provider().parse_webhook(_status("undelivered", code)).statuses
    assert (update.transient, update.opted_out, update.error_code) == (transient, opted_out,
                                                                       str(code) if code else None)
    assert update.error and update.error.startswith("Twilio")


def test_a_call_for_another_account_carries_nothing_for_this_one() -> None:
    assert _provider().parse_webhook(_status("delivered", account="AC" + "9" * 32)).statuses == []


def test_an_inbound_message_is_parsed() -> None:
    url = "https://clarion.example/webhooks/twilio/inbound"
    headers, body = sandbox.inbound_message(url, account_sid=SID, auth_token=TOKEN, sender="+14155550123",
                                            body=" stop ", message_sid="SMin")
    result = _provider().parse_webhook(request_of(url, headers, body))
    [inbound] = result.inbound
    assert (inbound.from_address, inbound.text, inbound.provider_message_id) == ("+14155550123", " stop ", "SMin")
    assert result.statuses == []


@pytest.mark.parametrize("body", [b'{"MessageSid": "SM1"}', b"AccountSid=" + SID.encode(),
                                  b"AccountSid=" + SID.encode() + b"&MessageSid=SM1&MessageStatus=exploded"])
def test_a_body_that_is_not_twilios_format_is_invalid(body: bytes) -> None:
    with pytest.raises(Invalid):
        _provider().parse_webhook(WebhookRequest("POST", STATUS_URL, {}, {}, body))


def test_accounts_named_reads_the_account_sid_without_trusting_it() -> None:
    assert TwilioProvider.webhook_accounts_named(_status("sent")) == [SID]
    assert TwilioProvider.webhook_accounts_named(WebhookRequest("POST", STATUS_URL, {}, {}, b"{}")) == []


async def test_replies_are_escaped_twiml_and_acks_empty_twiml() -> None:
    provider = _provider()
    inbound = provider.parse_webhook(request_of(
        "https://x/i", *sandbox.inbound_message("https://x/i", account_sid=SID, auth_token=TOKEN,
                                                 sender="+14155550123", body="HELP"))).inbound[0]
    reply = await provider.reply(inbound, "Tom & Jerry <deals>: reply STOP")
    assert reply is not None and (reply.status, reply.media_type) == (200, "application/xml")
    assert reply.body == (b'<?xml version="1.0" encoding="UTF-8"?><Response><Message>Tom &amp; Jerry &lt;deals&gt;: '
                          b"reply STOP</Message></Response>")
    assert provider.acknowledge().body == b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


# --- the sandbox itself -------------------------------------------------------------------------------------

async def _raw_send(url: str, form: dict[str, str], auth: tuple[str, str] = (SID, TOKEN),
                    account: str = SID) -> httpx.Response:
    async with httpx.AsyncClient(auth=auth) as client:
        return await client.post(f"{url}/2010-04-01/Accounts/{account}/Messages.json", data=form)


@pytest.mark.parametrize(("form", "auth", "account", "status", "code"), [
    ({"To": "+14155550123", "From": NUMBER, "Body": "x"}, (SID, "bad"), SID, 401, 20003),
    ({"To": "+14155550123", "From": NUMBER, "Body": "x"}, (SID, TOKEN), "AC" + "1" * 32, 404, 20404),
    ({"From": NUMBER, "Body": "x"}, (SID, TOKEN), SID, 400, 21604),
    ({"To": "+14155550123", "Body": "x"}, (SID, TOKEN), SID, 400, 21603),
    ({"To": "+14155550123", "From": NUMBER}, (SID, TOKEN), SID, 400, 21602),
    ({"To": "4155550123", "From": NUMBER, "Body": "x"}, (SID, TOKEN), SID, 400, 21211),
    ({"To": "+14155550123", "From": "+14155550999", "Body": "x"}, (SID, TOKEN), SID, 400, 21606),
    ({"To": "+14155550123", "From": NUMBER, "Body": "x" * 1601}, (SID, TOKEN), SID, 400, 21617),
    ({"To": "+14155550123", "From": NUMBER, "Body": "x", "StatusCallback": "nope"}, (SID, TOKEN), SID, 400, 21609),
])
async def test_sandbox_refuses_what_twilio_refuses(form: dict[str, str], auth: tuple[str, str], account: str,
                                                   status: int, code: int) -> None:
    async with twilio() as (url, _):
        response = await _raw_send(url, form, auth, account)
    body = response.json()
    assert (response.status_code, body["code"], body["status"]) == (status, code, status)
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}" and body["message"]


async def test_sandbox_accepts_like_twilio() -> None:
    async with twilio() as (url, _):
        response = await _raw_send(url, {"To": "+14155550123", "From": NUMBER, "Body": "Hello"})
        async with httpx.AsyncClient(auth=(SID, TOKEN)) as client:
            fetched = await client.get(f"{url}{response.json()['uri']}")
    message = response.json()
    assert response.status_code == 201
    assert (message["status"], message["num_segments"], message["direction"], message["to"], message["from"]) == \
        ("queued", "1", "outbound-api", "+14155550123", NUMBER)
    assert message["sid"].startswith("SM") and len(message["sid"]) == 34 and message["account_sid"] == SID
    assert fetched.status_code == 200 and fetched.json()["sid"] == message["sid"]


async def test_sandbox_posts_signed_status_callbacks_in_order() -> None:
    received: list[tuple[str, dict[str, str], bytes]] = []
    got_all = asyncio.Event()

    async def hook(request: Request) -> Response:
        received.append((str(request.url), dict(request.headers), await request.body()))
        if len(received) == 3:
            got_all.set()
        return Response(b'<?xml version="1.0" encoding="UTF-8"?><Response/>', media_type="application/xml")

    async with serve_asgi(Starlette(routes=[Route("/webhooks/twilio/status", hook, methods=["POST"])])) as hook_url:
        callback = f"{hook_url}/webhooks/twilio/status"
        async with twilio() as (url, _), \
                registry.build_provider("twilio", config(url, status_callback_url=callback)) as provider:
            [result] = await provider.send([sms("r1")])
            await asyncio.wait_for(got_all.wait(), 5)
    provider = _provider()
    statuses = []
    for called, headers, body in received:
        request = request_of(called, headers, body)
        provider.verify_webhook(request)  # signed over the exact URL with the account's token
        assert form_of(body)["MessageSid"] == result.provider_message_id
        statuses.append(form_of(body)["MessageStatus"])
    assert statuses == ["queued", "sent", "delivered"]
