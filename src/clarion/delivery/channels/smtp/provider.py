"""Email over SMTP: a pool of persistent aiosmtplib connections shared by every send() of one provider."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import deque

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from clarion.delivery.channels.base import (
    ChannelCheckFailed,
    ChannelProvider,
    EmailPayload,
    OutgoingMessage,
    ProviderContext,
    SendResult,
)
from clarion.delivery.channels.smtp.config import SmtpConfig
from clarion.delivery.channels.smtp.dkim import DkimKey, is_signed_by, sign_message
from clarion.delivery.channels.smtp.transfer import transfer
from clarion.errors import field_error
from clarion.kit.mailbox import is_plain_mailbox

logger = logging.getLogger("clarion.delivery.smtp")

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
# 421 "service not available, closing transmission channel": the session is over, not the message.
_SERVICE_CLOSING = 421


class _ConnectFailed(Exception):
    """Could not open (or authenticate) a session; says nothing about the message being sent."""


def _is_transient(code: int) -> bool:
    return 400 <= code < 500


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SMTPResponseException):
        return f"{exc.code} {exc.message}".strip()
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _message_id(raw: bytes) -> str | None:
    head = raw.split(b"\r\n\r\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    return match.group(1).decode("ascii", "replace") if match else None


def _envelope_problem(sender: str, recipients: tuple[str, ...]) -> str | None:
    # aiosmtplib quietly drops characters it cannot send (a CR LF inside an address disappears), which
    # would deliver to an address nobody asked for; such an address is refused here instead.
    if not recipients:
        return "no envelope recipient"
    for role, address in (("sender", sender), *(("recipient", r) for r in recipients)):
        if is_plain_mailbox(address):
            continue  # the usual case, settled by one regular expression
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain or any(c.isspace() or c in "<>" for c in address):
            return f"envelope {role} {address!r} is not a mailbox"
    return None


class _Connection:
    """One SMTP session, reopened when it dropped or has carried its quota of messages."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.smtp: aiosmtplib.SMTP | None = None
        self.sent = 0

    def _client(self) -> aiosmtplib.SMTP:
        cfg = self.config
        return aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            use_tls=cfg.security == "tls",
            # False, not None: None would mean "upgrade if offered", and 'none' means no TLS at all.
            start_tls=cfg.security == "starttls",
            validate_certs=cfg.validate_certs,
            timeout=cfg.timeout,
            local_hostname=cfg.local_hostname,
        )

    async def ready(self) -> aiosmtplib.SMTP:
        if self.smtp is not None and self.smtp.is_connected:
            if self.sent < self.config.max_messages_per_connection:
                return self.smtp
            await self.close()
        smtp = self._client()
        try:
            await smtp.connect()  # connects, upgrades with STARTTLS and logs in, as configured
        except (TimeoutError, SMTPException, OSError, ssl.SSLError) as exc:
            smtp.close()
            raise _ConnectFailed(_describe(exc)) from exc
        self.smtp, self.sent = smtp, 0
        return smtp

    async def close(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        if smtp.is_connected:
            try:
                await smtp.quit(timeout=min(self.config.timeout, 5.0))
            except (SMTPException, OSError):
                smtp.close()

    def discard(self) -> None:
        """Drop a session in an unknown state without talking to the server."""
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()


class SmtpProvider(ChannelProvider[SmtpConfig]):
    slug = "smtp"
    channel = "email"
    config_schema = SmtpConfig

    def __init__(self, config: SmtpConfig, context: ProviderContext | None = None) -> None:
        super().__init__(config, context)
        self._dkim: DkimKey | None = config.dkim.key() if config.dkim else None
        self._connections = [_Connection(config) for _ in range(config.pool_size)]
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()
        for connection in self._connections:
            self._idle.put_nowait(connection)

    async def send(self, batch: list[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(batch)
        queue = deque(enumerate(batch))
        last_connect_error: list[str] = []

        async def drain() -> None:
            connection = await self._idle.get()
            try:
                while queue:
                    index, message = queue.popleft()
                    try:
                        results[index] = await self._deliver(connection, message)
                    except _ConnectFailed as exc:
                        results[index] = SendResult.failed(message.ref, f"cannot connect: {exc}",
                                                           transient=True)
                        last_connect_error.append(str(exc))
                        # This slot cannot reach the server; the other slots keep draining the queue.
                        return
            finally:
                self._idle.put_nowait(connection)

        await asyncio.gather(*(drain() for _ in range(min(len(self._connections), len(batch)))))
        reason = f"cannot connect: {last_connect_error[-1]}" if last_connect_error else "not attempted"
        return [result or SendResult.failed(batch[i].ref, reason, transient=True)
                for i, result in enumerate(results)]

    async def _deliver(self, connection: _Connection, message: OutgoingMessage) -> SendResult:
        payload = message.payload
        if not isinstance(payload, EmailPayload):
            return SendResult.failed(message.ref, "the smtp channel sends email payloads only",
                                     transient=False)
        envelope_from = payload.envelope_from or (self.config.from_email or "")
        problem = _envelope_problem(envelope_from, payload.envelope_to)
        if problem:
            return SendResult.failed(message.ref, problem, transient=False)
        raw = payload.raw
        if self._dkim is not None and not is_signed_by(raw, self._dkim):
            raw = sign_message(raw, self._dkim)

        # A session that dropped (idle timeout, server restart, a per-session cap) is reopened and the
        # message tried once more: SMTP accepts a message only with the reply to the final dot, so a
        # message interrupted before that reply was not taken.
        for attempt in (1, 2):
            smtp = await connection.ready()
            try:
                refused, _reply = await transfer(smtp, envelope_from, payload.envelope_to, raw)
            except SMTPRecipientsRefused as exc:
                codes = [r.code for r in exc.recipients]
                detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
                return SendResult.failed(message.ref, detail, transient=any(_is_transient(c) for c in codes))
            except SMTPResponseException as exc:
                if exc.code == _SERVICE_CLOSING and attempt == 1:
                    connection.discard()
                    continue
                if isinstance(exc, SMTPSenderRefused):
                    # MAIL FROM refused (TLS or authentication required, sender not allowed) is about this
                    # account's settings, not the recipient: every message would meet it and it can be
                    # fixed, so it must not burn the recipients as permanent failures.
                    return SendResult.failed(message.ref, f"sender refused: {_describe(exc)}", transient=True)
                return SendResult.failed(message.ref, _describe(exc), transient=_is_transient(exc.code))
            except SMTPTimeoutError as exc:
                # The server may still be working on it: no immediate retry on a slow server.
                connection.discard()
                return SendResult.failed(message.ref, _describe(exc), transient=True)
            except (SMTPServerDisconnected, ConnectionError, ssl.SSLError) as exc:
                connection.discard()
                if attempt == 1:
                    continue
                return SendResult.failed(message.ref, _describe(exc), transient=True)
            except SMTPNotSupported as exc:
                return SendResult.failed(message.ref, _describe(exc), transient=False)
            except ValueError as exc:  # an address aiosmtplib refuses to put on the wire
                return SendResult.failed(message.ref, str(exc), transient=False)
            connection.sent += 1
            if refused:
                # Some envelope recipients took it: the message went out, the rest is noted.
                logger.info("smtp: %s accepted with refused recipients %s", message.ref, refused)
            return SendResult.sent(message.ref, _message_id(raw))
        raise AssertionError("unreachable: the second attempt always returns")

    async def check(self) -> None:
        probe = _Connection(self.config)
        try:
            smtp = await probe.ready()
            await smtp.noop()
        except _ConnectFailed as exc:
            cause = exc.__cause__
            field = "password" if isinstance(cause, SMTPAuthenticationError) else "host"
            raise ChannelCheckFailed(f"SMTP check failed: {exc}",
                                     errors=[field_error(["config", field], str(exc))]) from exc
        except (SMTPException, OSError) as exc:
            raise ChannelCheckFailed(f"SMTP check failed: {_describe(exc)}",
                                     errors=[field_error(["config", "host"], _describe(exc))]) from exc
        finally:
            await probe.close()

    async def close(self) -> None:
        await asyncio.gather(*(connection.close() for connection in self._connections))
