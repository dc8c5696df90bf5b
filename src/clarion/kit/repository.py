"""The repository base: every query of a tenant-owned model is scoped to one tenant here, and only here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Select, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.errors import Conflict, NotFound

M = TypeVar("M")
V = TypeVar("V")

# Values per statement in an IN list or a multi-row INSERT: well under SQLite's bound-parameter limit, and a
# small enough batch of index probes on either database.
VALUES_PER_STATEMENT = 1000


def in_chunks(values: Sequence[V], size: int = VALUES_PER_STATEMENT) -> Iterator[Sequence[V]]:
    """`values` in consecutive slices of at most `size`: one statement each."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


def dialect(session: AsyncSession) -> str:
    """"postgresql" or "sqlite": the database the session talks to."""
    return session.get_bind().dialect.name


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """The dialect's INSERT (the one that knows ON CONFLICT): the same SQL on both databases."""
    return (postgresql.insert if dialect(session) == "postgresql" else sqlite.insert)(table)


class TenantRepository(Generic[M]):
    """Subclasses set `model` (which has `tenant_id` and `id`) and a human `label` for 404 messages."""

    model: ClassVar[type[Any]]
    label: ClassVar[str] = "object"

    def __init__(self, session: AsyncSession, tenant_id: uuid.UUID) -> None:
        self.session = session
        self.tenant_id = tenant_id

    def scoped(self, stmt: Select[Any] | None = None) -> Select[Any]:
        stmt = select(self.model) if stmt is None else stmt
        return stmt.where(self.model.tenant_id == self.tenant_id)

    async def find(self, id_: uuid.UUID | int) -> M | None:
        result = await self.session.execute(self.scoped().where(self.model.id == id_))
        return result.scalar_one_or_none()

    async def get(self, id_: uuid.UUID | int, *, for_update: bool = False) -> M:
        stmt = self.scoped().where(self.model.id == id_)
        if for_update:
            stmt = stmt.with_for_update()
        obj = (await self.session.execute(stmt)).scalar_one_or_none()
        if obj is None:
            raise NotFound(f"{self.label} {id_} not found")
        return obj

    async def count(self, stmt: Select[Any] | None = None) -> int:
        inner = self.scoped(stmt).with_only_columns(self.model.id).order_by(None).subquery()
        return int((await self.session.execute(select(func.count()).select_from(inner))).scalar_one())

    async def ids_existing(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        if not ids:
            return set()
        stmt = self.scoped(select(self.model.id)).where(self.model.id.in_(ids))
        return set((await self.session.execute(stmt)).scalars().all())

    def add(self, obj: M) -> M:
        obj.tenant_id = self.tenant_id
        self.session.add(obj)
        return obj

    async def remove(self, obj: M) -> None:
        await self.session.delete(obj)

    async def remove_by_id(self, id_: uuid.UUID) -> int:
        result = await self.session.execute(
            delete(self.model).where(self.model.tenant_id == self.tenant_id, self.model.id == id_)
        )
        return int(result.rowcount or 0)


@asynccontextmanager
async def conflict_on_violation(session: AsyncSession, message: str, **problem: Any) -> AsyncIterator[None]:
    """Write inside a savepoint; a constraint violation becomes a 409 and the caller's transaction stays usable."""
    try:
        async with session.begin_nested():
            yield
    except IntegrityError as exc:
        raise Conflict(message, **problem) from exc
