"""The durable job queue and the bookkeeping of periodic ticks (see clarion.worker)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from clarion.kit.clock import utcnow
from clarion.kit.types import BigIntPK
from clarion.models.base import Base, Timestamps

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "dead")
# "failed" is a failed attempt waiting for its retry (run_at is the retry time); "dead" has no attempts left.
RUNNABLE = "status IN ('queued', 'failed')"
UNFINISHED = "status IN ('queued', 'running', 'failed')"


class Job(Timestamps, Base):
    """One unit of background work, run by name with JSON args. Integer ids: jobs are many and claimed in order."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"status IN {JOB_STATUSES!r}", name="status"),
        # Partial indexes (both databases have them): the claim query only ever looks at runnable rows,
        # and the lease reaper only at running ones, so finished history does not slow either down.
        Index("ix_jobs_due", "priority", "run_at", postgresql_where=text(RUNNABLE), sqlite_where=text(RUNNABLE)),
        Index("ix_jobs_running_lease", "lease_expires_at",
              postgresql_where=text("status = 'running'"), sqlite_where=text("status = 'running'")),
        # Enqueueing the same logical job twice is harmless: one unfinished job per (name, dedupe_key).
        Index("uq_jobs_name_dedupe_key_unfinished", "name", "dedupe_key", unique=True,
              postgresql_where=text(f"dedupe_key IS NOT NULL AND {UNFINISHED}"),
              sqlite_where=text(f"dedupe_key IS NOT NULL AND {UNFINISHED}")),
        Index(None, "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Higher runs first; equal priorities run in run_at order.
    priority: Mapped[int] = mapped_column(default=0)
    run_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    # Counts claims, so a run lost with a crashed worker counts as an attempt too.
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=5)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    # Not every job belongs to a tenant (maintenance, bounce mailbox polling …).
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    finished_at: Mapped[datetime | None]


class WorkerTick(Base):
    """One row per singleton periodic tick: claiming the row (moving next_run_at) is the right to run it."""

    __tablename__ = "worker_ticks"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    next_run_at: Mapped[datetime]
    owner: Mapped[str | None] = mapped_column(String(200))
    last_started_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
