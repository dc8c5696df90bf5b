"""The built-in `outbox` email channel: messages become .eml files under the data directory instead of
leaving the machine, so the embedded default sends for real with no SMTP server. An index (a database
table, reached through the OutboxIndex protocol) lets the API list them."""

from __future__ import annotations

import asyncio
import os
import uuid
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from clarion.delivery.channels.base import (
    ChannelCheckFailed,
    ChannelProvider,
    EmailPayload,
    OutboxEntry,
    OutboxIndex,
    OutgoingMessage,
    ProviderContext,
    SendResult,
)
from clarion.kit.clock import utcnow
from clarion.kit.ids import new_id

OUTBOX_DIR = "outbox"


class OutboxConfig(BaseModel):
    """Not user-editable: the pipeline builds it for the tenant that has no email channel of its own."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path
    tenant_id: uuid.UUID


def _subject(payload: EmailPayload) -> str:
    if payload.subject:
        return payload.subject
    headers = BytesHeaderParser(policy=default_policy).parsebytes(payload.raw)
    return str(headers.get("Subject", ""))


def _write_files(files: list[tuple[Path, bytes]]) -> None:
    for path, raw in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader of the folder never sees half a message.
        partial = path.with_suffix(".part")
        partial.write_bytes(raw)
        os.replace(partial, path)


def _remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class OutboxProvider(ChannelProvider[OutboxConfig]):
    slug = "outbox"
    channel = "email"
    config_schema = OutboxConfig

    def __init__(self, config: OutboxConfig, context: ProviderContext | None = None) -> None:
        super().__init__(config, context)
        if self.context.outbox_index is None:
            # Files nobody can list would look sent yet be invisible in the API: refuse instead.
            raise ValueError("the outbox provider needs ProviderContext.outbox_index")
        self.index: OutboxIndex = self.context.outbox_index

    @property
    def folder(self) -> Path:
        return self.config.data_dir / OUTBOX_DIR / str(self.config.tenant_id)

    async def send(self, batch: list[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(batch)
        entries: list[OutboxEntry] = []
        files: list[tuple[Path, bytes]] = []
        positions: list[int] = []
        for i, message in enumerate(batch):
            payload = message.payload
            if not isinstance(payload, EmailPayload):
                results[i] = SendResult.failed(message.ref, "the outbox keeps email payloads only",
                                               transient=False)
                continue
            entry_id = new_id()
            relative = Path(OUTBOX_DIR) / str(self.config.tenant_id) / f"{entry_id}.eml"
            entries.append(OutboxEntry(
                id=entry_id, tenant_id=self.config.tenant_id, campaign_id=message.campaign_id,
                ref=message.ref, to=message.to, subject=_subject(payload), path=relative.as_posix(),
                size=len(payload.raw), created_at=utcnow(),
            ))
            files.append((self.config.data_dir / relative, payload.raw))
            positions.append(i)

        if entries:
            try:
                await asyncio.to_thread(_write_files, files)
                await self.index.record(entries)
            except Exception as exc:  # noqa: BLE001 - a disk or database failure fails this batch, retryably
                await asyncio.to_thread(_remove_files, [path for path, _ in files])
                error = f"outbox write failed: {type(exc).__name__}: {exc}"
                for i in positions:
                    results[i] = SendResult.failed(batch[i].ref, error, transient=True)
            else:
                for i, entry in zip(positions, entries, strict=True):
                    results[i] = SendResult.sent(batch[i].ref, str(entry.id))
        return [result for result in results if result is not None]

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise ChannelCheckFailed(f"the outbox folder {self.folder} is not writable: {exc}") from exc
