"""The delivery domain's background work: every worker runs the dispatch loop (claims are SKIP LOCKED, so any
number of workers share the due recipients)."""

from __future__ import annotations

from clarion.delivery.dispatch import dispatch_loop
from clarion.worker import register_loop

register_loop("delivery.dispatch", dispatch_loop)
