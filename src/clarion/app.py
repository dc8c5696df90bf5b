"""create_app(): the ASGI application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from clarion import __version__
from clarion.api import api_router
from clarion.config import Settings, get_settings
from clarion.db import Database
from clarion.errors import install_error_handlers, problem
from clarion.tracking.public_endpoints import router as public_tracking_router


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
        try:
            yield
        finally:
            if worker_task is not None:
                stop_worker.set()
                await worker_task
            if owned:
                await app.state.db.dispose()

    app = FastAPI(
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
    app.include_router(api_router)

    @app.get("/healthz", tags=["meta"], include_in_schema=True)
    async def healthz(request: Request) -> JSONResponse:
        db: Database = request.app.state.db
        if await db.ping():
            return JSONResponse({"status": "ok", "database": "ok", "version": __version__})
        return problem(503, "database unreachable", code="database_unreachable")

    return app
