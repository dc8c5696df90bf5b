"""create_app(): the ASGI application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from clarion import __version__
from clarion.api import api_router
from clarion.config import Settings, get_settings
from clarion.db import Database
from clarion.errors import install_error_handlers, problem
from clarion.kit.interpreter import freeze_startup_objects
from clarion.tracking.public_endpoints import router as public_tracking_router
from clarion.tracking.public_endpoints import serve_fast as serve_tracking_hit
from clarion.tracking.webhooks_endpoints import public_router as webhooks_router


class ClarionApp(FastAPI):
    """FastAPI, with open pixels and tracked clicks answered before the middleware stack and the router.

    They are most of an install's requests and want none of what the stack gives (auth, validation, error
    pages); going through it cost about half of each one's time. Everything else, /webhooks/ included, passes
    on untouched.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and await serve_tracking_hit(self, scope, send):
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, database: Database | None = None,
               embedded_worker: bool = False) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = database is None
        app.state.db = database or Database(settings.resolved_database_url)
        # The embedded default (`clarion serve`): one worker in the API's process and event loop.
        stop_worker, worker_task = asyncio.Event(), None
        if embedded_worker:
            from clarion.worker import Worker

            app.state.worker = Worker(app.state.db, settings=settings)
            worker_task = asyncio.create_task(app.state.worker.run(stop_worker), name="clarion-worker")
        freeze_startup_objects()
        try:
            yield
        finally:
            if worker_task is not None:
                stop_worker.set()
                await worker_task
            if getattr(app.state, "sandboxes", None) is not None:
                await app.state.sandboxes.close()
            if owned:
                await app.state.db.dispose()

    app = ClarionApp(
        title="Clarion",
        version=__version__,
        description="Multi-channel marketing campaigns: audiences, templates, campaigns, sending and measurement.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.secret_key = settings.resolved_secret_key()
    if database is not None:
        # Tests and embedders hand in a ready database; the app must work even before lifespan runs.
        app.state.db = database
    install_error_handlers(app)
    # Public tracking first: routes are tried in order, and every open and click would otherwise be matched
    # against each /api/v1 route before reaching its own (measured: ~200 µs of a ~290 µs open).
    app.include_router(public_tracking_router)
    # Provider webhooks: public too (the provider's signature is the authentication), outside /api/v1.
    app.include_router(webhooks_router)
    app.include_router(api_router)
    if settings.sandbox_providers:
        from clarion.sandbox import builtin

        app.state.sandboxes = builtin.mount(app, settings.base_url)

    @app.get("/healthz", tags=["meta"], include_in_schema=True)
    async def healthz(request: Request) -> JSONResponse:
        db: Database = request.app.state.db
        if await db.ping():
            return JSONResponse({"status": "ok", "database": "ok", "version": __version__})
        return problem(503, "database unreachable", code="database_unreachable")

    return app
