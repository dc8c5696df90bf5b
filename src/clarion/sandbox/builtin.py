"""The built-in sandbox accounts `clarion demo` sends through: the WhatsApp Cloud API and Twilio sandboxes mounted in
the app itself under /sandbox/whatsapp and /sandbox/twilio, their status callbacks aimed at the app's own
/webhooks/..., so a new user sees sent → delivered → read arrive without an account anywhere.

Mounted only when `settings.sandbox_providers` is on (the demo turns it on): anyone may post to a sandbox and it
answers as the provider would, so a production install never exposes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette

from clarion.sandbox import twilio, whatsapp
from clarion.sandbox.control import SandboxControl

WHATSAPP_PATH = "/sandbox/whatsapp"
TWILIO_PATH = "/sandbox/twilio"
WHATSAPP_ACCOUNT = whatsapp.SandboxAccount()
# Statuses a second apart, about as Meta and Twilio report them (Twilio's own sandbox default is 50 ms). A status
# moves a recipient only once the dispatcher has recorded the send, and it records up to 50 sends together: at 25
# SMS a second (the sandbox has no carrier limit) a batch is recorded within 2 s, before its delivered statuses come.
STATUS_STEP_SECONDS = 1.0
DEMO_SMS_PER_SECOND = 25.0


def whatsapp_channel(base_url: str, name: str = "WhatsApp sandbox") -> dict[str, Any]:
    """The POST /api/v1/channels body of a WhatsApp channel sending through the sandbox of the app at `base_url`."""
    return {"name": name, "channel": "whatsapp", "provider": "whatsapp",
            "config": WHATSAPP_ACCOUNT.channel_config(base_url.rstrip("/") + WHATSAPP_PATH)}


def twilio_channel(base_url: str, name: str = "Twilio sandbox (SMS)") -> dict[str, Any]:
    """The POST /api/v1/channels body of a Twilio SMS channel sending through the sandbox of the app at `base_url`.
    Status callbacks come to the StatusCallback the provider names: the app's own /webhooks/twilio/status."""
    return {"name": name, "channel": "sms", "provider": "twilio", "rate_limit_per_second": DEMO_SMS_PER_SECOND,
            "config": {"account_sid": twilio.DEFAULT_ACCOUNT_SID, "auth_token": twilio.DEFAULT_AUTH_TOKEN,
                       "from_number": twilio.DEFAULT_NUMBER, "api_base_url": base_url.rstrip("/") + TWILIO_PATH}}


@dataclass
class MountedSandboxes:
    """The sandboxes an app serves: their controls (what they received) and what must be closed on shutdown."""

    whatsapp: SandboxControl
    twilio: SandboxControl
    twilio_app: Starlette

    async def close(self) -> None:
        # Mounted apps get no lifespan of their own: the Twilio sandbox's callback client is closed from here.
        await self.twilio_app.state.sandbox.close()


def mount(app: Starlette, base_url: str) -> MountedSandboxes:
    """Serve both sandboxes inside `app`, posting their status webhooks to `base_url`'s /webhooks/."""
    base = base_url.rstrip("/")
    whatsapp_control = SandboxControl(webhook_url=f"{base}/webhooks/whatsapp")
    # Twilio posts to the StatusCallback each message names; this is where a message that named none reports.
    twilio_control = SandboxControl(webhook_url=f"{base}/webhooks/twilio/status")
    twilio_app = twilio.create_app(twilio_control, status_step_seconds=STATUS_STEP_SECONDS)
    whatsapp_app = whatsapp.create_app(whatsapp_control, WHATSAPP_ACCOUNT, status_delay_seconds=STATUS_STEP_SECONDS)
    app.mount(WHATSAPP_PATH, whatsapp_app, name="sandbox-whatsapp")
    app.mount(TWILIO_PATH, twilio_app, name="sandbox-twilio")
    return MountedSandboxes(whatsapp_control, twilio_control, twilio_app)
