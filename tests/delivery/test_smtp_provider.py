"""The SMTP provider against a real aiosmtpd server: pooling, classification, reconnects."""

from __future__ import annotations

import asyncio

import pytest

from clarion.delivery.channels.base import ChannelCheckFailed, EmailPayload, OutgoingMessage, TextPayload
from clarion.delivery.channels.smtp import SmtpConfig, SmtpProvider
from clarion.delivery.email_message import build_email
from tests.delivery.smtp_server import RecordingHandler, smtp_server, unused_port

SENDER = "news@shop.example"


def message(n: int, to: str | None = None) -> OutgoingMessage:
    to = to or f"user{n}@example.com"
    raw = build_email(from_addr=f"Shop <{SENDER}>", to_addr=to, subject=f"Offer {n}",
                      html=f"<p>Hello {n}</p>", text=f"Hello {n}", list_unsubscribe_url=f"https://clarion.test/t/u/tok{n}",
                      message_id_domain="shop.example")
    return OutgoingMessage(ref=f"r{n}", to=to, channel="email",
                           payload=EmailPayload(raw=raw, envelope_from=SENDER, envelope_to=(to,),
                                                subject=f"Offer {n}"))


def provider(port: int, **overrides: object) -> SmtpProvider:
    return SmtpProvider(SmtpConfig.model_validate({"host": "127.0.0.1", "port": port, "security": "none",
                                                   "timeout": 5, **overrides}))


async def test_a_batch_of_200_goes_out_exactly_once_over_4_persistent_connections() -> None:
    handler = RecordingHandler()
    batch = [message(n) for n in range(200)]
    with smtp_server(handler) as server:
        async with provider(server.port, pool_size=4) as smtp:
            results = await smtp.send(batch)
            first_peers = set(handler.peers)
            again = await smtp.send([message(1000 + n) for n in range(8)])

    assert [r.ref for r in results] == [m.ref for m in batch]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert all(r.ok for r in again)
    assert len(handler.received) == 208
    by_recipient = {r.rcpt_tos[0]: r for r in handler.received}
    assert len(by_recipient) == 208  # nothing delivered twice
    for m in batch:
        got = by_recipient[m.to]
        assert got.content == m.payload.raw  # type: ignore[union-attr]
        assert got.mail_from == SENDER
    assert len(first_peers) == 4  # the batch was spread over the whole pool ...
    assert handler.peers == first_peers  # ... and the second batch reused the same sessions
    # The result carries the Message-ID, the handle bounces and replies refer to.
    assert results[0].provider_message_id is not None
    assert results[0].provider_message_id.encode() in batch[0].payload.raw  # type: ignore[union-attr]


async def test_4xx_recipients_are_transient_and_5xx_permanent() -> None:
    handler = RecordingHandler(rcpt_replies={
        "grey@example.com": "451 4.7.1 greylisted, try again later",
        "gone@example.com": "550 5.1.1 no such user",
    })
    batch = [message(1), message(2, "grey@example.com"), message(3, "gone@example.com"), message(4)]
    with smtp_server(handler) as server:
        async with provider(server.port, pool_size=1) as smtp:
            ok1, grey, gone, ok4 = await smtp.send(batch)

    assert ok1.ok and ok4.ok  # a refusal resets the envelope; the session goes on
    assert not grey.ok and grey.transient and "451" in (grey.error or "")
    assert not gone.ok and not gone.transient and "550" in (gone.error or "")
    assert sorted(r.rcpt_tos[0] for r in handler.received) == ["user1@example.com", "user4@example.com"]


async def test_a_connection_closed_by_the_server_is_reopened_and_the_rest_goes_out() -> None:
    handler = RecordingHandler(hang_up_after=7)
    batch = [message(n) for n in range(40)]
    with smtp_server(handler) as server:
        async with provider(server.port, pool_size=2) as smtp:
            results = await smtp.send(batch)

    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert sorted(r.rcpt_tos[0] for r in handler.received) == sorted(m.to for m in batch)
    assert len(handler.peers) >= 40 // 7  # it really had to reconnect, several times


async def test_a_connection_dropped_mid_message_is_retried_once_on_a_new_one() -> None:
    handler = RecordingHandler(abort_at_data={5, 12})
    batch = [message(n) for n in range(20)]
    with smtp_server(handler) as server:
        async with provider(server.port, pool_size=1) as smtp:
            results = await smtp.send(batch)

    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    received = [r.rcpt_tos[0] for r in handler.received]
    assert sorted(received) == sorted(m.to for m in batch)  # every message exactly once
    assert handler.data_count == 22  # two were sent twice, each accepted only the second time


async def test_sessions_are_renewed_after_max_messages_per_connection() -> None:
    handler = RecordingHandler()
    with smtp_server(handler) as server:
        async with provider(server.port, pool_size=1, max_messages_per_connection=3) as smtp:
            results = await smtp.send([message(n) for n in range(7)])

    assert all(r.ok for r in results)
    assert len(handler.peers) == 3  # 3 + 3 + 1
    assert max(handler.per_connection.values()) == 3


async def test_an_unreachable_server_fails_every_message_transiently_without_raising() -> None:
    async with provider(unused_port(), pool_size=3, timeout=2) as smtp:
        results = await smtp.send([message(n) for n in range(10)])

    assert [r.ref for r in results] == [f"r{n}" for n in range(10)]
    assert all(not r.ok and r.transient for r in results)
    assert all("cannot connect" in (r.error or "") for r in results)


async def test_a_payload_that_is_not_email_is_a_permanent_failure() -> None:
    text = OutgoingMessage(ref="t", to="+15550100", channel="sms", payload=TextPayload(text="hi"))
    async with provider(unused_port()) as smtp:
        [result] = await smtp.send([text])
    assert not result.ok and not result.transient


@pytest.mark.parametrize("address", ["broken\r\naddress@example.com", "no-at-sign", "a b@example.com", ""])
async def test_an_address_that_cannot_go_on_the_wire_as_given_is_permanent(address: str) -> None:
    handler = RecordingHandler()
    raw = message(1).payload.raw  # type: ignore[union-attr]
    bad = OutgoingMessage(ref="bad", to=address, channel="email",
                          payload=EmailPayload(raw=raw, envelope_from=SENDER, envelope_to=(address,)))
    with smtp_server(handler) as server:
        async with provider(server.port) as smtp:
            [result, good] = await smtp.send([bad, message(2)])
    assert not result.ok and not result.transient
    assert good.ok
    assert [r.rcpt_tos for r in handler.received] == [["user2@example.com"]]


async def test_concurrent_sends_share_the_pool_without_exceeding_it() -> None:
    handler = RecordingHandler()
    with smtp_server(handler) as server:
        async with provider(server.port, pool_size=3) as smtp:
            batches = [[message(b * 100 + n) for n in range(30)] for b in range(4)]
            results = await asyncio.gather(*(smtp.send(batch) for batch in batches))

    assert all(r.ok for rs in results for r in rs)
    assert len(handler.received) == 120
    assert len(handler.peers) == 3


async def test_check_passes_against_a_live_server_and_names_the_host_when_unreachable() -> None:
    with smtp_server(RecordingHandler()) as server:
        await provider(server.port).check()
    with pytest.raises(ChannelCheckFailed) as failed:
        await provider(unused_port(), timeout=2).check()
    assert failed.value.status == 422
    assert failed.value.errors and failed.value.errors[0]["loc"] == ["config", "host"]
