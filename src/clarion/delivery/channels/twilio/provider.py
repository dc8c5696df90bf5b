"""SMS through Twilio: one form POST per message to the Messages resource, a batch sent concurrently.

Twilio answers a send with 201 and the message `sid` (queued at Twilio); what happens next arrives as status
callbacks (POSTed to the StatusCallback URL given with each message) and people's answers as inbound-message
webhooks, both signed with X-Twilio-Signature (signature.py).

Throughput: Twilio queues what a sender cannot send at once and drains it at the sender's rate — 1 message per
second for a US/CA long code, 3 for a toll-free number, 100 for a short code, the sum of the pool for a Messaging
Service — and fails messages with 30001 (queue overflow) once about four hours of them are waiting. The default
limit below is the long code's, the most common and the strictest; an account sending from a toll-free number,
a short code or a Messaging Service sets its channel's rate_limit_per_second to match.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape

import httpx

from clarion.delivery.channels import http_provider
from clarion.delivery.channels.base import (
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_READ,
    STATUS_SENT,
    ChannelCheckFailed,
    InboundMessage,
    OutgoingMessage,
    ProviderContext,
    SendResult,
    StatusUpdate,
    TextPayload,
    WebhookRejected,
    WebhookRequest,
    WebhookResponse,
    WebhookResult,
)
from clarion.delivery.channels.twilio.config import TwilioConfig
from clarion.delivery.channels.twilio.signature import signature_matches
from clarion.errors import Invalid, field_error
from clarion.kit.clock import utcnow
from clarion.kit.sms import sms_segments

logger = logging.getLogger("clarion.delivery.twilio")

API_VERSION = "2010-04-01"
STATUS_PATH = "/webhooks/twilio/status"
# Our reference (OutgoingMessage.ref) in each message's StatusCallback query. Twilio may call back before the send's
# answer is recorded, while the MessageSid is known to nobody here yet; the ref matches the status regardless. Twilio
# signs the URL with its query, so the ref cannot be forged.
REF_PARAM = "clarion_ref"

# Error codes (https://www.twilio.com/docs/api/errors) that mean "not now" rather than "never": too many
# requests (20429), the account's or sender's queue or rate limit (14107 rate limit, 21611 too many queued,
# 30001 queue overflow), the carrier's congestion or daily caps (30017, 30022 10DLC throughput, 30023/30027
# daily caps) and a lost segment (30009).
TRANSIENT_CODES = frozenset({20429, 14107, 21611, 30001, 30009, 30017, 30022, 30023, 30027})
# The recipient replied STOP to this sender (or its Messaging Service): Twilio refuses every message to them
# until they reply START.
OPTED_OUT_CODES = frozenset({21610})
AUTHENTICATE = 20003
# What a status callback's ErrorCode means, for the recipient's failure reason (callbacks carry only the code).
ERROR_TEXT = {
    21610: "the recipient replied STOP (unsubscribed)",
    30001: "queue overflow",
    30002: "account suspended",
    30003: "unreachable destination handset",
    30004: "message blocked",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "filtered as spam by the carrier",
    30008: "unknown error",
    30009: "missing segment",
    30017: "carrier network congestion",
    30022: "US A2P 10DLC rate limit exceeded",
    30023: "US A2P 10DLC daily cap reached",
    30027: "T-Mobile daily message limit reached",
    30034: "message from an unregistered number",
}
# Twilio's MessageStatus → ours. queued, accepted, scheduled and sending are steps before the carrier and move
# nothing; received/receiving belong to inbound messages.
_STATUS_MAP = {"sent": STATUS_SENT, "delivered": STATUS_DELIVERED, "read": STATUS_READ,
               "undelivered": STATUS_FAILED, "failed": STATUS_FAILED, "canceled": STATUS_FAILED}
_PRE_CARRIER = frozenset({"queued", "accepted", "scheduled", "sending"})
_INBOUND = frozenset({"received", "receiving"})

_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
EMPTY_TWIML = f"{_XML_DECLARATION}<Response/>".encode()


def twiml_message(text: str) -> bytes:
    """TwiML that answers an inbound message with one SMS."""
    return f"{_XML_DECLARATION}<Response><Message>{escape(text)}</Message></Response>".encode()


def _form(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Invalid("a Twilio webhook is a form-encoded body",
                      errors=[field_error(["body"], f"not application/x-www-form-urlencoded: {exc}")]) from None


def _as_int(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _describe(code: int | None) -> str:
    if code is None:
        return "Twilio reported a failure without an error code"
    return f"Twilio {code}: {ERROR_TEXT.get(code, 'see https://www.twilio.com/docs/api/errors/' + str(code))}"


class TwilioProvider(http_provider.HttpChannelProvider[TwilioConfig]):
    slug = "twilio"
    channel = "sms"
    config_schema = TwilioConfig
    # A US long code's rate (see the module's docstring): the safe floor for an account we know nothing else of.
    default_rate_limit_per_second = 1.0
    webhook_name = "twilio"
    webhook_rejected_status = 403  # Twilio's own examples answer an unsigned call with 403 Forbidden

    def __init__(self, config: TwilioConfig, context: ProviderContext | None = None) -> None:
        super().__init__(config, context)
        base = f"{config.api_base_url}/{API_VERSION}/Accounts/{config.account_sid}"
        self._messages_url = f"{base}/Messages.json"
        self._account_url = f"{base}.json"
        self._numbers_url = f"{base}/IncomingPhoneNumbers.json"
        # The form fields every message shares: the sender and where its statuses go.
        self._common: dict[str, str] = (
            {"From": config.from_number} if config.from_number else
            {"MessagingServiceSid": config.messaging_service_sid or ""})
        callback = config.status_callback_url
        if callback is None and self.context.public_base_url:
            callback = self.context.public_base_url.rstrip("/") + STATUS_PATH
        if callback:
            self._common["StatusCallback"] = callback

    def _client_options(self) -> dict[str, Any]:
        return {"auth": httpx.BasicAuth(self.config.account_sid, self.config.auth_token.get_secret_value()),
                "headers": {"Accept": "application/json"}}

    # --- sending -----------------------------------------------------------------------------------------

    async def _send_one(self, client: httpx.AsyncClient, message: OutgoingMessage) -> SendResult:
        payload = message.payload
        if not isinstance(payload, TextPayload):
            return SendResult.failed(message.ref, "the twilio channel sends text payloads only", transient=False)
        if not payload.text:
            return SendResult.failed(message.ref, "an SMS needs a body", transient=False)
        form = {"To": message.to, "Body": payload.text, **self._common}
        callback = self._common.get("StatusCallback")
        if callback:
            form["StatusCallback"] = f"{callback}{'&' if '?' in callback else '?'}{urlencode({REF_PARAM: message.ref})}"
        try:
            response = await client.post(self._messages_url, data=form)
        except httpx.HTTPError as exc:
            return SendResult.failed(message.ref, http_provider.transport_error(exc, "Twilio"), transient=True)
        if response.status_code in (200, 201):
            return self._accepted(message.ref, payload.text, response)
        return self._refused(message.ref, response)

    @staticmethod
    def _accepted(ref: str, text: str, response: httpx.Response) -> SendResult:
        try:
            data = response.json()
            sid = data["sid"]
        except (ValueError, KeyError, TypeError):
            # Accepted or not, we cannot tell: failing it (not retrying) is the side that never sends twice.
            return SendResult.failed(ref, f"Twilio answered {response.status_code} without a message sid",
                                     transient=False)
        segments = _as_int(data.get("num_segments")) or sms_segments(text)[0]  # Twilio sends it as a string
        return SendResult.sent(ref, sid, billable_units=max(1, segments))

    @staticmethod
    def _refused(ref: str, response: httpx.Response) -> SendResult:
        status = response.status_code
        data = http_provider.json_object(response) or {}
        code = data.get("code")
        code = code if isinstance(code, int) else None
        error = f"Twilio {code or status}: {data.get('message') or response.reason_phrase or 'error'}"
        if http_provider.transient_status(status) or code in TRANSIENT_CODES:
            return SendResult.failed(ref, error, transient=True, retry_after=http_provider.retry_after(response))
        if code in OPTED_OUT_CODES:
            return SendResult.failed(ref, error, transient=False, opted_out=True)
        if code == AUTHENTICATE or status == 401:
            return SendResult.failed(ref, f"Twilio refused the credentials ({error}): check the channel's "
                                          "account_sid and auth_token", transient=False)
        return SendResult.failed(ref, error, transient=False)

    async def check(self) -> None:
        client = self._http()
        try:
            account = await client.get(self._account_url)
            if account.status_code == 401:
                raise ChannelCheckFailed("Twilio refused the credentials: check account_sid and auth_token",
                                         errors=[field_error(["config", "auth_token"], "refused by Twilio")])
            if account.status_code == 404:
                raise ChannelCheckFailed(f"Twilio has no account {self.config.account_sid} for these credentials",
                                         errors=[field_error(["config", "account_sid"], "not found at Twilio")])
            if account.status_code != 200:
                raise ChannelCheckFailed(f"Twilio answered {account.status_code} to the account check",
                                         errors=[field_error(["config", "api_base_url"],
                                                             f"HTTP {account.status_code}")])
            status = account.json().get("status")
            if status not in (None, "active"):
                raise ChannelCheckFailed(f"the Twilio account is {status}",
                                         errors=[field_error(["config", "account_sid"], f"account is {status}")])
            number = self.config.from_number
            if number is not None and number.startswith("+"):
                found = await client.get(self._numbers_url, params={"PhoneNumber": number})
                if found.status_code == 200 and not found.json().get("incoming_phone_numbers"):
                    raise ChannelCheckFailed(f"{number} is not a phone number of this Twilio account",
                                             errors=[field_error(["config", "from_number"],
                                                                 "not a number of this account")])
        except httpx.HTTPError as exc:
            raise ChannelCheckFailed(f"cannot reach Twilio at {self.config.api_base_url}: {exc}",
                                     errors=[field_error(["config", "api_base_url"], str(exc))]) from exc
        except ValueError as exc:  # a 200 that is not JSON: not Twilio's API
            raise ChannelCheckFailed(f"{self.config.api_base_url} does not answer like Twilio's API",
                                     errors=[field_error(["config", "api_base_url"], str(exc))]) from exc

    # --- webhooks ----------------------------------------------------------------------------------------

    @classmethod
    def webhook_account(cls, config: Any) -> str | None:
        return str(config.account_sid)

    @classmethod
    def webhook_accounts_named(cls, request: WebhookRequest) -> list[str] | None:
        try:
            sids = [value for name, value in _form(request.body) if name == "AccountSid"]
        except Invalid:
            return []
        return sids[:1]

    def verify_webhook(self, request: WebhookRequest) -> None:
        signature = request.headers.get("x-twilio-signature")
        if not signature:
            raise WebhookRejected("the X-Twilio-Signature header is missing", status=self.webhook_rejected_status)
        try:
            params = _form(request.body) if request.method == "POST" else []
        except Invalid:
            params = None
        token = self.config.auth_token.get_secret_value()
        if params is None or not signature_matches(token, request.url, params, signature):
            raise WebhookRejected("the X-Twilio-Signature does not match this account's auth token and the URL",
                                  status=self.webhook_rejected_status)

    def parse_webhook(self, request: WebhookRequest) -> WebhookResult:
        form = dict(_form(request.body))
        if form.get("AccountSid") != self.config.account_sid:
            return WebhookResult()
        sid = form.get("MessageSid") or form.get("SmsSid")
        if not sid:
            raise Invalid("a Twilio messaging webhook names its MessageSid",
                          errors=[field_error(["body", "MessageSid"], "missing", "missing")])
        status = (form.get("MessageStatus") or form.get("SmsStatus") or "").lower()
        if status in _INBOUND or (not status and "Body" in form):
            sender = form.get("From")
            if not sender:
                raise Invalid("an inbound Twilio message names its sender",
                              errors=[field_error(["body", "From"], "missing", "missing")])
            return WebhookResult(inbound=[InboundMessage(from_address=sender, text=form.get("Body", ""),
                                                         received_at=utcnow(), provider_message_id=sid)])
        if status in _PRE_CARRIER:
            return WebhookResult()
        ours = _STATUS_MAP.get(status)
        if ours is None:
            raise Invalid(f"unknown Twilio MessageStatus {status!r}",
                          errors=[field_error(["body", "MessageStatus"], f"unknown status {status!r}")])
        ref = request.query.get(REF_PARAM)
        update = StatusUpdate(provider_message_id=sid, status=ours, occurred_at=utcnow(), ref=ref, raw=form)
        if ours == STATUS_FAILED:
            code = _as_int(form.get("ErrorCode"))
            update = StatusUpdate(provider_message_id=sid, status=ours, occurred_at=update.occurred_at,
                                  error_code=str(code) if code is not None else None, error=_describe(code),
                                  transient=code in TRANSIENT_CODES, opted_out=code in OPTED_OUT_CODES, ref=ref,
                                  raw=form)
        return WebhookResult(statuses=[update])

    async def reply(self, to: InboundMessage, text: str) -> WebhookResponse | None:
        # TwiML in the webhook's own response: Twilio sends it from the number the message came to.
        return WebhookResponse(200, twiml_message(text), "application/xml")

    def acknowledge(self) -> WebhookResponse:
        return WebhookResponse(200, EMPTY_TWIML, "application/xml")
