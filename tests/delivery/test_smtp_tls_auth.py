"""STARTTLS, implicit TLS and AUTH against aiosmtpd with a self-signed certificate made in the test."""

from __future__ import annotations

import ssl

import pytest

from clarion.delivery.channels.base import ChannelCheckFailed
from clarion.delivery.channels.smtp import SmtpConfig, SmtpProvider
from tests.delivery.smtp_server import PasswordCheck, RecordingHandler, self_signed_tls, smtp_server
from tests.delivery.test_smtp_provider import message


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    return self_signed_tls(tmp_path_factory.mktemp("tls"))


def provider(port: int, **overrides: object) -> SmtpProvider:
    return SmtpProvider(SmtpConfig.model_validate({"host": "127.0.0.1", "port": port, "timeout": 5,
                                                   "validate_certs": False, **overrides}))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_starttls_and_auth_deliver(tls_context: ssl.SSLContext, mechanism: str) -> None:
    handler = RecordingHandler()
    auth = PasswordCheck("mailer", "s3cret-pass")
    excluded = [m for m in ("PLAIN", "LOGIN") if m != mechanism]
    with smtp_server(handler, tls_context=tls_context, require_starttls=True, authenticator=auth,
                     auth_required=True, auth_exclude_mechanism=excluded) as server:
        async with provider(server.port, security="starttls", username="mailer", password="s3cret-pass",
                            pool_size=2) as smtp:
            await smtp.check()
            results = await smtp.send([message(n) for n in range(6)])

    assert all(r.ok for r in results), [r.error for r in results]
    assert len(handler.received) == 6
    assert set(auth.mechanisms) == {mechanism}


async def test_a_wrong_password_fails_the_check_on_the_password_and_sends_transiently(
        tls_context: ssl.SSLContext) -> None:
    handler = RecordingHandler()
    auth = PasswordCheck("mailer", "s3cret-pass")
    with smtp_server(handler, tls_context=tls_context, require_starttls=True, authenticator=auth,
                     auth_required=True) as server:
        smtp = provider(server.port, security="starttls", username="mailer", password="wrong")
        with pytest.raises(ChannelCheckFailed) as failed:
            await smtp.check()
        results = await smtp.send([message(1), message(2)])
        await smtp.close()

    assert failed.value.errors and failed.value.errors[0]["loc"] == ["config", "password"]
    # Credentials may be fixed later: nothing is given up on for good.
    assert all(not r.ok and r.transient for r in results)
    assert handler.received == []


async def test_a_self_signed_certificate_is_refused_when_certificates_are_validated(
        tls_context: ssl.SSLContext) -> None:
    with smtp_server(RecordingHandler(), tls_context=tls_context, require_starttls=True) as server:
        smtp = provider(server.port, security="starttls", validate_certs=True)
        with pytest.raises(ChannelCheckFailed):
            await smtp.check()
        [result] = await smtp.send([message(1)])
        await smtp.close()
    assert not result.ok and result.transient


async def test_implicit_tls(tls_context: ssl.SSLContext) -> None:
    handler = RecordingHandler()
    with smtp_server(handler, ssl_context=tls_context) as server:
        async with provider(server.port, security="tls") as smtp:
            results = await smtp.send([message(n) for n in range(3)])
    assert all(r.ok for r in results), [r.error for r in results]
    assert len(handler.received) == 3


async def test_a_sender_refused_for_want_of_tls_is_transient_not_the_recipients_fault(
        tls_context: ssl.SSLContext) -> None:
    handler = RecordingHandler()
    with smtp_server(handler, tls_context=tls_context, require_starttls=True) as server:
        async with provider(server.port, security="none") as smtp:
            [result] = await smtp.send([message(1)])
    assert not result.ok and result.transient
    assert "530" in (result.error or "")
    assert handler.received == []
