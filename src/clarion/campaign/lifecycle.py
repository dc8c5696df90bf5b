"""The campaign lifecycle: the one state machine every status change goes through.

States and the steps between them::

    draft ──► scheduled ──► running ⇄ paused ──► completed
      │           ▲            │         │
      │           │            └─► failed└──► completed
      ├─► ai_generating ──► pending_review ──► approved ──► scheduled
      └──────────────────────►    │
                 draft ◄──────────┘  (changes requested)

    any state that is not final ──► cancelled

`completed`, `cancelled` and `failed` are final: nothing leaves them (a cancelled campaign cannot be reactivated).

The seeds name some states differently; Clarion stores one name for each:

    seed 002 "active"            → running
    seed 003 "sending"           → running
    seed 003 "sent"              → completed
    seed 001 running/completed   → running/completed (same names)

Callers never assign `campaign.status` themselves: they name an *action* (start, pause, …) and `apply` walks the
steps. An action may take more than one step — starting a draft passes through scheduled — and every step must
be an edge of the graph below. A refused action raises Conflict (409) naming the current state and what is
allowed from it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clarion.errors import Conflict

STATES = ("draft", "ai_generating", "pending_review", "approved", "scheduled", "running", "paused",
          "completed", "cancelled", "failed")
FINAL = frozenset({"completed", "cancelled", "failed"})

# Every single step the machine allows. Order matters only for how "allowed" lists read.
EDGES: dict[str, tuple[str, ...]] = {
    "draft": ("scheduled", "pending_review", "ai_generating", "cancelled"),
    "ai_generating": ("pending_review", "cancelled"),
    "pending_review": ("approved", "draft", "cancelled"),
    "approved": ("scheduled", "cancelled"),
    "scheduled": ("running", "cancelled"),
    "running": ("paused", "completed", "failed", "cancelled"),
    "paused": ("running", "completed", "cancelled"),
    "completed": (),
    "cancelled": (),
    "failed": (),
}

# The domain event recorded for each step; a step not listed is named after the state it enters.
_STEP_EVENTS = {
    ("paused", "running"): "crm.campaign.resumed",
    ("pending_review", "draft"): "crm.campaign.changes_requested",
    ("draft", "pending_review"): "crm.campaign.submitted_for_review",
    ("ai_generating", "pending_review"): "crm.campaign.submitted_for_review",
    ("draft", "ai_generating"): "crm.campaign.ai_generation_started",
}
_STATE_EVENTS = {"running": "crm.campaign.started", "scheduled": "crm.campaign.scheduled",
                 "paused": "crm.campaign.paused", "completed": "crm.campaign.completed",
                 "cancelled": "crm.campaign.cancelled", "failed": "crm.campaign.failed",
                 "approved": "crm.campaign.approved"}


@dataclass(frozen=True)
class Action:
    verb: str  # how an error message says it: "cannot <verb> a campaign …"
    target: str
    sources: frozenset[str]


def _action(verb: str, target: str, *sources: str) -> Action:
    return Action(verb, target, frozenset(sources))


_NON_FINAL = tuple(s for s in STATES if s not in FINAL)

# Ordered as the "allowed from …" lists should read.
ACTIONS: dict[str, Action] = {
    "schedule": _action("schedule", "scheduled", "draft", "approved"),
    "start": _action("start", "running", "draft", "approved", "scheduled"),
    # Seed 002's activate: a future start date schedules, today's starts at once.
    "activate": _action("activate", "scheduled", "draft", "approved"),
    "activate_today": _action("activate", "running", "draft", "approved", "scheduled"),
    "submit_for_review": _action("submit for review", "pending_review", "draft", "ai_generating"),
    "begin_ai_generation": _action("start AI generation for", "ai_generating", "draft"),
    "approve": _action("approve", "approved", "pending_review"),
    "request_changes": _action("request changes to", "draft", "pending_review"),
    "pause": _action("pause", "paused", "running"),
    "resume": _action("resume", "running", "paused"),
    "complete": _action("complete", "completed", "running", "paused"),
    "fail": _action("fail", "failed", "running"),
    "cancel": _action("cancel", "cancelled", *_NON_FINAL),
}


@dataclass(frozen=True)
class Step:
    source: str
    target: str

    @property
    def event(self) -> str:
        return _STEP_EVENTS.get((self.source, self.target)) or _STATE_EVENTS[self.target]


def _shortest_route(source: str, target: str) -> tuple[str, ...] | None:
    """States entered on the way from source to target (target last), through edges only."""
    seen = {source}
    queue: deque[tuple[str, tuple[str, ...]]] = deque([(source, ())])
    while queue:
        state, path = queue.popleft()
        for nxt in EDGES[state]:
            if nxt == target:
                return (*path, nxt)
            if nxt not in seen and nxt not in FINAL:
                seen.add(nxt)
                queue.append((nxt, (*path, nxt)))
    return None


def _build_routes() -> dict[tuple[str, str], tuple[str, ...]]:
    routes = {}
    for name, action in ACTIONS.items():
        for source in action.sources:
            route = _shortest_route(source, action.target)
            # A table entry the graph cannot carry out is a programming error: fail at import, not in a request.
            if route is None:
                raise RuntimeError(f"lifecycle: action {name} from {source} has no path to {action.target}")
            routes[(name, source)] = route
    return routes


ROUTES = _build_routes()


def allowed_actions(status: str) -> list[str]:
    return [name for name, action in ACTIONS.items() if status in action.sources]


def describe_allowed(status: str) -> str:
    """What can follow `status`, e.g. "scheduled, running (start), pending_review, ai_generating, cancelled"."""
    labels: list[str] = []
    targets: set[str] = set()
    for name in allowed_actions(status):
        action = ACTIONS[name]
        if action.target in targets:
            continue
        targets.add(action.target)
        route = ROUTES[(name, status)]
        labels.append(action.target if len(route) == 1 else f"{action.target} ({action.verb})")
    return ", ".join(labels)


def route(status: str, action_name: str) -> tuple[str, ...]:
    """The states `action_name` passes through from `status`; Conflict when the action is not allowed."""
    action = ACTIONS[action_name]
    if status in action.sources:
        return ROUTES[(action_name, status)]
    if status in FINAL:
        raise Conflict(f"cannot {action.verb} a campaign that is {status}: {status} is final",
                       code="invalid_transition")
    raise Conflict(f"cannot {action.verb} a campaign in {status}; allowed from {status}: {describe_allowed(status)}",
                   code="invalid_transition")


def apply(campaign: Any, action_name: str, *, at: datetime, reason: str | None = None) -> list[Step]:
    """Move `campaign` through the action's steps; the only place a campaign's status is assigned."""
    steps: list[Step] = []
    for target in route(campaign.status, action_name):
        steps.append(Step(campaign.status, target))
        campaign.status = target
        if target == "running" and campaign.started_at is None:
            campaign.started_at = at
        if target == "completed":
            campaign.completed_at = at
    if reason is not None:
        campaign.status_reason = reason
    return steps
