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
from sqlalchemy.exc import OperationalError
from starlette._utils import get_route_path  # the router's own (FastAPI imports it too)
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from clarion.db import SessionDep
from clarion.errors import problem
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


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    recorder = getattr(app.state, "tracking_recorder", None)
    if recorder is not None:
        await recorder.close()  # nothing accepted is lost on a clean shutdown


router = APIRouter(prefix="/t", tags=["tracking"], lifespan=_lifespan)

_NO_STORE_RAW = [(k.lower().encode(), v.encode()) for k, v in NO_STORE.items()]
_GIF_HEADERS = [(b"content-type", b"image/gif"), (b"content-length", str(len(PIXEL_GIF)).encode()), *_NO_STORE_RAW]
_NOT_FOUND_BODY = b"link not found"
_NOT_FOUND_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"),
                      (b"content-length", str(len(_NOT_FOUND_BODY)).encode()), *_NO_STORE_RAW]
_REDIRECT_HEADERS = [(b"content-length", b"0"), *_NO_STORE_RAW]


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


# Opens and clicks are the hottest path of the install (every open and click of every message), so they are
# plain ASGI handlers: no request/response objects, validation or dependency injection. `serve_fast` answers
# them before the app's middleware stack and router (clarion.app.ClarionApp); the routes below serve the same
# handlers to a request that reaches the router anyway, and document them.

async def _open_pixel(app: Any, scope: Scope, token: str, send: Send) -> None:
    # A bad token still gets the image: the response never tells whether a token is valid.
    ids = tracking_urls.parse_token(app.state.secret_key, tracking_urls.OPEN, token)
    if ids is not None:
        hit = TrackedHit("open", ids[0], _scope_facts(scope), utcnow())
        recorder = recorder_for(app)
        if not recorder.offer(hit):
            await recorder.add(hit)
    await _answer(scope, send, 200, _GIF_HEADERS, PIXEL_GIF)


async def _click(app: Any, scope: Scope, token: str, send: Send) -> None:
    ids = tracking_urls.parse_token(app.state.secret_key, tracking_urls.CLICK, token)
    target = None
    if ids is not None:
        targets = click_targets_for(app)
        try:
            target = targets.cached(*ids) or await targets.find(*ids)
        except OperationalError:  # the database is away and the link was not cached: say so, and when to retry
            await _database_unavailable(scope, send)
            return
    if target is None:
        await _answer(scope, send, 404, _NOT_FOUND_HEADERS, _NOT_FOUND_BODY)
        return
    hit = TrackedHit("click", target.recipient_id, _scope_facts(scope), utcnow(), link_id=target.link_id,
                     url=target.url)
    recorder = recorder_for(app)
    if not recorder.offer(hit):
        await recorder.add(hit)
    await _answer(scope, send, 302, [(b"location", target.url.encode()), *_REDIRECT_HEADERS])


async def _database_unavailable(scope: Scope, send: Send) -> None:
    response = problem(503, "the link cannot be looked up right now; try again in a moment",
                       code="database_unreachable", instance=scope["path"], headers={"Retry-After": "1", **NO_STORE})
    await _answer(scope, send, 503, response.raw_headers, response.body)


async def _answer(scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]],
                  body: bytes = b"") -> None:
    """Send a whole response; a HEAD gets the headers only."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


_OPEN_PREFIX, _CLICK_PREFIX, _GIF = "/t/o/", "/t/c/", ".gif"


async def serve_fast(app: Any, scope: Scope, send: Send) -> bool:
    """Answer a GET or HEAD of an open pixel or tracked click straight from the ASGI scope; False (nothing
    sent) for every other request, which the app then serves as usual.

    The paths matched are exactly those of the routes below (`{token}` is one non-empty path segment), so a
    request is answered the same whichever way it comes in.
    """
    if scope["method"] not in ("GET", "HEAD"):
        return False
    path = get_route_path(scope)  # below the app's mount point, exactly as the router sees it
    if path.startswith(_OPEN_PREFIX):
        if not path.endswith(_GIF):
            return False
        token = path[len(_OPEN_PREFIX):-len(_GIF)]
        if not token or "/" in token:
            return False
        await _open_pixel(app, scope, token, send)
        return True
    if path.startswith(_CLICK_PREFIX):
        token = path[len(_CLICK_PREFIX):]
        if not token or "/" in token:
            return False
        await _click(app, scope, token, send)
        return True
    return False


class _RoutedHandler:
    """One of the handlers above as a raw ASGI app for Starlette's Route (which would otherwise wrap a plain
    function in its request/response adapter)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope["app"], scope, scope["path_params"]["token"], send)


router.routes.append(Route("/t/o/{token}.gif", _RoutedHandler(_open_pixel), methods=["GET", "HEAD"],
                           include_in_schema=False))
router.routes.append(Route("/t/c/{token}", _RoutedHandler(_click), methods=["GET", "HEAD"],
                           include_in_schema=False))


# Documentation only: the routes above match first, so these are never called.
@router.get("/o/{token}.gif", summary="Open pixel", response_class=Response,
            responses={200: {"content": {"image/gif": {}}, "description": "a 1×1 GIF, no-cache; also for HEAD "
                                                                             "(a machine open)"}})
async def open_pixel(token: str) -> Response:  # pragma: no cover - shadowed by the ASGI route
    raise AssertionError("served by serve_fast or _open_pixel")


@router.get("/c/{token}", summary="Tracked link redirect", response_class=Response,
            responses={302: {"description": "to the link's stored URL"}, 404: {"description": "not a valid link"}})
async def click(token: str) -> Response:  # pragma: no cover - shadowed by the ASGI route
    raise AssertionError("served by serve_fast or _click")


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
