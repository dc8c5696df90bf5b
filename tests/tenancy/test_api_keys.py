from __future__ import annotations

import httpx


async def test_healthz_needs_no_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


async def test_missing_and_bad_keys_are_401_problem_json(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer clk_abc_def"}):
        response = await client.get("/api/v1/tenant", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == 401


async def test_read_only_key_cannot_write(client: httpx.AsyncClient, tenant) -> None:  # type: ignore[no-untyped-def]
    assert (await client.get("/api/v1/tenant", headers=tenant.read_headers)).status_code == 200
    response = await client.post("/api/v1/api-keys", json={"name": "x"}, headers=tenant.read_headers)
    assert response.status_code == 403
    assert "read-only" in response.json()["detail"]


async def test_key_is_shown_once_stored_hashed_and_revocable(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/v1/api-keys", json={"name": "ci", "scopes": ["read"]})
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith(body["prefix"] + "_")
    listed = (await api.get("/api/v1/api-keys")).json()
    assert all("key" not in k for k in listed)
    assert body["id"] in {k["id"] for k in listed}

    new_key = {"Authorization": f"Bearer {body['key']}"}
    first = await api.get("/api/v1/tenant", headers=new_key)
    assert first.status_code == 200
    used = {k["id"]: k for k in (await api.get("/api/v1/api-keys")).json()}[body["id"]]
    assert used["last_used_at"] is not None

    assert (await api.delete(f"/api/v1/api-keys/{body['id']}")).status_code == 200
    revoked = await api.get("/api/v1/tenant", headers=new_key)
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]


async def test_validation_errors_are_field_level(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/api-keys", json={"name": "", "scopes": ["admin"]})
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_failed"
    locs = {tuple(e["loc"]) for e in problem["errors"]}
    assert ("body", "name") in locs
    assert ("body", "scopes", 0) in locs


async def test_other_tenants_key_is_404(api: httpx.AsyncClient, db) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import make_tenant

    other = await make_tenant(db, "Other")
    created = (await api.post("/api/v1/api-keys", json={"name": "mine"})).json()
    response = await api.delete(f"/api/v1/api-keys/{created['id']}", headers=other.headers)
    assert response.status_code == 404


async def test_default_region_is_validated(api: httpx.AsyncClient) -> None:
    assert (await api.patch("/api/v1/tenant", json={"default_region": "zz"})).status_code == 422
    response = await api.patch("/api/v1/tenant", json={"default_region": "de"})
    assert response.status_code == 200 and response.json()["default_region"] == "DE"


async def test_tenant_name_cannot_be_nulled(api: httpx.AsyncClient) -> None:
    response = await api.patch("/api/v1/tenant", json={"name": None, "default_region": None})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "name"]
    assert (await api.get("/api/v1/tenant")).json()["name"] == "Acme"
