"""The Telegram provider over real HTTP against its Bot API sandbox: wire format, error classification, the
4,096-character rule, concurrency and the per-chat gate, the credentials check, webhook authenticity and parsing,
replies — and the sandbox's own Bot API behaviour."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clarion.delivery.channels import registry
from clarion.delivery.channels.base import (
    ChannelCheckFailed,
    EmailPayload,
    InboundMessage,
    OutgoingMessage,
    TextPayload,
    WebhookRejected,
)
from clarion.delivery.channels.telegram import TelegramConfig, TelegramProvider
from clarion.delivery.channels.telegram import provider as telegram_provider
from clarion.delivery.channels.telegram.provider import visible_length
from clarion.errors import Invalid
from clarion.sandbox import telegram as sandbox
from clarion.sandbox.control import SandboxControl
from tests.delivery.contract.telegram import request_of
from tests.fakes.serving import InFlight, serve_asgi

TOKEN = sandbox.DEFAULT_BOT_TOKEN


def config(url: str, **overrides: Any) -> dict[str, Any]:
    return {"bot_token": TOKEN, "bot_username": sandbox.DEFAULT_BOT_USERNAME,
            "webhook_secret_token": sandbox.DEFAULT_SECRET_TOKEN, "api_base_url": url, **overrides}


def text(ref: str, to: str = "424242", body: str = "Hello", **fields: Any) -> OutgoingMessage:
    return OutgoingMessage(ref=ref, to=to, channel="telegram", payload=TextPayload(text=body, fields=fields))


@asynccontextmanager
async def bot(control: SandboxControl | None = None) -> AsyncIterator[tuple[str, SandboxControl]]:
    control = control or SandboxControl()
    async with serve_asgi(sandbox.create_app(control)) as url:
        yield url, control


def provider(url: str, **overrides: Any) -> TelegramProvider:
    built = registry.build_provider("telegram", config(url, **overrides))
    assert isinstance(built, TelegramProvider)
    return built


# --- sending ------------------------------------------------------------------------------------------------

async def test_a_batch_goes_out_concurrently_one_result_per_message_in_order() -> None:
    control = SandboxControl(latency_seconds=0.05)
    counted = InFlight(sandbox.create_app(control))
    async with serve_asgi(counted) as url, provider(url, max_concurrency=20) as p:
        batch = [text(f"r{i}", to=str(1000 + i), body=f"<i>Hi</i> #{i}") for i in range(40)]
        results = await p.send(batch)
    assert [r.ref for r in results] == [m.ref for m in batch]
    assert all(r.ok and r.billable_units == 1 for r in results)
    assert [r.provider_message_id for r in results] == [f"{1000 + i}:1" for i in range(40)]
    assert 1 < counted.peak <= 20  # concurrent, and never past max_concurrency
    assert {json.loads(r.body)["chat_id"] for r in control.requests} == {1000 + i for i in range(40)}


async def test_rate_limited_is_transient_with_telegrams_retry_after() -> None:
    async with bot() as (url, control), provider(url) as p:
        control.fail_next("transient")
        [result] = await p.send([text("r1")])
    assert not result.ok and result.transient and not result.opted_out
    assert result.retry_after == sandbox.RETRY_AFTER_SECONDS
    assert result.error == f"429 Too Many Requests: retry after {sandbox.RETRY_AFTER_SECONDS}"


async def test_blocked_by_the_user_is_an_opt_out_and_chat_not_found_permanent() -> None:
    async with bot() as (url, control), provider(url) as p:
        control.fail_next("opt_out")
        control.fail_next("permanent")
        blocked, missing = await p.send([text("r1", to="1"), text("r2", to="2")])
    assert not blocked.ok and blocked.opted_out and not blocked.transient
    assert "bot was blocked by the user" in (blocked.error or "")
    assert not missing.ok and not missing.transient and not missing.opted_out
    assert missing.error == "400 Bad Request: chat not found"


async def test_html_telegram_cannot_parse_is_a_permanent_failure_naming_the_problem() -> None:
    async with bot() as (url, _), provider(url) as p:
        unsupported, unclosed, ok = await p.send([
            text("r1", body="<div>Hi</div>"), text("r2", to="2", body="<b>Hi"), text("r3", to="3", body="<b>Hi</b>")])
    assert not unsupported.transient and 'Unsupported start tag "div"' in (unsupported.error or "")
    assert not unclosed.transient and "Can't find end tag" in (unclosed.error or "")
    assert ok.ok


async def test_plain_text_mode_is_sent_without_parse_mode() -> None:
    async with bot() as (url, control), provider(url) as p:
        [result] = await p.send([text("r1", body="1 < 2 & so on", parse_mode=None)])
    assert result.ok
    assert json.loads(control.requests[0].body) == {"chat_id": 424242, "text": "1 < 2 & so on"}


def test_the_length_rule_counts_what_the_user_sees_in_utf16_units() -> None:
    assert visible_length("<b>Hi</b> &amp; bye", "HTML") == len("Hi & bye")
    assert visible_length("<b>Hi</b>", None) == len("<b>Hi</b>")
    assert visible_length("😀", None) == 2  # outside the BMP: a surrogate pair


async def test_a_text_longer_than_4096_characters_fails_before_any_request() -> None:
    fits = "<b>" + "x" * 4096 + "</b>"  # tags do not count
    too_long = "x" * 4097
    async with bot() as (url, control), provider(url) as p:
        ok, failed, empty = await p.send([text("r1", body=fits), text("r2", to="2", body=too_long),
                                         text("r3", to="3", body="<b></b>")])
    assert ok.ok
    assert not failed.ok and not failed.transient and "4097 characters" in (failed.error or "")
    assert not empty.ok and not empty.transient and "empty" in (empty.error or "")
    assert len(control.requests) == 1


async def test_what_cannot_be_a_telegram_message_fails_alone() -> None:
    email = OutgoingMessage(ref="e", to="424242", channel="telegram",
                            payload=EmailPayload(raw=b"x", envelope_from="a@b.c", envelope_to=("d@e.f",)))
    async with bot() as (url, control), provider(url) as p:
        not_text, bad_chat, ok = await p.send([email, text("r2", to="ann@example.com"), text("r3")])
    assert not not_text.ok and not not_text.transient
    assert not bad_chat.ok and not bad_chat.transient and "not a Telegram chat id" in (bad_chat.error or "")
    assert ok.ok and len(control.requests) == 1


async def test_a_refused_token_is_transient_and_never_quoted() -> None:
    async with bot() as (url, _), provider(url, bot_token="7000000001:AAHwrongWRONGwrongWRONGwrong12345") as p:
        [result] = await p.send([text("r1")])
    assert not result.ok and result.transient
    assert "refused the bot token" in (result.error or "") and "AAHwrong" not in (result.error or "")


async def test_server_errors_and_unreachable_api_are_transient() -> None:
    async def broken(request: Request) -> JSONResponse:
        return JSONResponse({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status_code=502)

    async with serve_asgi(Starlette(routes=[Route("/bot{token}/{method}", broken, methods=["POST"])])) as url, \
            provider(url) as p:
        [gateway] = await p.send([text("r1")])
    async with provider("http://127.0.0.1:9", timeout=2) as p:
        [unreachable] = await p.send([text("r1")])
    assert not gateway.ok and gateway.transient and gateway.error == "502 Bad Gateway"
    assert not unreachable.ok and unreachable.transient and "cannot reach the Bot API" in (unreachable.error or "")
    assert TOKEN not in (unreachable.error or "")


async def test_messages_to_one_chat_are_spaced_by_the_per_chat_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telegram_provider, "PER_CHAT_INTERVAL", 0.2)
    async with bot() as (url, control), provider(url) as p:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await p.send([text("r1"), text("r2"), text("r3", to="77")])
        elapsed = loop.time() - started
    assert all(r.ok for r in results)
    assert elapsed >= 0.2  # the second message to chat 424242 waited for the first
    assert [json.loads(r.body)["chat_id"] for r in control.requests].count(424242) == 2


# --- check --------------------------------------------------------------------------------------------------

async def test_check_accepts_the_token_and_its_username() -> None:
    async with bot() as (url, control), provider(url) as p:
        await p.check()
    assert control.requests[0].path == f"/bot{TOKEN}/getMe"


async def test_check_refuses_a_bad_token_and_a_username_of_another_bot() -> None:
    async with bot() as (url, _):
        async with provider(url, bot_token="7000000001:AAHwrongWRONGwrongWRONGwrong12345") as p:
            with pytest.raises(ChannelCheckFailed, match="refused the bot token"):
                await p.check()
        async with provider(url, bot_username="someone_else_bot") as p:
            with pytest.raises(ChannelCheckFailed, match="belongs to @clarion_sandbox_bot"):
                await p.check()
    async with provider("http://127.0.0.1:9", timeout=2) as p:
        with pytest.raises(ChannelCheckFailed, match="cannot reach the Bot API"):
            await p.check()


def test_config_rules() -> None:
    good = config("https://api.telegram.org")
    assert TelegramConfig.model_validate({**good, "bot_username": "@Clarion_Sandbox_Bot"}).bot_username == \
        "Clarion_Sandbox_Bot"
    for field, value in (("bot_token", "not-a-token"), ("webhook_secret_token", "has spaces"),
                         ("webhook_secret_token", "x" * 257), ("bot_username", "no"),
                         ("api_base_url", "ftp://x"), ("max_concurrency", 0)):
        with pytest.raises(ValidationError) as caught:
            TelegramConfig.model_validate({**good, field: value})
        assert caught.value.errors()[0]["loc"] == (field,)
    with pytest.raises(ValidationError):
        TelegramConfig.model_validate({**good, "unknown": 1})


# --- webhooks -----------------------------------------------------------------------------------------------

def test_the_webhook_account_is_a_digest_of_the_secret_token_and_calls_name_it() -> None:
    cfg = TelegramConfig.model_validate(config("https://api.telegram.org"))
    digest = hashlib.sha256(sandbox.DEFAULT_SECRET_TOKEN.encode()).hexdigest()
    assert TelegramProvider.webhook_account(cfg) == digest
    headers, body = sandbox.signed_update(sandbox.message_update(5, "hi"))
    assert TelegramProvider.webhook_accounts_named(request_of(headers, body)) == [digest]
    assert TelegramProvider.webhook_accounts_named(request_of({"content-type": "application/json"}, body)) == []


def test_only_calls_with_the_secret_token_are_authentic() -> None:
    p = provider("https://api.telegram.org")
    headers, body = sandbox.signed_update(sandbox.message_update(5, "hi"))
    p.verify_webhook(request_of(headers, body))
    for bad in ({"content-type": "application/json"},
                {**headers, sandbox.SECRET_HEADER.lower(): "sandbox-secret_tokeN"}):
        with pytest.raises(WebhookRejected) as caught:
            p.verify_webhook(request_of(bad, body))
        assert caught.value.status == 401


def test_a_start_message_becomes_an_inbound_message_of_the_chat() -> None:
    p = provider("https://api.telegram.org")
    update = sandbox.message_update(912345678, "/start abc_DEF-123", first_name="Ann", username="ann_k",
                                    date=1_700_000_000)
    result = p.parse_webhook(request_of(*sandbox.signed_update(update)))
    [inbound] = result.inbound
    assert inbound == InboundMessage(from_address="912345678", text="/start abc_DEF-123",
                                     received_at=inbound.received_at, provider_message_id="912345678:1",
                                     sender_name="@ann_k")
    assert inbound.received_at.timestamp() == 1_700_000_000 and inbound.received_at.tzinfo is not None
    assert result.statuses == [] and result.consent == []


def test_blocking_and_unblocking_the_bot_are_consent_reports() -> None:
    p = provider("https://api.telegram.org")
    blocked = p.parse_webhook(request_of(*sandbox.signed_update(
        sandbox.chat_member_update(912345678, old="member", new="kicked")))).consent
    unblocked = p.parse_webhook(request_of(*sandbox.signed_update(
        sandbox.chat_member_update(912345678, old="kicked", new="member")))).consent
    assert [(c.address, c.subscribed, c.reason) for c in blocked] == [("912345678", False, "bot blocked")]
    assert [(c.address, c.subscribed, c.reason) for c in unblocked] == [("912345678", True, "bot unblocked")]


def test_updates_with_nothing_for_us_parse_to_nothing() -> None:
    p = provider("https://api.telegram.org")
    photo = sandbox.message_update(5, "x")
    del photo["message"]["text"]
    edited = {"update_id": 7, "edited_message": sandbox.message_update(5, "x")["message"]}
    for update in (photo, edited):
        result = p.parse_webhook(request_of(*sandbox.signed_update(update)))
        assert (result.inbound, result.consent, result.statuses) == ([], [], [])


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"message": {}}', b'{"update_id": 1, "message": 3}',
                                  b'{"update_id": 1, "message": {"chat": {"id": "x"}, "date": 1, "text": "a"}}',
                                  b'{"update_id": 1, "message": {"chat": {"id": 1}, "date": "now", "text": "a"}}'])
def test_a_body_that_is_not_a_telegram_update_is_invalid(body: bytes) -> None:
    p = provider("https://api.telegram.org")
    with pytest.raises(Invalid):
        p.parse_webhook(request_of({"content-type": "application/json"}, body))


async def test_reply_sends_plain_text_to_the_chat() -> None:
    async with bot() as (url, control), provider(url) as p:
        inbound = InboundMessage(from_address="912345678", text="HELP", received_at=None)  # type: ignore[arg-type]
        assert await p.reply(inbound, "Reply STOP to unsubscribe <anytime>") is None
        control.fail_next("opt_out")
        assert await p.reply(inbound, "ignored: the person blocked the bot") is None  # logged, not raised
    first = control.requests[0]
    assert first.path == f"/bot{TOKEN}/sendMessage"
    assert json.loads(first.body) == {"chat_id": 912345678, "text": "Reply STOP to unsubscribe <anytime>"}


# --- the sandbox itself -------------------------------------------------------------------------------------

async def test_the_sandbox_answers_like_the_bot_api() -> None:
    async with bot() as (url, _), httpx.AsyncClient(base_url=url) as client:
        me = (await client.get(f"/bot{TOKEN}/getMe")).json()
        wrong = await client.post("/bot1:nope/getMe")
        unknown = await client.post(f"/bot{TOKEN}/sendPhoto")
        no_chat = await client.post(f"/bot{TOKEN}/sendMessage", json={"text": "x"})
        no_text = await client.post(f"/bot{TOKEN}/sendMessage", data={"chat_id": "5"})
        too_long = await client.post(f"/bot{TOKEN}/sendMessage", json={"chat_id": 5, "text": "x" * 4097})
        form = await client.post(f"/bot{TOKEN}/sendMessage", data={"chat_id": "-1001", "text": "hi"})
    assert me["ok"] and me["result"]["username"] == sandbox.DEFAULT_BOT_USERNAME and me["result"]["is_bot"]
    assert (wrong.status_code, wrong.json()) == (401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
    assert unknown.status_code == 404 and unknown.json()["description"] == "Not Found"
    assert no_chat.status_code == 400 and no_chat.json()["description"] == "Bad Request: chat_id is empty"
    assert no_text.json()["description"] == "Bad Request: message text is empty"
    assert too_long.json()["description"] == "Bad Request: message is too long"
    result = form.json()["result"]
    assert result["chat"] == {"id": -1001, "type": "supergroup", "title": "Sandbox group"} and result["text"] == "hi"


def test_the_sandbox_parses_html_entities_as_telegram_does() -> None:
    assert sandbox.parse_entities("<b>a</b> &lt;3 &#128512;", "HTML") == ("a <3 😀", None)
    assert sandbox.parse_entities("a & b", "HTML")[1] is not None  # a bare & must be &amp;
    assert sandbox.parse_entities("<b><i>x</b></i>", "HTML")[1] is not None
    assert sandbox.parse_entities('<a href="https://x.example">x</a>', "HTML") == ("x", None)
