"""The public tracking endpoints under /t/: no auth, mounted at the app root, built to answer fast.

Opens and clicks are handed to the app's EventRecorder (written in batches); unsubscribes write at once, since
the next batch claim must already leave the contact out.
"""

from __future__ import annotations

import base64
import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from clarion.db import SessionDep
from clarion.kit import tracking_urls
from clarion.kit.clock import utcnow
from clarion.tracking import service
from clarion.tracking.machine import RequestFacts
from clarion.tracking.recorder import click_targets_for, recorder_for
from clarion.tracking.service import TrackedHit

# The smallest transparent 1×1 GIF.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}


class _AsgiEndpoint:
    """Marks a coroutine function as a raw ASGI app for Starlette's Route (which wraps plain functions in a
    request/response adapter)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    recorder = getattr(app.state, "tracking_recorder", None)
    if recorder is not None:
        await recorder.close()  # nothing accepted is lost on a clean shutdown


router = APIRouter(prefix="/t", tags=["tracking"], lifespan=_lifespan)

_GIF_HEADERS = [(b"content-type", b"image/gif"), (b"content-length", str(len(PIXEL_GIF)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in NO_STORE.items())]
_NOT_FOUND_BODY = b"link not found"
_NOT_FOUND_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"),
                      (b"content-length", str(len(_NOT_FOUND_BODY)).encode()),
                      *((k.lower().encode(), v.encode()) for k, v in NO_STORE.items())]
_REDIRECT_HEADERS = [(b"content-length", b"0"), *((k.lower().encode(), v.encode()) for k, v in NO_STORE.items())]


def _facts(request: Request) -> RequestFacts:
    headers = request.headers
    return RequestFacts(method=request.method, user_agent=headers.get("user-agent", ""),
                        ip=request.client.host if request.client else None,
                        purpose=headers.get("sec-purpose") or headers.get("purpose"))


def _scope_facts(scope: Scope) -> RequestFacts:
    agent, purpose = "", None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            agent = value.decode("latin-1")
        elif name == b"sec-purpose" or (name == b"purpose" and purpose is None):
            purpose = value.decode("latin-1")
    client = scope.get("client")
    return RequestFacts(method=scope["method"], user_agent=agent, ip=client[0] if client else None,
                        purpose=purpose)


def _secret(request: Request) -> str:
    return request.app.state.secret_key


# Opens and clicks are plain ASGI endpoints: no request/response objects, validation or dependency injection on
# the hottest path of the install (every open and click of every message). Documented below with the rest.

async def _open_pixel(scope: Scope, receive: Receive, send: Send) -> None:
    # A bad token still gets the image: the response never tells whether a token is valid.
    app = scope["app"]
    ids = tracking_urls.parse_token(app.state.secret_key, tracking_urls.OPEN, scope["path_params"]["token"])
    if ids is not None:
        hit = TrackedHit("open", ids[0], _scope_facts(scope), utcnow())
        recorder = recorder_for(app)
        if not recorder.offer(hit):
            await recorder.add(hit)
    await send({"type": "http.response.start", "status": 200, "headers": _GIF_HEADERS})
    await send({"type": "http.response.body", "body": PIXEL_GIF})


async def _click(scope: Scope, receive: Receive, send: Send) -> None:
    app = scope["app"]
    ids = tracking_urls.parse_token(app.state.secret_key, tracking_urls.CLICK, scope["path_params"]["token"])
    target = None
    if ids is not None:
        targets = click_targets_for(app)
        target = targets.cached(*ids) or await targets.find(*ids)
    if target is None:
        await send({"type": "http.response.start", "status": 404, "headers": _NOT_FOUND_HEADERS})
        await send({"type": "http.response.body", "body": _NOT_FOUND_BODY})
        return
    hit = TrackedHit("click", target.recipient_id, _scope_facts(scope), utcnow(), link_id=target.link_id,
                     url=target.url)
    recorder = recorder_for(app)
    if not recorder.offer(hit):
        await recorder.add(hit)
    await send({"type": "http.response.start", "status": 302,
                "headers": [(b"location", target.url.encode()), *_REDIRECT_HEADERS]})
    await send({"type": "http.response.body", "body": b""})


router.routes.append(Route("/t/o/{token}.gif", _AsgiEndpoint(_open_pixel), methods=["GET", "HEAD"],
                           include_in_schema=False))
router.routes.append(Route("/t/c/{token}", _AsgiEndpoint(_click), methods=["GET", "HEAD"],
                           include_in_schema=False))


# Documentation only: the ASGI routes above match first, so these are never called.
@router.get("/o/{token}.gif", summary="Open pixel", response_class=Response,
            responses={200: {"content": {"image/gif": {}}, "description": "a 1×1 GIF, no-cache; also for HEAD "
                                                                             "(a machine open)"}})
async def open_pixel(token: str) -> Response:  # pragma: no cover - shadowed by the ASGI route
    raise AssertionError("served by _open_pixel")


@router.get("/c/{token}", summary="Tracked link redirect", response_class=Response,
            responses={302: {"description": "to the link's stored URL"}, 404: {"description": "not a valid link"}})
async def click(token: str) -> Response:  # pragma: no cover - shadowed by the ASGI route
    raise AssertionError("served by _click")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}
button{{font:inherit;padding:.5rem 1.25rem;border:0;border-radius:.25rem;background:#b3261e;color:#fff;cursor:pointer}}
</style></head><body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> Response:
    return Response(_PAGE.format(title=html.escape(title), body=body), status_code=status,
                    media_type="text/html; charset=utf-8", headers=NO_STORE)


def _not_found() -> Response:
    return _page("Link not valid", "<p>This unsubscribe link is not valid. Use the link in the most recent "
                                   "message you received from us.</p>", 404)


@router.get("/v/{token}", summary="The message, viewed in a browser", response_class=Response,
            responses={200: {"content": {"text/html": {}}}, 404: {"description": "not a valid link"}})
async def view_in_browser(token: str, request: Request, session: SessionDep) -> Response:
    recipient_id = service.view_recipient(_secret(request), token)
    body = None
    if recipient_id is not None:
        body = await service.render_for_browser(session, recipient_id, base_url=request.app.state.settings.base_url,
                                                secret=_secret(request), token=token)
    if body is None:
        return _page("Message not available", "<p>This message can no longer be shown.</p>", 404)
    return Response(body, media_type="text/html; charset=utf-8",
                    headers={**NO_STORE, "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"})


@router.get("/u/{token}", summary="Unsubscribe confirmation page (changes nothing)", response_class=Response)
async def unsubscribe_page(token: str, request: Request, session: SessionDep) -> Response:
    ids = tracking_urls.parse_token(_secret(request), tracking_urls.UNSUBSCRIBE, token)
    view = await service.unsubscribe_view(session, ids[0]) if ids is not None else None
    if view is None:
        return _not_found()
    who = f" <strong>{html.escape(view.masked_address)}</strong>" if view.masked_address else ""
    if view.already:
        return _page("You are unsubscribed", f"<p>{html.escape(view.channel.capitalize())} messages to{who} "
                                             "are already switched off.</p>")
    action = html.escape(request.url.path, quote=True)
    return _page("Unsubscribe", f"<p>Stop {html.escape(view.channel)} messages to{who}?</p>"
                                f'<form method="post" action="{action}"><button type="submit">Unsubscribe'
                                "</button></form>")


@router.post("/u/{token}", summary="Unsubscribe (also the RFC 8058 one-click POST)", response_class=Response)
async def unsubscribe(token: str, request: Request, session: SessionDep) -> Response:
    # No cookie, session or CSRF token is asked for: RFC 8058 one-click POSTs carry none, and the signed token
    # is the only authority needed to switch messages *off*.
    ids = tracking_urls.parse_token(_secret(request), tracking_urls.UNSUBSCRIBE, token)
    if ids is None:
        return _not_found()
    facts = _facts(request)
    changed = await service.unsubscribe(session, ids[0], occurred_at=utcnow(),
                                        metadata={"ip": facts.ip, "user_agent": facts.user_agent,
                                                  "one_click": await _is_one_click(request)})
    if changed is None:
        return _not_found()
    return _page("You are unsubscribed", "<p>You will not receive these messages any more.</p>")


async def _is_one_click(request: Request) -> bool:
    body = await request.body()
    return b"List-Unsubscribe=One-Click" in body[:4096]
