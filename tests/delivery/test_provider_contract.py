"""Every messaging provider passes the same contract against its sandbox, over real HTTP."""

from __future__ import annotations

import pytest

from clarion.delivery.channels import registry
from clarion.delivery.channels.base import STATUS_FAILED, WebhookRejected
from tests.delivery.contract import ProviderHarness, load_harnesses
from tests.fakes.serving import serve_asgi

HARNESSES = load_harnesses()
WITH_WEBHOOKS = [h for h in HARNESSES if h.receives_webhooks]
STATUS_CASES = [(h, s) for h in HARNESSES for s in h.webhook_statuses]


def _id(h: ProviderHarness) -> str:
    return h.slug


async def _send_one(harness: ProviderHarness, ref: str = "r1", *, fail: str | None = None):  # type: ignore[no-untyped-def]
    app, control = harness.sandbox()
    if fail:
        control.fail_next(fail)  # type: ignore[arg-type]
    async with serve_asgi(app) as url:
        config = harness.config(url)
        message = harness.message(ref)
        async with registry.build_provider(harness.slug, config) as provider:
            [result] = await provider.send([message])
    return result, control, config, message


def test_every_messaging_channel_has_a_harness() -> None:
    assert {h.channel for h in HARNESSES} >= {"whatsapp", "sms", "telegram", "push"}


@pytest.mark.parametrize("harness", HARNESSES, ids=_id)
async def test_send_success_speaks_the_wire_format(harness: ProviderHarness) -> None:
    result, control, _, message = await _send_one(harness)
    assert result.ok and result.ref == "r1" and result.provider_message_id
    assert result.billable_units >= 1
    [request] = control.requests
    harness.assert_wire_format(request, message)


@pytest.mark.parametrize("harness", HARNESSES, ids=_id)
async def test_transient_failure_then_retry_succeeds(harness: ProviderHarness) -> None:
    app, control = harness.sandbox()
    control.fail_next("transient")
    async with serve_asgi(app) as url, registry.build_provider(harness.slug, harness.config(url)) as provider:
        [first] = await provider.send([harness.message("r1")])
        [second] = await provider.send([harness.message("r1")])
    assert not first.ok and first.transient and not first.opted_out and first.error
    assert second.ok and second.provider_message_id


@pytest.mark.parametrize("harness", HARNESSES, ids=_id)
async def test_permanent_failure(harness: ProviderHarness) -> None:
    result, *_ = await _send_one(harness, fail="permanent")
    assert not result.ok and not result.transient and not result.opted_out and result.error


@pytest.mark.parametrize("harness", [h for h in HARNESSES if h.opts_out_at_send], ids=_id)
async def test_opt_out_at_send_time(harness: ProviderHarness) -> None:
    result, *_ = await _send_one(harness, fail="opt_out")
    assert not result.ok and not result.transient and result.opted_out


@pytest.mark.parametrize(("harness", "status"), STATUS_CASES, ids=lambda v: v if isinstance(v, str) else v.slug)
async def test_webhook_statuses(harness: ProviderHarness, status: str) -> None:
    config = harness.config("http://127.0.0.1:9")
    request = harness.status_webhook(config, "pm-1", status)
    provider = registry.build_provider(harness.slug, config)
    provider.verify_webhook(request)
    [update] = provider.parse_webhook(request).statuses
    assert (update.provider_message_id, update.status) == ("pm-1", status)


@pytest.mark.parametrize("harness", [h for h in HARNESSES if STATUS_FAILED in h.webhook_statuses], ids=_id)
async def test_webhook_failures_are_classified(harness: ProviderHarness) -> None:
    config = harness.config("http://127.0.0.1:9")
    provider = registry.build_provider(harness.slug, config)
    kinds = {}
    for failure in ("transient", "permanent", "opt_out"):
        [update] = provider.parse_webhook(harness.status_webhook(config, "pm-1", STATUS_FAILED,
                                                                 failure=failure)).statuses  # type: ignore[arg-type]
        kinds[failure] = (update.status, update.transient, update.opted_out, bool(update.error_code))
    assert kinds == {"transient": ("failed", True, False, True), "permanent": ("failed", False, False, True),
                     "opt_out": ("failed", False, True, True)}


@pytest.mark.parametrize("harness", WITH_WEBHOOKS, ids=_id)
async def test_forged_webhook_is_rejected(harness: ProviderHarness) -> None:
    config = harness.config("http://127.0.0.1:9")
    provider = registry.build_provider(harness.slug, config)
    genuine = harness.any_webhook(config)
    provider.verify_webhook(genuine)
    with pytest.raises(WebhookRejected):
        provider.verify_webhook(harness.forged(genuine))
