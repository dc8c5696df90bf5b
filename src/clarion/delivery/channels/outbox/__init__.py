"""The built-in outbox email channel."""

from clarion.delivery.channels.outbox.provider import OUTBOX_DIR, OutboxConfig, OutboxProvider

__all__ = ["OUTBOX_DIR", "OutboxConfig", "OutboxProvider"]
