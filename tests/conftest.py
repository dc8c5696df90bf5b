"""Real databases for every test: each test that takes `api` runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from clarion.app import create_app
from clarion.config import Settings
from clarion.db import Database
from clarion.migrate import upgrade
from clarion.tenancy import service as tenancy
from clarion.tenancy.schemas import ApiKeyCreate

PG_ADMIN_URL = os.environ.get("CLARION_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = [b for b in os.environ.get("CLARION_TEST_BACKENDS", "sqlite,postgres").split(",") if b]


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)


@contextmanager
def own_pg_database(prefix: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own (its SQLAlchemy URL), dropped afterwards: for the run's shared
    database, and for tests that migrate from nothing or work across every tenant (workers claim from all of them).
    Skips, saying how to enable it, when no server is reachable; fails in CI."""
    try:
        admin = _pg_admin()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server here"
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL} ({exc}); start it with "
                    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
                    "or point CLARION_TEST_PG_URL at a server")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database of the backend's kind, not migrated: for tests that migrate step by step."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrating.db'}"
        return
    request.getfixturevalue("pg_url")  # a server is there (or the test is skipped, as every PostgreSQL test)
    with own_pg_database("clarion_migrating") as url:
        yield url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test run, migrated to head, dropped afterwards."""
    with own_pg_database("clarion_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'clarion.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("pg_url" if backend == "postgres" else "sqlite_url")


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("data")
    return Settings(data_dir=data_dir, database_url=database_url, secret_key="test-secret-" + "x" * 32,
                    base_url="http://clarion.test")


@pytest.fixture(scope="session")
def app(settings: Settings, db: Database):  # type: ignore[no-untyped-def]
    return create_app(settings, database=db)


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test") as c:
        yield c


@dataclass
class TenantHandle:
    id: uuid.UUID
    key: str
    read_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def read_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read_key}"}


async def make_tenant(db: Database, name: str = "Acme", default_region: str | None = None) -> TenantHandle:
    async with db.transaction() as session:
        tenant = await tenancy.create_tenant(session, name, default_region=default_region)
        _, key = await tenancy.create_api_key(session, tenant.id, ApiKeyCreate(name="full"))
        _, read_key = await tenancy.create_api_key(session, tenant.id, ApiKeyCreate(name="ro", scopes=["read"]))
    return TenantHandle(id=tenant.id, key=key, read_key=read_key)


@pytest.fixture
async def tenant(db: Database) -> TenantHandle:
    return await make_tenant(db)


@pytest.fixture
async def api(app, tenant: TenantHandle) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """A client authenticated as a fresh tenant with a read+write key: tests never see each other's data."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://clarion.test", headers=tenant.headers) as c:
        c.tenant = tenant  # type: ignore[attr-defined]
        yield c


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    """A test that freezes or moves the clock never leaks that into the next test."""
    from clarion.kit.clock import clock

    yield
    clock.reset()
