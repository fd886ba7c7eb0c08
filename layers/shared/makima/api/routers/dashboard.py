"""GET /contracts/dashboard (seed 5.4), with exactly the seed's response shape (camelCase keys).
Behind the ``monitoring_dashboard`` feature flag."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, Field

from makima.api.deps import DB, Caller, Config, feature
from makima.api.routers._common import make_router
from makima.api.schemas import EventOut
from makima.errors import FeatureDisabled
from makima.flags import Flag
from makima.services import dashboard as svc
from makima.services.stale import threshold_of

router = make_router("dashboard", FeatureDisabled)
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


@router.get("/contracts/dashboard", response_model=DashboardOut)
def dashboard(db: DB, caller: Caller, config: Config) -> DashboardOut:
    d = svc.dashboard(db, caller, stale_threshold=threshold_of(config.contracts))
    u = d.resource_usage
    return DashboardOut(
        statusCounts=d.status_counts,
        phaseCounts=d.phase_counts,
        staleContracts=[
            StaleContract(id=s.id, name=s.name, lastActivity=s.last_activity_at, staleDurationSecs=s.stale_seconds)
            for s in d.stale
        ],
        waitingForInput=[
            WaitingContract(id=w.id, name=w.name, waitingFor=w.waiting_for, question=w.question) for w in d.waiting
        ],
        recentEvents=[EventOut.of(e) for e in d.recent_events],
        resourceUsage=ResourceUsage(
            activeSupervisors=u.active_supervisors,
            runningTasks=u.running_tasks,
            pendingTasks=u.pending_tasks,
            activeDaemons=u.active_daemons,
            totalWorktrees=u.total_worktrees,
        ),
    )
