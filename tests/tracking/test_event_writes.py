"""What the event writer sends to the database: events stored exactly as given (PostgreSQL writes them with COPY),
and recipients updated in only the columns a batch changed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy.exc import StatementError

from clarion.campaign import sending
from clarion.campaign.sending import EventInput
from clarion.db import Database
from clarion.kit.clock import utcnow
from tests.tracking.helpers import events, recipient, sent_campaign

AWKWARD = {"ip": "203.0.113.9", "user_agent": "tab\there, back\\slash, new\nline, cr\r, quote\" and ünïcödé ☃",
           "flags": {"machine": False}, "nested": [1, None, 2.5, True], "empty": ""}


async def test_events_are_stored_exactly_as_given(api, db: Database) -> None:  # type: ignore[no-untyped-def]
    [ann, bob] = await sent_campaign(api, db, ["ann@example.com", "bob@example.com"])
    tenant_id, campaign_id = api.tenant.id, uuid.UUID(ann.campaign_id)
    at = datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=UTC)
    async with db.transaction() as session:
        await sending.record_events(session, [
            EventInput(tenant_id, campaign_id, ann.id, "opened", at, AWKWARD),
            EventInput(tenant_id, campaign_id, bob.id, "clicked", at + timedelta(microseconds=1), None),
            EventInput(tenant_id, campaign_id, ann.id, "delivered", at, {"x": 1}, provider_message_id=ann.message_id),
        ])
    [opened] = await events(db, ann.id, "opened")
    assert (opened.metadata_, opened.occurred_at, opened.contact_id, opened.tenant_id) == (
        AWKWARD, at, uuid.UUID(ann.contact_id), tenant_id)
    [clicked] = await events(db, bob.id, "clicked")
    assert clicked.metadata_ is None and clicked.occurred_at == at + timedelta(microseconds=1)
    [delivered] = await events(db, ann.id, "delivered")
    assert delivered.provider_message_id == ann.message_id


async def test_a_naive_event_time_is_refused(api, db: Database) -> None:  # type: ignore[no-untyped-def]
    [ann] = await sent_campaign(api, db, ["ann@example.com"])
    # SQLAlchemy wraps the column's refusal in a StatementError; COPY (PostgreSQL) passes it on as it is.
    with pytest.raises((ValueError, StatementError), match="naive"):
        async with db.transaction() as session:
            await sending.record_events(session, [EventInput(api.tenant.id, uuid.UUID(ann.campaign_id), ann.id,
                                                             "opened", datetime(2026, 12, 7, 9, 30))])
    assert await events(db, ann.id, "opened") == []


async def test_recipients_are_updated_in_the_changed_columns_only(api, db: Database) -> None:  # type: ignore[no-untyped-def]
    [ann, bob] = await sent_campaign(api, db, ["ann@example.com", "bob@example.com"])
    tenant_id, campaign_id = api.tenant.id, uuid.UUID(ann.campaign_id)
    updates: list[str] = []

    def watch(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE CAMPAIGN_RECIPIENTS"):
            updates.append(statement)

    async def record(*batch: tuple[int, str]) -> None:
        async with db.transaction() as session:
            await sending.record_events(session, [EventInput(tenant_id, campaign_id, rid, type_, utcnow(),
                                                             {"flags": {"machine": False}}) for rid, type_ in batch])

    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", watch)
    try:
        await record((ann.id, "opened"), (bob.id, "clicked"))  # first ones: timestamps, status, counts move
        first = updates[-1]
        await record((ann.id, "opened"), (ann.id, "opened"))  # repeats: open_count only
        repeat = updates[-1]
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", watch)
    for column in ("opened_at", "clicked_at", "status", "open_count", "click_count"):
        assert column in first, first
    assert "open_count" in repeat, repeat
    for column in ("status", "opened_at", "clicked_at", "click_count", "failure_reason", "converted_at"):
        assert column not in repeat, repeat
    seen_ann = await recipient(api, ann.campaign_id, ann.id)
    seen_bob = await recipient(api, ann.campaign_id, bob.id)
    assert (seen_ann["status"], seen_ann["open_count"], seen_ann["click_count"]) == ("opened", 3, 0)
    assert (seen_bob["status"], seen_bob["open_count"], seen_bob["click_count"]) == ("clicked", 0, 1)
    assert seen_bob["opened_at"] is None and seen_bob["clicked_at"] is not None
