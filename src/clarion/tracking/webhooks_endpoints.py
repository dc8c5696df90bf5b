"""Provider webhooks (/webhooks/<provider>[/<kind>], public: the signature is the authentication) and the call log
(/api/v1/webhook-calls, tenant-scoped).

The webhook routes own their transactions instead of taking the request's session: replies to inbound messages
(and the provider's answer) are made after the commit, never while a transaction is open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from clarion.db import Database, SessionDep
from clarion.delivery.channels.base import WebhookRequest, WebhookResponse
from clarion.errors import ClarionError, Forbidden
from clarion.tenancy.deps import ReadAuth
from clarion.tracking import webhooks_service as service
from clarion.tracking.webhooks_schemas import WebhookCallPage, WebhookCallRead

public_router = APIRouter(prefix="/webhooks", tags=["webhooks"])
router = APIRouter(prefix="/webhook-calls", tags=["webhooks"])


async def _webhook_request(request: Request) -> WebhookRequest:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > service.MAX_BODY_BYTES:
        raise ClarionError("a webhook call may be at most 1 MiB", status=413, code="too_large")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > service.MAX_BODY_BYTES:
            raise ClarionError("a webhook call may be at most 1 MiB", status=413, code="too_large")
    body = bytes(received)
    # The URL the provider called and signed: the install's public base URL, not whatever a proxy shows us.
    base_url: str = request.app.state.settings.base_url
    url = base_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return WebhookRequest(method=request.method, url=url,
                          headers={name.lower(): value for name, value in request.headers.items()},
                          query=dict(request.query_params), body=body)


def _response(answer: WebhookResponse) -> Response:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type)


async def _call_and_candidates(request: Request, name: str,
                               kind: str | None) -> tuple[WebhookRequest, list[service.Account]]:
    """The call as received and the channel accounts it may be for (the caller closes them: service.close_all).
    An unknown provider name or kind is a 404 before the body is read."""
    service.known_webhook(name)
    service.check_kind(kind)
    call = await _webhook_request(request)
    database: Database = request.app.state.db
    async with database.transaction() as session:
        accounts = await service.candidates(session, name, call, secret=request.app.state.secret_key,
                                            public_base_url=request.app.state.settings.base_url)
    return call, accounts


async def _verification(request: Request, name: str, kind: str | None) -> Response:
    call, accounts = await _call_and_candidates(request, name, kind)
    try:
        answer = service.handshake(accounts, call)
    finally:
        await service.close_all(accounts)
    if answer is None:
        raise Forbidden("no channel account of this install answers this verification request",
                        code="webhook_verification_failed")
    return _response(answer)


async def _delivery(request: Request, name: str, kind: str | None) -> Response:
    call, accounts = await _call_and_candidates(request, name, kind)
    database: Database = request.app.state.db
    try:
        verified = service.authentic(name, accounts, call)  # raises the provider's rejection: nothing written
        async with database.transaction() as session:
            outcomes = [await service.apply_call(session, account, call, kind=kind,
                                                 secret=request.app.state.secret_key) for account in verified]
        answer = await service.respond(outcomes)
    finally:
        await service.close_all(accounts)
    invalid = next((o.invalid for o in outcomes if o.invalid is not None), None)
    if invalid is not None:
        raise invalid  # logged with its error above; the provider learns its call was not understood
    return _response(answer)


_DOC = {"responses": {200: {"description": "Accepted (or an exact replay, acknowledged)"},
                      401: {"description": "Not signed by any account here (WhatsApp, Telegram)"},
                      403: {"description": "Not signed by any account here (Twilio)"},
                      404: {"description": "No provider receives webhooks under this name"}}}


def _route_both(method: str, handle: Callable[[Request, str, str | None], Awaitable[Response]], *, summary: str,
                kind_summary: str) -> None:
    """/webhooks/<name> and /webhooks/<name>/<kind> (the kind a provider's calls are told apart by, Twilio's
    status / inbound) for one method."""
    async def webhook(name: str, request: Request) -> Response:
        return await handle(request, name, None)

    async def webhook_kind(name: str, kind: str, request: Request) -> Response:
        return await handle(request, name, kind)

    verb = method.lower()
    public_router.add_api_route("/{name}", webhook, methods=[method], name=f"{verb}_webhook", summary=summary,
                                **_DOC)
    public_router.add_api_route("/{name}/{kind}", webhook_kind, methods=[method], name=f"{verb}_webhook_kind",
                                summary=kind_summary, **_DOC)


_route_both("GET", _verification, summary="Provider webhook verification (WhatsApp hub.challenge)",
            kind_summary="Provider webhook verification, per kind")
_route_both("POST", _delivery, summary="Provider webhook (statuses, inbound messages, consent)",
            kind_summary="Provider webhook, per kind (Twilio: status, inbound)")


@router.get("", response_model=WebhookCallPage)
async def list_webhook_calls(session: SessionDep, auth: ReadAuth, provider: str | None = None,
                             limit: Annotated[int, Query(ge=1, le=500)] = 50,
                             cursor: str | None = None) -> WebhookCallPage:
    """Authentic provider webhook calls of this tenant's channel accounts, newest first: headers (secrets
    redacted), raw body and what each did. Kept CLARION_WEBHOOK_RETENTION_DAYS days."""
    page = await service.list_calls(session, auth.tenant_id, provider=provider, limit=limit, cursor=cursor)
    return WebhookCallPage(items=[WebhookCallRead.of(row) for row in page.rows], next_cursor=page.next_cursor)


@router.get("/{call_id}", response_model=WebhookCallRead)
async def get_webhook_call(call_id: int, session: SessionDep, auth: ReadAuth) -> WebhookCallRead:
    return WebhookCallRead.of(await service.get_call(session, auth.tenant_id, call_id))
