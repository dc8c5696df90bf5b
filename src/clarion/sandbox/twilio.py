"""A Twilio Programmable Messaging sandbox: the part of the 2010-04-01 REST API Clarion uses, with Twilio's request
validation, response and error shapes, its test-credential "magic" numbers, and signed status callbacks.

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json            send (form-encoded To, From | MessagingServiceSid,
                                                                     Body, StatusCallback) → 201 message JSON
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json      fetch a message
    GET  /2010-04-01/Accounts/{AccountSid}.json                     the account (credentials check)
    GET  /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json?PhoneNumber=…   the account's numbers

Every call needs HTTP basic auth AccountSid:AuthToken (else 401, code 20003). Errors are Twilio's JSON
{"code", "message", "more_info", "status"}. Sending to one of Twilio's magic test numbers fails the way Twilio's
test credentials do (+15005550001 invalid, +15005550002 cannot route, +15005550003 no international permission,
+15005550004 unsubscribed/blocked, +15005550009 not a mobile number).

After accepting a message the sandbox posts queued → sent → delivered to the message's StatusCallback (or to
`control.webhook_url` when the message named none), signed with the auth token over that exact URL, the way
Twilio does — so a Clarion serving the sandbox under /sandbox/twilio sees its own /webhooks/twilio/status move.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clarion.delivery.channels.twilio.signature import twilio_signature
from clarion.kit.clock import utcnow
from clarion.kit.sms import sms_segments
from clarion.sandbox.control import Callbacks, SandboxControl

API = "/2010-04-01/Accounts"
DEFAULT_ACCOUNT_SID = "AC" + "5ad0b0c5" * 4
DEFAULT_AUTH_TOKEN = "5ad0b0c5" * 4
DEFAULT_NUMBER = "+15005550006"  # Twilio's magic "valid, SMS-capable From" test number
MAX_BODY = 1600
# Pause between the status callbacks of one message: statuses arrive in order and a moment apart, as at Twilio.
CALLBACK_STEP_SECONDS = 0.05

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SHORT_CODE = re.compile(r"^\d{5,6}$")
# Twilio's magic To numbers for test credentials: code, message template.
_MAGIC_TO = {
    "+15005550001": (21211, "Invalid 'To' Phone Number: {to}"),
    "+15005550002": (21612, ("The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
                             "number: {sender} via SMS.")),
    "+15005550003": (21408, ("Permission to send an SMS has not been enabled for the region indicated by the 'To' "
                             "number: {to}.")),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
# What fail_next() makes the next send meet, in Twilio's words.
_FAILURES = {
    "transient": (429, 20429, "Too Many Requests"),
    "permanent": (400, 21211, "Invalid 'To' Phone Number: {to}"),
    "opt_out": (400, 21610, "Attempt to send to unsubscribed recipient"),
}


def _error(status: int, code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                         "status": status}, status_code=status, headers=dict(headers or {}))


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(at: Any) -> str:
    return format_datetime(at).replace("-0000", "+0000")


# --- signed webhook calls, as Twilio makes them (for the sandbox's own callbacks and for tests) ---------------

def signed_form(url: str, auth_token: str, params: Mapping[str, str]) -> tuple[dict[str, str], bytes]:
    """Headers and body of a form POST to `url` signed the way Twilio signs it."""
    headers = {"content-type": "application/x-www-form-urlencoded",
               "x-twilio-signature": twilio_signature(auth_token, url, params.items()),
               "user-agent": "TwilioProxy/1.1", "i-twilio-idempotency-token": secrets.token_hex(16)}
    return headers, urlencode(params).encode()


def status_callback(url: str, *, account_sid: str, auth_token: str, message_sid: str, status: str,
                    to: str = "+14155550100", sender: str = DEFAULT_NUMBER,
                    error_code: int | None = None) -> tuple[dict[str, str], bytes]:
    """A message status callback (MessageStatus queued|sent|delivered|undelivered|failed …)."""
    params = {"AccountSid": account_sid, "ApiVersion": "2010-04-01", "From": sender, "MessageSid": message_sid,
              "MessageStatus": status, "SmsSid": message_sid, "SmsStatus": status, "To": to}
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return signed_form(url, auth_token, params)


def inbound_message(url: str, *, account_sid: str, auth_token: str, sender: str, body: str,
                    to: str = DEFAULT_NUMBER, message_sid: str | None = None) -> tuple[dict[str, str], bytes]:
    """A message a person sent to one of the account's numbers, as Twilio posts it to the number's webhook."""
    sid = message_sid or _sid("SM")
    segments, _ = sms_segments(body)
    params = {"ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "",
              "FromZip": "", "SmsSid": sid, "FromState": "", "SmsStatus": "received", "FromCity": "", "Body": body,
              "FromCountry": "US", "To": to, "ToZip": "", "NumSegments": str(segments), "MessageSid": sid,
              "AccountSid": account_sid, "From": sender, "ApiVersion": "2010-04-01"}
    return signed_form(url, auth_token, params)


# --- the app ------------------------------------------------------------------------------------------------

class _Sandbox:
    def __init__(self, control: SandboxControl, account_sid: str, auth_token: str, numbers: tuple[str, ...],
                 messaging_services: tuple[str, ...], status_step_seconds: float = CALLBACK_STEP_SECONDS) -> None:
        self.control = control
        self.status_step_seconds = status_step_seconds
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.numbers = numbers
        self.messaging_services = messaging_services
        self.messages: dict[str, dict[str, Any]] = {}
        self.callbacks = Callbacks("twilio")

    def _authenticated(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(password, self.auth_token)

    def _gate(self, request: Request) -> Response | None:
        """Twilio's answer when the call may not go on: bad credentials, or another account's resource."""
        if not self._authenticated(request):
            return _error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if request.path_params["sid"] != self.account_sid:
            return _error(404, 20404, f"The requested resource {request.url.path} was not found")
        return None

    async def send(self, request: Request) -> Response:
        body = await request.body()
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        self.control.record(request, body, form)
        await self.control.pause()
        refused = self._gate(request)
        if refused is not None:
            return refused
        to, sender, service = form.get("To", ""), form.get("From", ""), form.get("MessagingServiceSid", "")
        text, callback = form.get("Body", ""), form.get("StatusCallback", "")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not text and not form.get("MediaUrl") and not form.get("ContentSid"):
            return _error(400, 21602, "Message body is required.")
        if not _E164.match(to):
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if sender and sender not in self.numbers:
            return _error(400, 21606, f"The From phone number {sender} is not a valid, SMS-capable inbound phone "
                                      "number or short code for your account.")
        if service and service not in self.messaging_services:
            return _error(400, 21701, f"The Messaging Service Sid {service} is invalid.")
        if len(text) > MAX_BODY:
            return _error(400, 21617, "The concatenated message body exceeds the 1600 character limit.")
        if callback and not re.match(r"^https?://[^\s/?#]+", callback):
            return _error(400, 21609, f"Invalid StatusCallback url: {callback}")
        if to in _MAGIC_TO:
            code, message = _MAGIC_TO[to]
            return _error(400, code, message.format(to=to, sender=sender or service))
        failure = self.control.next_failure()
        if failure is not None:
            status, code, message = _FAILURES[failure]
            headers = {"Retry-After": "1"} if status == 429 else None
            return _error(status, code, message.format(to=to), headers)
        message = self._message(to, sender or None, service or None, text)
        self.messages[message["sid"]] = message
        target = callback or self.control.webhook_url
        if target:
            self.callbacks.start(self._post_statuses(target, message))
        return JSONResponse(message, status_code=201)

    def _message(self, to: str, sender: str | None, service: str | None, text: str) -> dict[str, Any]:
        sid, now = _sid("SM"), _rfc2822(utcnow())
        uri = f"{API}/{self.account_sid}/Messages/{sid}.json"
        return {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": text, "date_created": now,
            "date_sent": None, "date_updated": now, "direction": "outbound-api", "error_code": None,
            "error_message": None, "from": sender, "messaging_service_sid": service, "num_media": "0",
            "num_segments": str(sms_segments(text)[0]), "price": None, "price_unit": "USD", "sid": sid,
            # With a Messaging Service Twilio first "accepts" the message, then picks the sender and queues it.
            "status": "accepted" if service else "queued", "subresource_uris": {"media": uri[:-5] + "/Media.json"},
            "to": to, "uri": uri,
        }

    async def _post_statuses(self, url: str, message: dict[str, Any]) -> None:
        for status in ("queued", "sent", "delivered"):
            await asyncio.sleep(self.status_step_seconds)
            message["status"] = status
            headers, body = status_callback(url, account_sid=self.account_sid, auth_token=self.auth_token,
                                            message_sid=message["sid"], status=status, to=message["to"],
                                            sender=message["from"] or DEFAULT_NUMBER)
            await self.callbacks.post(url, headers, body)  # Twilio goes on to the next status after a failure too

    async def fetch(self, request: Request) -> Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        message = self.messages.get(request.path_params["message_sid"])
        if message is None:
            return _error(404, 20404, f"The requested resource {request.url.path} was not found")
        return JSONResponse(message)

    async def account(self, request: Request) -> Response:
        self.control.record(request)
        refused = self._gate(request)
        if refused is not None:
            return refused
        return JSONResponse({"sid": self.account_sid, "friendly_name": "Clarion sandbox", "status": "active",
                             "type": "Full", "owner_account_sid": self.account_sid,
                             "uri": f"{API}/{self.account_sid}.json"})

    async def numbers_list(self, request: Request) -> Response:
        self.control.record(request, data=dict(request.query_params))
        refused = self._gate(request)
        if refused is not None:
            return refused
        wanted = request.query_params.get("PhoneNumber")
        numbers = [n for n in self.numbers if n.startswith("+") and (wanted is None or n == wanted)]
        return JSONResponse({"incoming_phone_numbers": [
            {"sid": "PN" + secrets.token_hex(16), "account_sid": self.account_sid, "phone_number": n,
             "capabilities": {"sms": True, "mms": True, "voice": True}} for n in numbers]})

    async def close(self) -> None:
        await self.callbacks.close()


def create_app(control: SandboxControl, *, account_sid: str = DEFAULT_ACCOUNT_SID,
               auth_token: str = DEFAULT_AUTH_TOKEN, numbers: tuple[str, ...] = (DEFAULT_NUMBER,),
               messaging_services: tuple[str, ...] = (),
               status_step_seconds: float = CALLBACK_STEP_SECONDS) -> Starlette:
    """The sandbox for one Twilio account owning `numbers` (E.164 or short codes) and `messaging_services`; each
    message's status callbacks follow each other `status_step_seconds` apart."""
    sandbox = _Sandbox(control, account_sid, auth_token, numbers, messaging_services, status_step_seconds)
    app = Starlette(routes=[
        Route(API + "/{sid}/Messages.json", sandbox.send, methods=["POST"]),
        Route(API + "/{sid}/Messages/{message_sid}.json", sandbox.fetch, methods=["GET"]),
        Route(API + "/{sid}/IncomingPhoneNumbers.json", sandbox.numbers_list, methods=["GET"]),
        Route(API + "/{sid}.json", sandbox.account, methods=["GET"]),
    ], lifespan=_lifespan(sandbox))
    # Whoever serves it without a lifespan (tests: serve_asgi) closes it through here.
    app.state.sandbox = sandbox
    return app


def _lifespan(sandbox: _Sandbox) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await sandbox.close()

    return lifespan
