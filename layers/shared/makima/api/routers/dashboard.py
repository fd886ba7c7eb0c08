"""GET /contracts/dashboard (seed 5.4), with exactly the seed's response shape (camelCase keys).
Behind the ``monitoring_dashboard`` feature flag."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from makima.api.deps import DB, Caller, Config, feature
from makima.api.routers._common import make_router
from makima.api.schemas import EventOut
from makima.domain.models import ContractEvent
from makima.flags import Flag
from makima.services import dashboard as svc
from makima.services.stale import threshold_of

router = make_router("dashboard")
router.dependencies.append(feature(Flag.MONITORING_DASHBOARD))


class StaleContract(BaseModel):
    id: UUID
    name: str
    lastActivity: datetime  # noqa: N815 - the seed's field names
    staleDurationSecs: int  # noqa: N815


class WaitingContract(BaseModel):
    id: UUID
    name: str
    waitingFor: str | None  # noqa: N815
    question: str | None


class ResourceUsage(BaseModel):
    activeSupervisors: int  # noqa: N815
    runningTasks: int  # noqa: N815
    pendingTasks: int  # noqa: N815
    activeDaemons: int  # noqa: N815
    totalWorktrees: int  # noqa: N815


class DashboardOut(BaseModel):
    statusCounts: dict[str, int] = Field(description="Contracts per status.")  # noqa: N815
    phaseCounts: dict[str, int] = Field(description="Contracts that can still do work, per phase.")  # noqa: N815
    staleContracts: list[StaleContract]  # noqa: N815
    waitingForInput: list[WaitingContract]  # noqa: N815
    recentEvents: list[EventOut]  # noqa: N815
    resourceUsage: ResourceUsage  # noqa: N815


def _waiting_for(raw: str | None) -> str | None:
    if raw is None:
        return None
    return raw.split(":", 1)[0]  # "question", "phase_confirmation", "completion_confirmation", a reason


@router.get("/contracts/dashboard", response_model=DashboardOut)
def dashboard(db: DB, caller: Caller, config: Config) -> DashboardOut:
    d = svc.dashboard(db, caller, stale_threshold=threshold_of(config.contracts))
    usage: dict[str, Any] = d.resource_usage
    return DashboardOut(
        statusCounts=d.status_counts,
        phaseCounts=d.phase_counts,
        staleContracts=[
            StaleContract(
                id=r["id"], name=r["name"], lastActivity=r["last_activity_at"], staleDurationSecs=r["stale_secs"]
            )
            for r in d.stale
        ],
        waitingForInput=[
            WaitingContract(
                id=r["id"], name=r["name"], waitingFor=_waiting_for(r["waiting_for"]), question=r["question"]
            )
            for r in d.waiting
        ],
        recentEvents=[EventOut.of(ContractEvent.model_validate(e)) for e in d.recent_events],
        resourceUsage=ResourceUsage(
            activeSupervisors=usage["active_supervisors"],
            runningTasks=usage["running_tasks"],
            pendingTasks=usage["pending_tasks"],
            activeDaemons=usage["active_daemons"],
            totalWorktrees=usage["total_worktrees"],
        ),
    )
