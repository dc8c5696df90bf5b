"""Serve an ASGI app (a provider sandbox from clarion.sandbox) on a real local port for the length of a test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any, Literal

import uvicorn


def bound_socket() -> socket.socket:
    """A socket bound to a free local port: its URL is known before the app that will serve on it is made."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, *, sock: socket.socket | None = None,
                     lifespan: Literal["on", "off"] = "off") -> AsyncIterator[str]:
    """Yield the base URL (http://127.0.0.1:PORT) of `app` served by uvicorn in this event loop, on `sock` when
    given; lifespan="on" runs the app's startup and shutdown (Clarion's embedded worker) around the serving."""
    sock = sock or bound_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped the server
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


class InFlight:
    """ASGI middleware that records the most HTTP requests `app` was serving at once (`peak`): how a test sees a
    provider's concurrency from the server's side."""

    def __init__(self, app: Any) -> None:
        self.app, self.now, self.peak = app, 0, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1
