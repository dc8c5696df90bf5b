"""The public tracking endpoints under /t/: no auth, mounted at the app root, built to answer fast.

Opens and clicks are handed to the app's EventRecorder (written in batches); unsubscribes write at once, since
the next batch claim must already leave the contact out.
"""

from __future__ import annotations

import base64
import html
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response

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


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    recorder = getattr(app.state, "tracking_recorder", None)
    if recorder is not None:
        await recorder.close()  # nothing accepted is lost on a clean shutdown


router = APIRouter(prefix="/t", tags=["tracking"], lifespan=_lifespan)


def _facts(request: Request) -> RequestFacts:
    headers = request.headers
    return RequestFacts(method=request.method, user_agent=headers.get("user-agent", ""),
                        ip=request.client.host if request.client else None,
                        purpose=headers.get("sec-purpose") or headers.get("purpose"))


def _secret(request: Request) -> str:
    return request.app.state.secret_key


@router.get("/o/{token}.gif", summary="Open pixel", response_class=Response,
            responses={200: {"content": {"image/gif": {}}}})
@router.head("/o/{token}.gif", include_in_schema=False)  # link checkers and prefetchers: a machine open
async def open_pixel(token: str, request: Request) -> Response:
    # A bad token still gets the image: the response never tells whether a token is valid.
    ids = tracking_urls.parse_token(_secret(request), tracking_urls.OPEN, token)
    if ids is not None:
        recorder_for(request.app).add(TrackedHit("open", ids[0], _facts(request), utcnow()))
    return Response(PIXEL_GIF, media_type="image/gif", headers=NO_STORE)


@router.get("/c/{token}", summary="Tracked link redirect", response_class=Response,
            responses={302: {"description": "to the link's stored URL"}, 404: {"description": "not a valid link"}})
@router.head("/c/{token}", include_in_schema=False)
async def click(token: str, request: Request) -> Response:
    ids = tracking_urls.parse_token(_secret(request), tracking_urls.CLICK, token)
    target = await click_targets_for(request.app).find(*ids) if ids is not None else None
    if target is None:
        return Response("link not found", status_code=404, media_type="text/plain", headers=NO_STORE)
    recorder_for(request.app).add(TrackedHit("click", target.recipient_id, _facts(request), utcnow(),
                                             link_id=target.link_id, url=target.url))
    return Response(status_code=302, headers={"Location": target.url, **NO_STORE})


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
