"""Supervisors (seed 3.3-3.5): start, status, heartbeat history, sync, persisted state, restoration,
restart."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Response, status
from pydantic import BaseModel, Field

from makima.api.compat import STATUS_VIEW
from makima.api.deps import DB, Caller, Config, feature
from makima.api.paging import Cursor, limit_query, next_cursor
from makima.api.routers._common import make_router
from makima.api.schemas import TEXT, Body, ContractOut
from makima.domain.bounds import INT4_MAX, MAX_SEQ
from makima.domain.supervisors import SavePoint, SupervisorRecord, SupervisorState
from makima.flags import Flag
from makima.services import restoration
from makima.services import supervisors as svc

router = make_router("supervisors")
router.dependencies.append(STATUS_VIEW)  # the legacy status view (api/compat.py)
HEARTBEATS = [feature(Flag.SUPERVISOR_HEARTBEAT)]


class SupervisorStatus(BaseModel):
    task_id: UUID
    state: SupervisorState
    phase: str
    current_activity: str
    progress: int
    last_heartbeat: datetime | None
    pending_task_ids: list[UUID]
    alive: bool = Field(description="False once the heartbeat timed out (state interrupted) until it beats again.")
    dead_since: datetime | None
    stopped: bool = Field(
        default=False,
        description="It saved at shutdown and has not beaten since: stopped on purpose, never swept as dead, "
        "and its task is adoptable by another daemon.",
    )
    stopped_since: datetime | None = None
    adoptable: bool = Field(
        default=False,
        description="Another live daemon may claim its task (GET /tasks/reassignable) and restore it: it stopped "
        "cleanly, or it is dead and a restart was asked for.",
    )
    daemon_id: UUID | None
    generation: int
    heartbeat_count: int
    sync_requested: bool
    restart_requested: bool

    @classmethod
    def of(cls, s: SupervisorRecord) -> SupervisorStatus:
        return cls(
            task_id=s.task_id,
            state=s.state,
            phase=s.phase,
            current_activity=s.current_activity,
            progress=s.progress,
            last_heartbeat=s.last_heartbeat_at,
            pending_task_ids=s.pending_task_ids,
            alive=s.alive,
            dead_since=s.dead_at,
            stopped=s.stopped,
            stopped_since=s.stopped_at,
            adoptable=s.adoptable,
            daemon_id=s.daemon_id,
            generation=s.generation,
            heartbeat_count=s.heartbeat_count,
            sync_requested=s.sync_requested_at is not None,
            restart_requested=s.restart_requested_at is not None,
        )


class SupervisorStart(Body):
    daemon_id: UUID | None = Field(default=None, description="The registered daemon that runs it.")
    name: str = Field(default="supervisor", min_length=1, max_length=200, pattern=TEXT)


INTERVAL_DOC = "Beat at this interval (the service's heartbeat_interval_seconds); it may change, so follow each answer."


class SupervisorStarted(BaseModel):
    contract: ContractOut
    supervisor: SupervisorStatus
    heartbeat_interval_seconds: int = Field(description=INTERVAL_DOC)


@router.post(
    "/contracts/{contract_id}/supervisor", response_model=SupervisorStarted, status_code=status.HTTP_201_CREATED
)
def start_supervisor(
    contract_id: UUID, body: SupervisorStart, db: DB, caller: Caller, settings: Config
) -> SupervisorStarted:
    started = svc.start_supervisor(db, caller, contract_id, daemon_id=body.daemon_id, name=body.name)
    return SupervisorStarted(
        contract=ContractOut.of(started.contract),
        supervisor=SupervisorStatus.of(started.supervisor),
        heartbeat_interval_seconds=settings.contracts.heartbeat_interval_seconds,
    )


@router.get("/contracts/{contract_id}/supervisor/status", response_model=SupervisorStatus)
def supervisor_status(contract_id: UUID, db: DB, caller: Caller) -> SupervisorStatus:
    return SupervisorStatus.of(svc.status(db, caller, contract_id))


class HeartbeatRecord(BaseModel):
    timestamp: datetime = Field(description="When the supervisor sent it.")
    received_at: datetime
    state: str
    phase: str
    activity: str
    progress: int
    pending_task_ids: list[UUID]


class HeartbeatHistory(BaseModel):
    heartbeats: list[HeartbeatRecord]
    next_cursor: str | None = next_cursor()


@router.get("/contracts/{contract_id}/supervisor/heartbeats", response_model=HeartbeatHistory, dependencies=HEARTBEATS)
def heartbeat_history(
    contract_id: UUID, db: DB, caller: Caller, cursor: Cursor = None, limit: Annotated[int, limit_query(1000)] = 10
) -> HeartbeatHistory:
    """Newest first, a page at a time, over the last 24 hours."""
    page = svc.heartbeat_history(db, caller, contract_id, limit, cursor=cursor)
    rows = page.items
    return HeartbeatHistory(
        next_cursor=page.next_cursor,
        heartbeats=[
            HeartbeatRecord(
                timestamp=r.sent_at,
                received_at=r.received_at,
                state=r.state,
                phase=r.phase,
                activity=r.current_activity,
                progress=r.progress,
                pending_task_ids=r.pending_task_ids,
            )
            for r in rows
        ],
    )


class SyncRequest(Body):
    wait_seconds: float | None = Field(
        default=None,
        ge=0,
        le=svc.MAX_SYNC_WAIT,
        description="How long to wait for the supervisor's next heartbeat to collect the request. By default "
        "about one heartbeat interval (at most 25 s); 0 asks without waiting.",
    )


class SyncAnswer(BaseModel):
    synced: bool = Field(
        description="True (200) once a heartbeat collected the request and reported its state; false (202) "
        "when none came within the wait: the request stands and the next heartbeat delivers it."
    )
    sync_requested: bool
    state: SupervisorState = Field(description="As the collecting heartbeat reported it (synced), else the last known.")
    last_heartbeat: datetime | None
    waited_seconds: float


@router.post(
    "/contracts/{contract_id}/supervisor/sync",
    response_model=SyncAnswer,
    dependencies=HEARTBEATS,
    responses={202: {"model": SyncAnswer, "description": "Not synced within the wait; the request stands."}},
)
def sync(
    contract_id: UUID, db: DB, caller: Caller, settings: Config, response: Response, body: SyncRequest | None = None
) -> SyncAnswer:
    wait = body.wait_seconds if body and body.wait_seconds is not None else None
    if wait is None:
        wait = svc.default_sync_wait(settings.contracts.heartbeat_interval_seconds)
    r = svc.request_sync(db, caller, contract_id, wait_seconds=wait)
    if not r.synced:
        response.status_code = status.HTTP_202_ACCEPTED
    return SyncAnswer(
        synced=r.synced,
        sync_requested=True,
        state=r.supervisor.state,
        last_heartbeat=r.supervisor.last_heartbeat_at,
        waited_seconds=r.waited_seconds,
    )


class PersistedState(BaseModel):
    task_id: UUID
    generation: int
    save_seq: int
    state: SupervisorState
    phase: str
    conversation_history: list[Any]
    pending_questions: list[Any]
    spawned_task_ids: list[UUID]
    waiting_on_task_ids: list[UUID]
    last_checkpoint: dict[str, Any] | None
    current_activity: str
    error: str | None
    last_save_point: str | None
    created_at: datetime
    updated_at: datetime


def _persisted(s: SupervisorRecord, history: list[Any]) -> PersistedState:
    return PersistedState(
        task_id=s.task_id,
        generation=s.generation,
        save_seq=s.save_seq,
        state=s.state,
        phase=s.phase,
        conversation_history=history,
        pending_questions=s.pending_questions,
        spawned_task_ids=s.spawned_task_ids,
        waiting_on_task_ids=s.waiting_on_task_ids,
        last_checkpoint=s.last_checkpoint,
        current_activity=s.current_activity,
        error=s.error,
        last_save_point=s.last_save_point,
        created_at=s.created_at,
        updated_at=s.updated_at,
    )


class StateSaveIn(Body):
    generation: int = Field(
        ge=1, le=INT4_MAX, description="The generation the supervisor runs as (from start or restore)."
    )
    seq: int = Field(
        ge=1,
        le=MAX_SEQ,
        description="Above the last accepted save's (a lower one is refused, 409) and at most 2^32 above it "
        "(422): count by one.",
    )
    save_point: SavePoint
    state: SupervisorState
    phase: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    current_activity: str = Field(default="", max_length=2000, pattern=TEXT)
    conversation_offset: int = Field(
        default=0, ge=0, le=INT4_MAX, description="How many messages the server already has."
    )
    conversation_append: list[dict[str, Any]] = Field(default_factory=list, max_length=500)
    pending_questions: list[dict[str, Any]] = Field(default_factory=list, max_length=100)
    spawned_task_ids: list[UUID] = Field(default_factory=list, max_length=1000)
    waiting_on_task_ids: list[UUID] = Field(default_factory=list, max_length=1000)
    error: str | None = Field(default=None, max_length=10_000, pattern=TEXT)
    checkpoint: bool = Field(default=False, description="Also keep this state as the last checkpoint.")


@router.get("/contracts/{contract_id}/supervisor/state", response_model=PersistedState)
def get_state(contract_id: UUID, db: DB, caller: Caller) -> PersistedState:
    s, history = svc.get_state(db, caller, contract_id)
    return _persisted(s, history)


class StateSaved(BaseModel):
    """What a save answers: enough to continue (the whole state, conversation included, is the GET)."""

    task_id: UUID
    generation: int
    save_seq: int
    state: SupervisorState
    phase: str
    conversation_length: int
    last_save_point: str | None
    last_checkpoint_seq: int | None
    updated_at: datetime


@router.put("/contracts/{contract_id}/supervisor/state", response_model=StateSaved)
def save_state(contract_id: UUID, body: StateSaveIn, db: DB, caller: Caller) -> StateSaved:
    s = svc.save_state(db, caller, contract_id, svc.StateSave(**dict(body)))
    return StateSaved(
        task_id=s.task_id,
        generation=s.generation,
        save_seq=s.save_seq,
        state=s.state,
        phase=s.phase,
        conversation_length=s.conversation_length,
        last_save_point=s.last_save_point,
        last_checkpoint_seq=s.last_checkpoint_seq,
        updated_at=s.updated_at,
    )


class RestoreIn(Body):
    daemon_id: UUID | None = Field(default=None, description="The daemon taking the supervisor over.")


class RestorationOut(BaseModel):
    mode: str = Field(description="clean, crash, checkpoint (saved state was inconsistent) or fresh (none saved)")
    task_id: UUID
    generation: int = Field(description="Run as this generation: saves and heartbeats of older ones are refused.")
    next_seq: int
    state: SupervisorState
    phase: str
    conversation_history: list[Any]
    pending_questions: list[dict[str, Any]] = Field(description="Re-delivered: still waiting for the owner.")
    answered_questions: list[dict[str, Any]] = Field(description="Answers not yet acknowledged.")
    waiting_on_task_ids: list[UUID]
    finished_task_ids: list[UUID]
    spawned_task_ids: list[UUID]
    restoration_context: str = Field(description="What to tell the LLM.")
    warnings: list[str]
    heartbeat_interval_seconds: int = Field(description=INTERVAL_DOC)


@router.post("/contracts/{contract_id}/supervisor/restore", response_model=RestorationOut)
def restore(
    contract_id: UUID, db: DB, caller: Caller, settings: Config, body: RestoreIn | None = None
) -> RestorationOut:
    r = restoration.restore(db, caller, contract_id, daemon_id=body.daemon_id if body else None)
    return RestorationOut(**vars(r), heartbeat_interval_seconds=settings.contracts.heartbeat_interval_seconds)


class RestartIn(Body):
    reason: str | None = Field(default=None, max_length=2000, pattern=TEXT)


@router.post("/contracts/{contract_id}/supervisor/restart", response_model=SupervisorStatus)
def restart(contract_id: UUID, db: DB, caller: Caller, body: RestartIn | None = None) -> SupervisorStatus:
    return SupervisorStatus.of(svc.restart_supervisor(db, caller, contract_id, reason=body.reason if body else None))
