"""Queries of channel accounts and of the shared throughput buckets."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import URL, ColumnElement, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.kit.pagination import PageRows, keyset_page
from clarion.kit.repository import TenantRepository, dialect, dialect_insert
from clarion.models.delivery import ChannelConfig, RateBucket


class ChannelConfigRepo(TenantRepository[ChannelConfig]):
    model = ChannelConfig
    label = "channel"

    async def page(self, *, channel: str | None, enabled: bool | None, limit: int,
                   cursor: str | None) -> PageRows[ChannelConfig]:
        stmt = self.scoped()
        if channel is not None:
            stmt = stmt.where(ChannelConfig.channel == channel)
        if enabled is not None:
            stmt = stmt.where(ChannelConfig.enabled.is_(enabled))
        return await keyset_page(self.session, stmt, ChannelConfig.id, limit=limit, cursor=cursor,
                                 key_type=uuid.UUID)

    async def usable_for(self, channel: str) -> ChannelConfig | None:
        """The enabled account a send on `channel` uses when none is named: the default, else the oldest."""
        stmt = (self.scoped()
                .where(ChannelConfig.channel == channel, ChannelConfig.enabled.is_(True))
                .order_by(ChannelConfig.is_default.desc(), ChannelConfig.id)
                .limit(1))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def name_taken(self, name: str, *, except_id: uuid.UUID | None = None) -> bool:
        stmt = self.scoped().where(ChannelConfig.name == name)
        if except_id is not None:
            stmt = stmt.where(ChannelConfig.id != except_id)
        return await self.count(stmt) > 0

    async def has_default(self, channel: str) -> bool:
        stmt = self.scoped().where(ChannelConfig.channel == channel, ChannelConfig.is_default.is_(True))
        return await self.count(stmt) > 0

    async def clear_default(self, channel: str, *, except_id: uuid.UUID) -> None:
        """Unmark the other default of `channel`: a tenant has at most one default account per channel."""
        await self.session.execute(
            update(ChannelConfig)
            .where(ChannelConfig.tenant_id == self.tenant_id, ChannelConfig.channel == channel,
                   ChannelConfig.is_default.is_(True), ChannelConfig.id != except_id)
            .values(is_default=False)
            .execution_options(synchronize_session="fetch")
        )


async def enabled_accounts_for_webhook(session: AsyncSession, providers: list[str],
                                       accounts: list[str] | None) -> list[ChannelConfig]:
    """UNSCOPED, on purpose: the enabled channel accounts, of every tenant, that a provider webhook call may be for.

    The one place channel configs are looked up across tenants: a webhook call arrives with no tenant, only the
    account it names in the clear (`webhook_account`, indexed with the provider). The caller must verify the call's
    signature against each account before anything of that account's tenant is touched. `accounts` None: every
    enabled account of these providers (a verification handshake names none)."""
    if not providers or accounts == []:
        return []
    stmt = select(ChannelConfig).where(ChannelConfig.provider.in_(providers), ChannelConfig.enabled.is_(True))
    if accounts is not None:
        stmt = stmt.where(ChannelConfig.webhook_account.in_(accounts))
    return list((await session.execute(stmt.order_by(ChannelConfig.id))).scalars().all())


def _db_now_epoch(dialect: str) -> ColumnElement[float]:
    """The database's clock in epoch seconds. Every worker reads the same clock, so machines whose clocks
    disagree still share one timeline. The one place the two dialects differ (with `_DB_CLOCK_RESOLUTION`)."""
    if dialect == "postgresql":
        # clock_timestamp(), not now(): now() is the transaction's start, stale after a wait on the row lock.
        return func.extract("epoch", func.clock_timestamp())
    # SQLite fixes 'now' for the whole statement, so SET and RETURNING see the same instant.
    return (func.julianday("now") - 2440587.5) * 86400.0


# How far the clock above may read behind the true instant: PostgreSQL has microseconds; SQLite truncates
# 'now' to whole milliseconds, and a julian day in a double is good to about 40 microseconds more.
_DB_CLOCK_RESOLUTION = {"postgresql": 1e-6}
_SQLITE_CLOCK_RESOLUTION = 1.1e-3


def database_clock_is_local(url: URL) -> bool:
    """Whether the database's clock is this machine's own wall clock: SQLite always (a file here), PostgreSQL
    over a Unix socket or the loopback interface (clock_timestamp() reads the same kernel clock as
    time.time()). A remote server's clock has to be mapped with an error bound instead."""
    if url.get_backend_name() != "postgresql":
        return True
    hosts = [url.host] if url.host else []
    query_host = url.query.get("host")
    hosts += list(query_host) if isinstance(query_host, tuple) else [query_host] if query_host else []
    if not hosts:  # libpq's default: PGHOST, else the local socket
        hosts = [h for h in os.environ.get("PGHOST", "").split(",") if h]
    return all(h in ("localhost", "127.0.0.1", "::1") or h.startswith("/") for h in hosts)


class RateBucketRepo:
    """Not tenant-scoped: a bucket key names a channel account, which the caller resolved within its tenant."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _dialect(self) -> str:
        return dialect(self.session)

    @property
    def clock_resolution(self) -> float:
        """Seconds by which a reading of the database's clock may lag the instant it was taken."""
        return _DB_CLOCK_RESOLUTION.get(self._dialect, _SQLITE_CLOCK_RESOLUTION)

    async def clock(self) -> float:
        """The database's clock now, epoch seconds: a lock-free read to map a worker's clock onto it."""
        return float((await self.session.execute(select(_db_now_epoch(self._dialect)))).scalar_one())

    async def advance(self, key: str, cost: float, burst: float, lead: float = 0.0) -> tuple[float, float]:
        """Atomically move the bucket `key` forward by `cost` seconds of budget; returns (the bucket's new
        next_free_at, the database's now), both epoch seconds.

        One upsert, so concurrent callers serialise on the row (PostgreSQL's row lock, SQLite's write lock)
        and never see the same budget twice: next_free_at = max(next_free_at, now + lead - burst) + cost.
        An idle bucket's budget starts `lead` seconds from now (time for the answer to reach the worker, so
        its first slot is not already past), less the `burst` it lends."""
        dialect = self._dialect
        now = _db_now_epoch(dialect)
        # GREATEST on PostgreSQL, the two-argument scalar max() on SQLite.
        greatest = func.greatest if dialect == "postgresql" else func.max
        # A missing row is a bucket idle forever: it lends its full burst too.
        stmt = dialect_insert(self.session, RateBucket).values(key=key, next_free_at=now + (lead - burst) + cost)
        # excluded.next_free_at - cost is now + lead - burst, computed once for this statement.
        earliest = literal_column("excluded.next_free_at") - cost
        stmt = stmt.on_conflict_do_update(
            index_elements=[RateBucket.key],
            set_={"next_free_at": greatest(RateBucket.next_free_at, earliest) + cost},
        ).returning(RateBucket.next_free_at, now)
        row = (await self.session.execute(stmt)).one()
        return float(row[0]), float(row[1])
