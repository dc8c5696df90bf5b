from __future__ import annotations

import httpx

from clarion.app import create_app
from clarion.config import Settings
from clarion.db import Database


async def test_docs_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/contacts" in spec["paths"]


async def test_unknown_route_is_problem_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_malformed_json_body_is_422(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/contacts", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"]


async def test_healthz_503_when_database_unreachable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = create_app(Settings(data_dir=tmp_path, secret_key="s" * 40), database=db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/healthz")
    await db.dispose()
    assert response.status_code == 503
    assert response.json()["code"] == "database_unreachable"
