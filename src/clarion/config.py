"""Settings from CLARION_* environment variables."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLARION_", extra="ignore")

    data_dir: Path = Path("./var")
    database_url: str | None = None
    secret_key: str | None = None
    base_url: str = "http://127.0.0.1:8000"
    # A contact import is written in chunks of this many rows: memory stays flat whatever the file size (~20 MB
    # a chunk). Bigger chunks spend less of the database's time waiting between them (a savepoint, a commit).
    import_chunk_rows: int = 20000
    # Background worker (clarion.worker): jobs run at once per worker, idle poll period, and the lease a
    # claimed job holds; a job running longer than its lease may be reclaimed where no row lock guards it (SQLite).
    worker_concurrency: int = 4
    worker_poll_interval: float = 1.0
    job_lease_seconds: float = 300.0
    # On shutdown in-flight jobs get this long to finish before they are cancelled and handed back to the queue.
    worker_shutdown_grace_seconds: float = 20.0
    # Retry delay after the n-th failed attempt: base * 2**(n-1), capped, with jitter so retries do not stampede.
    job_backoff_base_seconds: float = 10.0
    job_backoff_max_seconds: float = 3600.0
    # Succeeded jobs are pruned after this many days; dead ones are kept for inspection.
    job_retention_days: int = 7
    # Tracking (clarion.tracking). Open/click events are buffered in-process and written in one transaction
    # per interval, so the public endpoints answer without waiting on the database; shutdown flushes the buffer.
    # Each transaction has a fixed cost, so longer intervals write more cheaply per event (measured on SQLite:
    # 82 µs an event in batches of 300, 60 in batches of 750) and later: events are durable within ~2 intervals.
    tracking_flush_interval: float = 0.25
    # A click this many seconds or sooner after the send, from a client never seen for that contact, is a
    # link scanner's (rules: clarion.tracking.machine).
    tracking_scanner_click_seconds: float = 10.0
    # Extra user-agent substrings (case-insensitive) and IP networks (CIDR) treated as machines, on top of
    # the built-in lists in clarion.tracking.machine.
    tracking_machine_user_agents: list[str] = []
    tracking_machine_networks: list[str] = []
    # Bounces: a Maildir the worker polls for DSNs (processed files leave new/), and the soft-bounce rule:
    # this many soft bounces within this many days mark the address bounced.
    bounce_maildir: Path | None = None
    bounce_poll_interval: float = 60.0
    soft_bounce_threshold: int = 3
    soft_bounce_window_days: int = 7
    # Provider webhook calls (their raw bodies, for audit) are kept this many days, then purged by the worker.
    webhook_retention_days: int = 30
    # Serve the WhatsApp and Twilio sandboxes under /sandbox/ (clarion.sandbox.builtin), for `clarion demo`. Off by
    # default: a sandbox answers anyone as the provider would, which a production install must never expose.
    sandbox_providers: bool = False

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        """The async SQLAlchemy URL; a bare scheme gets the driver Clarion uses."""
        if not self.database_url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'clarion.db').resolve()}"
        return to_async_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def resolved_secret_key(self) -> str:
        """The install's secret: from the environment, else generated once into the data dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


def to_async_url(url: str) -> str:
    for bare, driver in (
        ("postgresql://", "postgresql+psycopg://"),
        ("postgres://", "postgresql+psycopg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(bare):
            return driver + url[len(bare):]
    return url


def to_sync_url(url: str) -> str:
    """Alembic and bulk loaders run synchronously; psycopg 3 serves both, SQLite needs the stdlib driver."""
    return url.replace("sqlite+aiosqlite://", "sqlite://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
