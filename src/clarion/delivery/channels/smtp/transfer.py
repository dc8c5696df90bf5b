"""One message's SMTP transaction (MAIL, RCPT, DATA) on an open aiosmtplib session.

aiosmtplib's sendmail() parses the sender and every recipient with email.utils.parseaddr before it takes the
session, and again in mail() and rcpt(), and measures the SIZE option by normalising the message's line endings,
which data() does once more: ~40 µs of CPU a message (bench/send_pipeline.py spends ~500 µs a message in all).
Clarion's envelopes are plain ASCII mailboxes and its messages already have CRLF line endings, so for those the
same commands go out here with the same options, without the parsing; the outcome is the one sendmail gives
(refused recipients returned, SMTPRecipientsRefused when every one is refused, SMTPSenderRefused, RSET after an
error reply). Any other envelope goes through sendmail itself.

aiosmtplib also arms a timer for every reply it waits for (asyncio.wait_for: ~10 µs each, four a message). Here
one deadline covers the transaction, the session's timeout once per reply it waits for; past it the session,
in an unknown state, is closed and SMTPTimeoutError raised, as aiosmtplib does when one reply is late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiosmtplib
from aiosmtplib import (
    SMTPHeloError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPStatus,
    SMTPTimeoutError,
)

from clarion.kit.mailbox import is_plain_mailbox

_ACCEPTED_RECIPIENT = (SMTPStatus.completed, SMTPStatus.will_forward)


async def transfer(smtp: aiosmtplib.SMTP, sender: str, recipients: Sequence[str],
                   message: bytes) -> tuple[dict[str, SMTPResponse], str]:
    """What `smtp.sendmail(sender, recipients, message)` does, with the same result: (refused recipients, the
    server's reply to the message)."""
    addresses = (sender, *recipients)
    # parseaddr gives a plain mailbox back unchanged, so aiosmtplib would put exactly `<address>` on the wire
    # (a property test holds the two together).
    if not all(is_plain_mailbox(address) for address in addresses):
        options = [] if all(address.isascii() for address in addresses) else ["SMTPUTF8"]
        return await smtp.sendmail(sender, list(recipients), message, mail_options=options)
    await _greet(smtp)
    mail_options = [b"size=%d" % _size(message)] if smtp.supports_extension("size") else []
    # Replies waited for: MAIL, each RCPT, DATA's go-ahead and the final one.
    deadline = None if smtp.timeout is None else smtp.timeout * (3 + len(recipients))
    try:
        async with asyncio.timeout(deadline):
            response = await smtp.execute_command(b"MAIL", b"FROM:<%s>" % sender.encode("ascii"), *mail_options,
                                                  timeout=None)
            if response.code != SMTPStatus.completed:
                raise SMTPSenderRefused(response.code, response.message, sender)
            refused: list[SMTPRecipientRefused] = []
            for recipient in recipients:
                response = await smtp.execute_command(b"RCPT", b"TO:<%s>" % recipient.encode("ascii"),
                                                      timeout=None)
                if response.code not in _ACCEPTED_RECIPIENT:
                    refused.append(SMTPRecipientRefused(response.code, response.message, recipient))
            if len(refused) == len(recipients):
                raise SMTPRecipientsRefused(refused)
            reply = await smtp.data(message, timeout=None)
    except TimeoutError as exc:  # the deadline, or aiosmtplib's own (SMTPTimeoutError is a TimeoutError)
        smtp.close()
        if isinstance(exc, SMTPTimeoutError):
            raise
        raise SMTPTimeoutError(f"no reply within {deadline} s") from exc
    except (SMTPResponseException, SMTPRecipientsRefused):
        try:  # reset the envelope for the session's next message, as sendmail does
            await smtp.rset()
        except (ConnectionError, SMTPResponseException):
            pass
        raise
    return {error.recipient: SMTPResponse(error.code, error.message) for error in refused}, reply.message


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    """EHLO (HELO if the server refuses it) unless this session has greeted already: as sendmail does."""
    if not smtp.is_ehlo_or_helo_needed:
        return
    try:
        await smtp.ehlo()
    except SMTPHeloError:
        if not smtp.is_connected:
            raise
        await smtp.helo()


def _size(message: bytes) -> int:
    """RFC 1870 SIZE: the octets as data() sends them before dot-stuffing, i.e. with CRLF line endings."""
    crlf = message.count(b"\r\n")
    if message.count(b"\n") == crlf and message.count(b"\r") == crlf:
        return len(message)
    from aiosmtplib.protocol import normalize_message_line_endings

    return len(normalize_message_line_endings(message))
