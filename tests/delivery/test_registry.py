"""Building providers from config dicts: validation errors name the field."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from clarion.delivery.channels.base import ProviderContext, WebhookNotSupported, WebhookRequest
from clarion.delivery.channels.registry import build_provider, register, slugs
from clarion.delivery.channels.smtp import SmtpProvider
from clarion.errors import Invalid


def test_builtin_providers_are_registered() -> None:
    assert {"smtp", "outbox"} <= set(slugs())


def test_a_valid_smtp_config_builds_a_provider_with_secret_fields_hidden() -> None:
    smtp = build_provider("smtp", {"host": "mail.example.com", "username": "u", "password": "hunter2-long"})
    assert isinstance(smtp, SmtpProvider)
    assert isinstance(smtp.config.password, SecretStr)
    assert "hunter2" not in repr(smtp.config)
    assert smtp.config.port == 587 and smtp.config.security == "starttls"


@pytest.mark.parametrize(("config", "loc"), [
    ({"host": "mail.example.com", "port": 70000}, ["config", "port"]),
    ({"host": "mail.example.com", "security": "ssl"}, ["config", "security"]),
    ({"host": "mail.example.com", "username": "u"}, ["config", "password"]),
    ({"host": "mail.example.com", "username": "u", "password": "p", "security": "none"},
     ["config", "security"]),
    ({"host": "mail.example.com", "pool_size": 0}, ["config", "pool_size"]),
    ({"host": "mail.example.com", "from_email": "nope"}, ["config", "from_email"]),
    ({"host": "mail.example.com", "dkim": {"domain": "x.example", "selector": "s", "private_key": "junk"}},
     ["config", "dkim", "private_key"]),
    ({"port": 25}, ["config", "host"]),
    ({"host": "mail.example.com", "hostname": "typo"}, ["config", "hostname"]),
])
def test_bad_config_is_a_422_naming_the_field(config: dict, loc: list) -> None:
    with pytest.raises(Invalid) as invalid:
        build_provider("smtp", config)
    assert invalid.value.status == 422
    assert loc in [e["loc"] for e in invalid.value.errors or []]


def test_an_unknown_provider_is_a_422_on_provider() -> None:
    with pytest.raises(Invalid) as invalid:
        build_provider("carrier-pigeon", {})
    assert [e["loc"] for e in invalid.value.errors or []] == [["provider"]]
    assert "smtp" in invalid.value.message


def test_a_slug_cannot_be_taken_twice() -> None:
    class Impostor(SmtpProvider):
        pass

    with pytest.raises(ValueError, match="already taken"):
        register(Impostor)


def test_the_outbox_needs_its_index(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="outbox_index"):
        build_provider("outbox", {"data_dir": str(tmp_path), "tenant_id": str(uuid.uuid4())},
                       context=ProviderContext())


def test_webhooks_are_not_supported_by_default() -> None:
    smtp = build_provider("smtp", {"host": "mail.example.com"})
    with pytest.raises(WebhookNotSupported):
        smtp.parse_webhook(WebhookRequest(method="POST", url="https://x/webhooks/smtp", headers={}, query={},
                                          body=b""))
