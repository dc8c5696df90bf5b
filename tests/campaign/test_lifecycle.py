"""The state machine itself, over every (state, action) pair, without a database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from clarion.campaign import lifecycle
from clarion.errors import Conflict

NOW = datetime(2025, 1, 15, 9, 0, tzinfo=UTC)
NON_FINAL = ("draft", "ai_generating", "pending_review", "approved", "scheduled", "running", "paused")

# Written out by hand from the issue, not derived from lifecycle.py: action → {state it is allowed from: route}.
EXPECTED: dict[str, dict[str, tuple[str, ...]]] = {
    "schedule": {"draft": ("scheduled",), "approved": ("scheduled",)},
    "start": {"draft": ("scheduled", "running"), "approved": ("scheduled", "running"), "scheduled": ("running",)},
    "activate": {"draft": ("scheduled",), "approved": ("scheduled",)},
    "activate_today": {"draft": ("scheduled", "running"), "approved": ("scheduled", "running"),
                       "scheduled": ("running",)},
    "submit_for_review": {"draft": ("pending_review",), "ai_generating": ("pending_review",)},
    "begin_ai_generation": {"draft": ("ai_generating",)},
    "approve": {"pending_review": ("approved",)},
    "request_changes": {"pending_review": ("draft",)},
    "pause": {"running": ("paused",)},
    "resume": {"paused": ("running",)},
    "complete": {"running": ("completed",), "paused": ("completed",)},
    "fail": {"running": ("failed",)},
    "cancel": {state: ("cancelled",) for state in NON_FINAL},
}


@dataclass
class FakeCampaign:
    status: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    status_reason: str | None = None


def test_every_action_is_in_the_expected_table() -> None:
    assert set(EXPECTED) == set(lifecycle.ACTIONS)
    assert set(lifecycle.STATES) == {*NON_FINAL, "completed", "cancelled", "failed"}


@pytest.mark.parametrize("state", lifecycle.STATES)
@pytest.mark.parametrize("action", list(EXPECTED))
def test_transition_table(state: str, action: str) -> None:
    campaign = FakeCampaign(status=state)
    expected = EXPECTED[action].get(state)
    if expected is None:
        with pytest.raises(Conflict) as refused:
            lifecycle.apply(campaign, action, at=NOW)
        assert campaign.status == state
        message = refused.value.message
        assert state in message
        if state in lifecycle.FINAL:
            assert message.endswith(f"{state} is final")
        else:
            assert f"allowed from {state}: " in message
        return
    steps = lifecycle.apply(campaign, action, at=NOW)
    assert tuple(step.target for step in steps) == expected
    assert campaign.status == expected[-1]
    # Every step of a multi-step action is itself an edge of the graph.
    previous = state
    for step in steps:
        assert step.source == previous and step.target in lifecycle.EDGES[previous]
        previous = step.target


def test_refusal_messages_name_the_state_and_what_is_allowed() -> None:
    with pytest.raises(Conflict) as paused_draft:
        lifecycle.apply(FakeCampaign("draft"), "pause", at=NOW)
    assert paused_draft.value.message == ("cannot pause a campaign in draft; allowed from draft: scheduled, "
                                          "running (start), pending_review, ai_generating, cancelled")
    assert paused_draft.value.status == 409
    with pytest.raises(Conflict) as resumed_cancelled:
        lifecycle.apply(FakeCampaign("cancelled"), "resume", at=NOW)
    assert resumed_cancelled.value.message == "cannot resume a campaign that is cancelled: cancelled is final"


def test_final_states_have_no_way_out() -> None:
    for state in lifecycle.FINAL:
        assert lifecycle.EDGES[state] == ()
        assert lifecycle.allowed_actions(state) == []


def test_running_stamps_started_at_once_and_completion_stamps_completed_at() -> None:
    campaign = FakeCampaign("draft")
    lifecycle.apply(campaign, "start", at=NOW)
    assert campaign.started_at == NOW
    later = datetime(2025, 2, 1, tzinfo=UTC)
    lifecycle.apply(campaign, "pause", at=later)
    lifecycle.apply(campaign, "resume", at=later)
    assert campaign.started_at == NOW
    lifecycle.apply(campaign, "complete", at=later)
    assert campaign.completed_at == later


def test_steps_name_their_domain_events() -> None:
    campaign = FakeCampaign("draft")
    events = [s.event for s in lifecycle.apply(campaign, "start", at=NOW)]
    assert events == ["crm.campaign.scheduled", "crm.campaign.started"]
    lifecycle.apply(campaign, "pause", at=NOW)
    assert [s.event for s in lifecycle.apply(campaign, "resume", at=NOW)] == ["crm.campaign.resumed"]
    assert [s.event for s in lifecycle.apply(campaign, "cancel", at=NOW)] == ["crm.campaign.cancelled"]
