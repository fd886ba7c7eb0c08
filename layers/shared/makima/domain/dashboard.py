"""The dashboard's records (seed 5.4): what ``services.dashboard`` returns, typed, so the router maps
fields rather than reading rows by column name. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from makima.domain.models import ContractEvent


@dataclass(frozen=True, slots=True)
class StaleContract:
    id: UUID
    name: str
    last_activity_at: datetime
    stale_seconds: int


@dataclass(frozen=True, slots=True)
class WaitingContract:
    id: UUID
    name: str
    # What it waits for: "question", "phase_confirmation", "completion_confirmation" or the reason given
    waiting_for: str | None
    question: str | None  # the question's text when a question is what it waits for


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    active_supervisors: int
    running_tasks: int
    pending_tasks: int
    active_daemons: int
    total_worktrees: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    status_counts: dict[str, int]
    phase_counts: dict[str, int]
    stale: list[StaleContract]
    waiting: list[WaitingContract]
    recent_events: list[ContractEvent]
    resource_usage: ResourceUsage


def waiting_kind(raw: str | None) -> str | None:
    """``contracts.waiting_for`` holds ``question:<id>`` for a question; the dashboard shows the kind."""
    if raw is None:
        return None
    return raw.split(":", 1)[0]
