"""The provider contract: what every messaging provider must do, checked against its sandbox over real HTTP.

Each provider's test module puts a `ProviderHarness` in `HARNESSES` (tests/delivery/contract/<slug>.py,
registered in `harness_modules` below); tests/delivery/test_provider_contract.py runs every check against
every harness.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from clarion.delivery.channels.base import OutgoingMessage, WebhookRequest
from clarion.sandbox.control import Failure, RecordedRequest, SandboxControl


class ProviderHarness(Protocol):
    slug: str
    channel: str
    # The statuses its webhooks report (STATUS_* of channels.base); empty for a provider with no status
    # callbacks (Telegram, Web Push).
    webhook_statuses: tuple[str, ...]
    # Whether the provider receives webhook calls at all (signature checks apply).
    receives_webhooks: bool
    # Whether an opt-out shows at send time (Twilio 21610, Telegram 403, Web Push 404/410) rather than only in a
    # later status webhook (WhatsApp 131050, covered by the failed-status classification).
    opts_out_at_send: bool

    def sandbox(self) -> tuple[Any, SandboxControl]:
        """A fresh sandbox ASGI app and its control."""

    def config(self, sandbox_url: str) -> dict[str, Any]:
        """A provider config (as POSTed to /api/v1/channels) that sends to the sandbox at `sandbox_url`."""

    def message(self, ref: str) -> OutgoingMessage:
        """A message this provider can send."""

    def assert_wire_format(self, request: RecordedRequest, message: OutgoingMessage) -> None:
        """Assert the request the provider made is the real API's shape for `message`."""

    def status_webhook(self, config: dict[str, Any], provider_message_id: str, status: str, *,
                       failure: Failure | None = None) -> WebhookRequest:
        """An authentic status callback for a sent message (`failure` picks the error a failed status carries)."""

    def any_webhook(self, config: dict[str, Any]) -> WebhookRequest:
        """Some authentic webhook call for this account (a status or an inbound message)."""

    def forged(self, request: WebhookRequest) -> WebhookRequest:
        """The same call with its signature / secret token broken."""


def harness_modules() -> list[str]:
    return ["whatsapp", "twilio", "telegram", "webpush"]


def load_harnesses() -> list[ProviderHarness]:
    """The harnesses of the providers that exist so far (a module not written yet is not a harness)."""
    found: list[ProviderHarness] = []
    for name in harness_modules():
        try:
            module = importlib.import_module(f"tests.delivery.contract.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.delivery.contract.{name}":
                raise
            continue
        found.extend(module.HARNESSES)
    return found
