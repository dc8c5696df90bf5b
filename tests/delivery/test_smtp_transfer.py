"""The SMTP provider's own MAIL/RCPT/DATA (channels.smtp.transfer) does on the wire, and answers, exactly what
aiosmtplib's sendmail does, against a real aiosmtpd server: same commands and options, same refused recipients,
same errors, and the session stays usable after an error (RSET)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import pytest
from aiosmtplib.email import quote_address
from hypothesis import given
from hypothesis import strategies as st

from clarion.delivery.channels.smtp.transfer import transfer
from clarion.kit.mailbox import ADDR_SPEC, is_plain_mailbox
from tests.delivery.smtp_server import RecordingHandler, smtp_server

MESSAGE = b"Subject: hi\r\nMessage-ID: <1@x.test>\r\n\r\nHello\r\n.leading dot\r\n"


@given(st.from_regex(ADDR_SPEC, fullmatch=True))
def test_aiosmtplib_puts_a_plain_mailbox_on_the_wire_as_it_is(address: str) -> None:
    assert is_plain_mailbox(address)
    assert quote_address(address) == f"<{address}>"


@pytest.mark.parametrize("address", ["Fan <fan@example.com>", "fän@example.com", "fan@[127.0.0.1]",
                                     '"a b"@example.com', "fan@example.com "])
def test_anything_else_is_not_taken_for_a_plain_mailbox(address: str) -> None:
    assert not is_plain_mailbox(address)


@dataclass
class WireHandler(RecordingHandler):
    """Records the envelope commands as the server saw them."""

    commands: list[tuple[str, ...]] = field(default_factory=list)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        self.commands.append(("MAIL", address, *mail_options))
        envelope.mail_from, envelope.mail_options = address, mail_options
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        self.commands.append(("RCPT", address, *rcpt_options))
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append(("RSET",))
        return "250 OK"


Send = Callable[[aiosmtplib.SMTP, str, list[str], bytes], Awaitable[Any]]


async def _sendmail(smtp: aiosmtplib.SMTP, sender: str, recipients: list[str], message: bytes) -> Any:
    """What the provider called before transfer(): sendmail, asking for SMTPUTF8 for a non-ASCII address."""
    options = [] if all(a.isascii() for a in (sender, *recipients)) else ["SMTPUTF8"]
    return await smtp.sendmail(sender, recipients, message, mail_options=options)


async def _transfer(smtp: aiosmtplib.SMTP, sender: str, recipients: list[str], message: bytes) -> Any:
    return await transfer(smtp, sender, recipients, message)


async def _session(send: Send, handler: WireHandler, envelopes: list[tuple[str, list[str], bytes]]
                   ) -> tuple[list[Any], list[tuple[str, ...]], list[tuple[str, list[str], bytes]]]:
    """Each envelope sent in turn on one session: (what each send returned or raised, the server's view of the
    commands, the messages it took)."""
    handler.commands.clear()
    handler.received.clear()
    outcomes: list[Any] = []
    with smtp_server(handler) as server:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False)
        await smtp.connect()
        for sender, recipients, message in envelopes:
            try:
                refused, reply = await send(smtp, sender, recipients, message)
                outcomes.append(("ok", {k: (v.code, v.message) for k, v in refused.items()}, reply))
            except aiosmtplib.SMTPRecipientsRefused as exc:
                outcomes.append(("all refused", [(e.code, e.message, e.recipient) for e in exc.recipients]))
            except aiosmtplib.SMTPException as exc:
                outcomes.append((type(exc).__name__, str(exc)))
        await smtp.quit()
    received = [(r.mail_from, r.rcpt_tos, r.content) for r in handler.received]
    return outcomes, list(handler.commands), received


ENVELOPES = [
    ("news@shop.example", ["fan@example.com"], MESSAGE),
    ("news@shop.example", ["a@example.com", "greylisted@example.com", "b@example.com"], MESSAGE),
    ("news@shop.example", ["greylisted@example.com", "gone@example.com"], MESSAGE),  # all refused: RSET
    ("news@shop.example", ["fan@example.com"], b"Subject: bare LF\n\nline one\nline two\n"),  # SIZE normalised
    ("news@shop.example", ["fän@example.com"], MESSAGE),  # not plain: sendmail itself, with SMTPUTF8
    ("news@shop.example", ["after@example.com"], MESSAGE),  # the session still works
]


async def test_transfer_does_on_the_wire_and_answers_what_sendmail_does() -> None:
    def handler() -> WireHandler:
        return WireHandler(rcpt_replies={"greylisted@example.com": "451 4.7.1 greylisted",
                                         "gone@example.com": "550 5.1.1 no such user"})

    expected = await _session(_sendmail, handler(), ENVELOPES)
    assert await _session(_transfer, handler(), ENVELOPES) == expected
    outcomes, commands, received = expected
    assert [o[0] for o in outcomes] == ["ok", "ok", "all refused", "ok", "ok", "ok"]
    assert outcomes[1][1] == {"greylisted@example.com": (451, "4.7.1 greylisted")}
    mails = [c for c in commands if c[0] == "MAIL"]
    assert len(mails) == 6 and all(any(o.upper().startswith("SIZE=") for o in c[2:]) for c in mails)
    assert [c for c in mails if "SMTPUTF8" in c] == [mails[4]]
    assert ("RSET",) in commands
    assert [r[1] for r in received] == [["fan@example.com"], ["a@example.com", "b@example.com"],
                                        ["fan@example.com"], ["fän@example.com"], ["after@example.com"]]


@dataclass
class SlowRcptHandler(RecordingHandler):
    """Answers RCPT only after a delay longer than the client waits."""

    delay: float = 3.0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@pytest.mark.parametrize("send", [_sendmail, _transfer])
async def test_a_server_that_stops_answering_times_out_and_the_session_is_closed(send: Send) -> None:
    with smtp_server(SlowRcptHandler()) as server:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False, timeout=0.3)
        await smtp.connect()
        started = asyncio.get_running_loop().time()
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await send(smtp, "news@shop.example", ["slow@example.com"], MESSAGE)
        waited = asyncio.get_running_loop().time() - started
    assert not smtp.is_connected
    assert waited < 2.5  # within the transaction's deadline (4 replies × 0.3 s), not the server's 3 s
