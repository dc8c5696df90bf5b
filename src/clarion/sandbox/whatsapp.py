"""A WhatsApp Cloud API sandbox: the part of Meta's Graph API Clarion uses, with its validation, responses and
error bodies, and status webhooks signed the way Meta signs them (X-Hub-Signature-256 over the raw body).

Served on a port by the provider tests; mounted at /sandbox/whatsapp for the demo, where `control.webhook_url`
points at Clarion's own /webhooks/whatsapp so sent → delivered → read arrive on their own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clarion.sandbox.control import Callbacks, SandboxControl

_VERSION = re.compile(r"^v[0-9]{1,3}\.[0-9]{1,3}$")
_TEXT_LIMIT = 4096
_CALLBACK_DATA_LIMIT = 512
SIGNATURE_HEADER = "x-hub-signature-256"

# Error codes the sandbox produces, with the title and details Meta gives them.
ERRORS: dict[int, tuple[str, str]] = {
    100: ("Invalid parameter", "Invalid parameter"),
    130429: ("Rate limit hit", "Cloud API message throughput has been reached."),
    131026: ("Message undeliverable", "Message Undeliverable."),
    131050: (("Unable to deliver the message. This recipient has chosen to stop receiving marketing messages "
              "on WhatsApp from your business"),
             "The user has stopped receiving marketing messages from this business."),
    131056: ("(Business Account, Consumer Account) pair rate limit hit",
             ("Too many messages sent from the sender phone number to the same recipient phone number in a "
              "short period of time.")),
    132001: ("Template name does not exist in the translation", "template name does not exist in the language"),
}
_ERROR_DOCS = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


@dataclass(frozen=True, slots=True)
class SandboxAccount:
    """One WhatsApp business phone number as the sandbox knows it (the demo's built-in account by default)."""

    phone_number_id: str = "106540352242922"
    access_token: str = "sandbox-whatsapp-access-token"
    app_secret: str = "sandbox-whatsapp-app-secret"
    verify_token: str = "sandbox-whatsapp-verify-token"
    display_phone_number: str = "15550783881"
    verified_name: str = "Clarion Sandbox"
    business_account_id: str = "102290129340398"

    def channel_config(self, api_base_url: str) -> dict[str, Any]:
        """The provider config (as POSTed to /api/v1/channels) that sends through this sandbox account."""
        return {"phone_number_id": self.phone_number_id, "access_token": self.access_token,
                "app_secret": self.app_secret, "verify_token": self.verify_token,
                "business_account_id": self.business_account_id, "api_base_url": api_base_url}


# --- webhook calls, as Meta makes them ----------------------------------------------------------------------

def signature(body: bytes, app_secret: str) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signed_call(payload: Mapping[str, Any], app_secret: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a webhook POST carrying `payload`. Meta sends compact JSON with non-ASCII escaped,
    and signs exactly those bytes."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return {"content-type": "application/json", "user-agent": "facebookexternalua",
            SIGNATURE_HEADER: signature(body, app_secret)}, body



def _envelope(account: SandboxAccount, field_name: str, value: dict[str, Any]) -> dict[str, Any]:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": account.display_phone_number,
                          "phone_number_id": account.phone_number_id},
             **value}
    return {"object": "whatsapp_business_account",
            "entry": [{"id": account.business_account_id, "changes": [{"value": value, "field": field_name}]}]}


def _now() -> str:
    return str(int(time.time()))


def status_payload(account: SandboxAccount, wamid: str, status: str, *, recipient_id: str,
                   ref: str | None = None, error_code: int | None = None,
                   timestamp: str | None = None) -> dict[str, Any]:
    """A `messages` webhook carrying one status ("sent", "delivered", "read" or "failed" with `error_code`)."""
    item: dict[str, Any] = {"id": wamid, "status": status, "timestamp": timestamp or _now(),
                            "recipient_id": recipient_id}
    if ref is not None:
        item["biz_opaque_callback_data"] = ref
    if status in ("sent", "delivered"):
        conversation: dict[str, Any] = {"id": hashlib.sha1(f"{account.phone_number_id}:{recipient_id}".encode())
                                        .hexdigest(), "origin": {"type": "marketing"}}
        if status == "sent":
            conversation["expiration_timestamp"] = str(int(item["timestamp"]) + 86400)
        item["conversation"] = conversation
        item["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "marketing",
                           "type": "regular"}
    if status == "failed":
        code = error_code if error_code is not None else 131026
        title, details = ERRORS.get(code, ("Unknown error", "Unknown error"))
        item["errors"] = [{"code": code, "title": title, "message": title,
                           "error_data": {"details": details}, "href": _ERROR_DOCS}]
    return _envelope(account, "messages", {"statuses": [item]})


def inbound_text_payload(account: SandboxAccount, from_number: str, text: str, *, name: str | None = None,
                         wamid: str | None = None, timestamp: str | None = None) -> dict[str, Any]:
    """A `messages` webhook carrying a text a person sent to the business number."""
    wa_id = from_number.removeprefix("+")
    return _envelope(account, "messages", {
        "contacts": [{"profile": {"name": name or "Sandbox User"}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, "id": wamid or new_wamid(wa_id), "timestamp": timestamp or _now(),
                      "type": "text", "text": {"body": text}}],
    })


def user_preferences_payload(account: SandboxAccount, wa_id: str, value: str, *,
                             timestamp: int | None = None) -> dict[str, Any]:
    """A `user_preferences` webhook: the person stopped ("stop") or resumed ("resume") marketing messages."""
    wa_id = wa_id.removeprefix("+")
    detail = ("User requested to stop marketing messages" if value == "stop"
              else "User requested to resume marketing messages")
    return _envelope(account, "user_preferences", {
        "contacts": [{"profile": {"name": "Sandbox User"}, "wa_id": wa_id}],
        "user_preferences": [{"wa_id": wa_id, "detail": detail, "category": "marketing_messages",
                              "value": value, "timestamp": timestamp or int(time.time())}],
    })


def new_wamid(wa_id: str) -> str:
    """An id shaped like Meta's: "wamid." and base64 of an opaque blob naming the recipient."""
    blob = f"{wa_id}:{secrets.token_hex(10).upper()}".encode()
    return "wamid." + base64.b64encode(blob).decode().rstrip("=")


# --- the Graph API ----------------------------------------------------------------------------------------

def graph_error(http_status: int, code: int, message: str, *, type_: str = "OAuthException",
                details: str | None = None, subcode: int | None = None) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "type": type_, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = secrets.token_urlsafe(12)
    headers = {}
    if http_status == 401:
        headers["WWW-Authenticate"] = f'OAuth "Facebook Platform" "invalid_token" "{message}"'
    return JSONResponse({"error": error}, status_code=http_status, headers=headers)


def _cloud_error(code: int, http_status: int = 400) -> JSONResponse:
    title, details = ERRORS[code]
    return graph_error(http_status, code, f"(#{code}) {title}", details=details)


def _invalid(message: str, details: str | None = None) -> JSONResponse:
    return graph_error(400, 100, f"(#100) {message}", details=details)


class _Rejected(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class _Callbacks(Callbacks):
    """Status webhooks on their way, and (payload, HTTP status answered) of each delivered."""

    def __init__(self, delay_seconds: float) -> None:
        super().__init__("whatsapp")
        self.delay_seconds = delay_seconds
        self.delivered: list[tuple[dict[str, Any], int]] = []


def create_app(control: SandboxControl, account: SandboxAccount | None = None, *,
               templates: Mapping[str, Iterable[str]] | None = None,
               status_delay_seconds: float = 0.5) -> Starlette:
    """The sandbox for `account`. `templates` (name → language codes), when given, are the only approved
    templates: others meet error 132001 as at Meta. Status callbacks follow each other `status_delay_seconds`
    apart."""
    account = account or SandboxAccount()
    approved = {name: set(languages) for name, languages in templates.items()} if templates is not None else None
    callbacks = _Callbacks(status_delay_seconds)

    def authorise(request: Request, phone_number_id: str, version: str) -> None:
        given = request.headers.get("authorization", "")
        token = given[7:].strip() if given[:7].lower() == "bearer " else request.query_params.get("access_token", "")
        if not token or not hmac.compare_digest(token.encode(), account.access_token.encode()):
            raise _Rejected(graph_error(401, 190, "Invalid OAuth access token - Cannot parse access token"))
        if not _VERSION.match(version):
            raise _Rejected(graph_error(400, 2500, f"Unknown path components: /{version}/{phone_number_id}"))
        if phone_number_id != account.phone_number_id:
            raise _Rejected(graph_error(
                400, 100, f"Unsupported {request.method.lower()} request. Object with ID '{phone_number_id}' "
                "does not exist, cannot be loaded due to missing permissions, or does not support this operation. "
                "Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
                type_="GraphMethodException", subcode=33))

    async def phone_number(request: Request) -> Response:
        body = await request.body()
        control.record(request, body, dict(request.query_params))
        await control.pause()
        try:
            authorise(request, request.path_params["phone_number_id"], request.path_params["version"])
        except _Rejected as exc:
            return exc.response
        known = {"id": account.phone_number_id, "display_phone_number": account.display_phone_number,
                 "verified_name": account.verified_name, "quality_rating": "GREEN",
                 "messaging_limit_tier": "TIER_250", "code_verification_status": "VERIFIED"}
        wanted = [f for f in request.query_params.get("fields", "").split(",") if f]
        return JSONResponse({**{f: known[f] for f in wanted if f in known}, "id": account.phone_number_id})

    async def messages(request: Request) -> Response:
        body = await request.body()
        try:
            data: Any = json.loads(body) if body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        control.record(request, body, data)
        await control.pause()
        try:
            authorise(request, request.path_params["phone_number_id"], request.path_params["version"])
            to, kind = _validate_message(data, approved)
        except _Rejected as exc:
            return exc.response
        failure = control.next_failure()
        if failure == "transient":
            return _cloud_error(130429)
        if failure == "permanent":
            return _cloud_error(131026)
        wamid = new_wamid(to)
        if control.webhook_url:
            final = ("failed",) if failure == "opt_out" else ("sent", "delivered", "read")
            callbacks.start(_deliver(callbacks, control, account, wamid, to, data.get("biz_opaque_callback_data"),
                                     final))
        message: dict[str, Any] = {"id": wamid}
        if kind == "template":
            message["message_status"] = "accepted"
        return JSONResponse({"messaging_product": "whatsapp",
                             "contacts": [{"input": data["to"], "wa_id": to}], "messages": [message]})

    app = Starlette(routes=[
        Route("/{version}/{phone_number_id}/messages", messages, methods=["POST"]),
        Route("/{version}/{phone_number_id}", phone_number, methods=["GET"]),
    ])
    app.state.callbacks = callbacks
    return app


def _validate_message(data: Any, approved: Mapping[str, set[str]] | None) -> tuple[str, str]:
    """(recipient wa_id, message type) of a well-formed send, or the Graph API's refusal."""
    if not isinstance(data, dict):
        raise _Rejected(_invalid("Invalid parameter", "The request body must be a JSON object"))
    for required in ("messaging_product", "to"):
        if required not in data:
            raise _Rejected(_invalid(f"The parameter {required} is required."))
    if data["messaging_product"] != "whatsapp":
        raise _Rejected(_invalid(f'Param messaging_product must be one of {{WHATSAPP}} - got '
                                 f'"{data["messaging_product"]}".'))
    if data.get("recipient_type", "individual") != "individual":
        raise _Rejected(_invalid("Invalid parameter", "recipient_type must be individual"))
    to = str(data["to"]).strip().removeprefix("+")
    if not to.isascii() or not to.isdigit() or not 7 <= len(to) <= 15:
        raise _Rejected(_invalid("Invalid parameter", f"Invalid WhatsApp ID: {data['to']}"))
    callback_data = data.get("biz_opaque_callback_data")
    if callback_data is not None and (not isinstance(callback_data, str)
                                      or len(callback_data) > _CALLBACK_DATA_LIMIT):
        raise _Rejected(_invalid("Invalid parameter", "biz_opaque_callback_data must be a string of at most "
                                 f"{_CALLBACK_DATA_LIMIT} characters"))
    kind = data.get("type", "text")
    if kind == "text":
        text = data.get("text")
        if not isinstance(text, dict) or not isinstance(text.get("body"), str) or not text["body"]:
            raise _Rejected(_invalid("The parameter text['body'] is required."))
        if len(text["body"]) > _TEXT_LIMIT:
            raise _Rejected(_invalid("Invalid parameter", f"text['body'] is longer than {_TEXT_LIMIT} characters"))
    elif kind == "template":
        _validate_template(data.get("template"), approved)
    else:
        raise _Rejected(_invalid(f'Param type must be one of {{TEXT, TEMPLATE}} in this sandbox - got "{kind}".'))
    return to, kind


def _validate_template(template: Any, approved: Mapping[str, set[str]] | None) -> None:
    if not isinstance(template, dict):
        raise _Rejected(_invalid("The parameter template is required."))
    name = template.get("name")
    if not isinstance(name, str) or not name:
        raise _Rejected(_invalid("The parameter template['name'] is required."))
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(code, str) or not code:
        raise _Rejected(_invalid("The parameter template['language']['code'] is required."))
    components = template.get("components", [])
    if not isinstance(components, list) or not all(isinstance(c, dict) and "type" in c for c in components):
        raise _Rejected(_invalid("Invalid parameter", "template['components'] must be a list of components "
                                 "each with a type"))
    if approved is not None and code not in approved.get(name, ()):
        title, _ = ERRORS[132001]
        raise _Rejected(graph_error(404, 132001, f"(#132001) {title}",
                                    details=f"template name ({name}) does not exist in {code}"))


async def _deliver(callbacks: _Callbacks, control: SandboxControl, account: SandboxAccount, wamid: str,
                   recipient_id: str, ref: str | None, statuses: tuple[str, ...]) -> None:
    for status in statuses:
        await asyncio.sleep(callbacks.delay_seconds)
        url = control.webhook_url
        if not url:
            return
        payload = status_payload(account, wamid, status, recipient_id=recipient_id, ref=ref,
                                 error_code=131050 if status == "failed" else None)
        answered = await callbacks.post(url, *signed_call(payload, account.app_secret))
        if answered is None:
            return
        callbacks.delivered.append((payload, answered))


async def settle(app: Starlette) -> list[tuple[dict[str, Any], int]]:
    """Wait for every status callback under way; (payload, HTTP status answered) of each delivered so far."""
    callbacks: _Callbacks = app.state.callbacks
    await callbacks.settle()
    return list(callbacks.delivered)
