"""Heartbeat ingest (seed 3.2): one supervisor's, or a daemon's batch. Its own Lambda: the hottest path,
with the smallest app. Behind the ``supervisor_heartbeat`` flag."""

from __future__ import annotations

from uuid import UUID

from fastapi import Request
from pydantic import BaseModel, Field

from makima.api.after_write import HANDLED
from makima.api.concurrency import blocking
from makima.api.deps import DB, Caller, Config, Events, feature
from makima.api.routers._common import make_router, raises
from makima.api.schemas import Body
from makima.domain.supervisors import Heartbeat
from makima.errors import ContractNotFound, FeatureDisabled, Inconsistent, StaleTimestamp, SupervisorNotFound
from makima.flags import Flag
from makima.services import supervisors as svc
from makima.services.monitor import EventSink
from makima.services.supervisors import HeartbeatMonitor

router = make_router("heartbeats", FeatureDisabled)
router.dependencies.append(feature(Flag.SUPERVISOR_HEARTBEAT))
MAX_BATCH = 500


class HeartbeatAnswerOut(BaseModel):
    task_id: UUID
    accepted: bool
    error: str | None = None
    sync_requested: bool = Field(default=False, description="Send your full state (PUT …/supervisor/state) now.")
    restart_requested: bool = Field(default=False, description="Restart yourself (save, stop, restore).")
    superseded: bool = Field(default=False, description="You were restored elsewhere: stop.")
    heartbeat_interval_seconds: int = Field(description="Beat at this interval (the service's setting).")


class HeartbeatBatch(Body):
    daemon_id: UUID | None = Field(default=None, description="The daemon sending the batch (marks it live).")
    heartbeats: list[Heartbeat] = Field(min_length=1, max_length=MAX_BATCH)


class HeartbeatBatchAnswer(BaseModel):
    results: list[HeartbeatAnswerOut]
    accepted: int
    rejected: int
    heartbeat_interval_seconds: int = Field(description="Beat at this interval (the service's setting).")


def _handled_by(request: Request, events: EventSink | None) -> HeartbeatMonitor | None:
    """The sink's heartbeat hook; the after-write middleware then leaves the request alone."""
    if events is None:
        return None
    setattr(request.state, HANDLED, True)
    return events.heartbeats


@router.post(
    "/contracts/{contract_id}/supervisor/heartbeat",
    response_model=HeartbeatAnswerOut,
    responses=raises(ContractNotFound, SupervisorNotFound, Inconsistent, StaleTimestamp),
)
async def heartbeat(
    contract_id: UUID, body: Heartbeat, db: DB, caller: Caller, events: Events, settings: Config
) -> HeartbeatAnswerOut:
    monitor = events.heartbeats if events is not None else None
    answer = await blocking(svc.heartbeat, db, caller, contract_id, body, monitor=monitor)
    return HeartbeatAnswerOut(**vars(answer), heartbeat_interval_seconds=settings.contracts.heartbeat_interval_seconds)


@router.post("/supervisors/heartbeats", response_model=HeartbeatBatchAnswer)
async def heartbeat_batch(
    request: Request, body: HeartbeatBatch, db: DB, caller: Caller, events: Events, settings: Config
) -> HeartbeatBatchAnswer:
    monitor = _handled_by(request, events)
    answers = await blocking(
        svc.ingest_heartbeats, db, caller, body.heartbeats, daemon_id=body.daemon_id, monitor=monitor
    )
    accepted = sum(a.accepted for a in answers)
    interval = settings.contracts.heartbeat_interval_seconds
    return HeartbeatBatchAnswer(
        results=[HeartbeatAnswerOut(**vars(a), heartbeat_interval_seconds=interval) for a in answers],
        accepted=accepted,
        rejected=len(answers) - accepted,
        heartbeat_interval_seconds=interval,
    )
