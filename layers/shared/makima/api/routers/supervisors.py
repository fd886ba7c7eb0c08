"""Supervisors (seed 3.3-3.5): start, status, heartbeat history, sync, persisted state, restoration,
restart."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Query, Request, Response, status
from pydantic import BaseModel, Field, TypeAdapter

from makima.api import lean
from makima.api.answers import serialized, serialized_with_json
from makima.api.compat import STATUS_VIEW
from makima.api.concurrency import blocking
from makima.api.deps import DB, Caller, Config, feature
from makima.api.idempotency import idempotent
from makima.api.json_bounds import MAX_DEPTH, MAX_MESSAGE_BYTES, MAX_QUESTIONS_BYTES, bounded
from makima.api.paging import Cursor, limit_query, next_cursor
from makima.api.routers._common import make_router, raises
from makima.api.schemas import TEXT, Body, ContractOut, ExpectedVersion
from makima.domain.bounds import INT4_MAX, MAX_SEQ
from makima.domain.principals import Principal
from makima.domain.strict import NO_BOOL, Bool, Int
from makima.domain.supervisors import SavedState, SavePoint, SupervisorRecord, SupervisorState
from makima.errors import (
    Conflict,
    ContractNotFound,
    FeatureDisabled,
    Inconsistent,
    InvalidTransition,
    NotFound,
    OutOfBounds,
    SupervisorDead,
    SupervisorNotFound,
    UnknownReference,
    VersionConflict,
)
from makima.flags import Flag
from makima.services import restoration, sync_waits
from makima.services import supervisors as svc

router = make_router(
    "supervisors", ContractNotFound, SupervisorNotFound, InvalidTransition, NotFound, Conflict, FeatureDisabled
)
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
    "/contracts/{contract_id}/supervisor",
    response_model=SupervisorStarted,
    status_code=status.HTTP_201_CREATED,
    responses=raises(UnknownReference, creates={"contract_id": "$request.path.contract_id"}),
)
@idempotent
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
    wait_seconds: Annotated[float, Field(ge=0, le=svc.MAX_SYNC_WAIT), NO_BOOL] | None = Field(
        default=None,
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
    responses={
        **raises(SupervisorDead),
        202: {"model": SyncAnswer, "description": "Not synced within the wait; the request stands."},
    },
)
async def sync(
    contract_id: UUID,
    request: Request,
    db: DB,
    caller: Caller,
    settings: Config,
    response: Response,
    body: SyncRequest | None = None,
) -> SyncAnswer:
    # async: a wait parks on a wake-up (services/sync_waits.py), holding no threadpool thread and no
    # connection; its few reads go to the threadpool.
    wait = body.wait_seconds if body and body.wait_seconds is not None else None
    if wait is None:
        wait = svc.default_sync_wait(settings.contracts.heartbeat_interval_seconds)
    limiter: sync_waits.WaitLimiter = request.app.state.sync_wait_limiter
    with limiter.admit(caller, wait):
        r = await sync_waits.wait_for_sync(
            db, caller, contract_id, wait_seconds=wait, waits=request.app.state.sync_waits, blocking=blocking
        )
    if not r.synced:
        response.status_code = status.HTTP_202_ACCEPTED
    return SyncAnswer(
        synced=r.synced,
        sync_requested=True,
        state=r.supervisor.state,
        last_heartbeat=r.supervisor.last_heartbeat_at,
        waited_seconds=r.waited_seconds,
    )


CURSOR_DOC = (
    "The conversation continues: GET …/supervisor/state?after_seq=<this> for the next page; null when "
    "this page reaches the end."
)


class PersistedState(BaseModel):
    task_id: UUID
    generation: int
    save_seq: int
    state: SupervisorState
    phase: str
    conversation_history: list[Any] = Field(
        description="One page of the kept conversation (about 1 MB at most): the messages after after_seq, "
        "else from conversation_start."
    )
    conversation_start: int = Field(description="The seq of the first message kept; older ones were compacted away.")
    conversation_length: int = Field(description="Messages saved in all (the next one appends at this seq).")
    next_after_seq: int | None = Field(description=CURSOR_DOC)
    pending_questions: list[Any]
    spawned_task_ids: list[UUID]
    waiting_on_task_ids: list[UUID]
    last_checkpoint: dict[str, Any] | None
    current_activity: str
    error: str | None
    last_save_point: str | None
    created_at: datetime
    updated_at: datetime


def _persisted(w: svc.StateWindow) -> Response:
    s = w.supervisor
    return serialized_with_json(
        PersistedState(
            task_id=s.task_id,
            generation=s.generation,
            save_seq=s.save_seq,
            state=s.state,
            phase=s.phase,
            conversation_history=[],
            conversation_start=s.conversation_start,
            conversation_length=s.conversation_length,
            next_after_seq=w.next_after_seq,
            pending_questions=s.pending_questions,
            spawned_task_ids=s.spawned_task_ids,
            waiting_on_task_ids=s.waiting_on_task_ids,
            last_checkpoint=s.last_checkpoint,
            current_activity=s.current_activity,
            error=s.error,
            last_save_point=s.last_save_point,
            created_at=s.created_at,
            updated_at=s.updated_at,
        ),
        "conversation_history",
        w.history,
    )


class StateSaveIn(Body):
    generation: Int = Field(
        ge=1, le=INT4_MAX, description="The generation the supervisor runs as (from start or restore)."
    )
    seq: Int = Field(
        ge=1,
        le=MAX_SEQ,
        description="Above the last accepted save's (a lower one is refused, 409) and at most 2^32 above it "
        "(422): count by one.",
    )
    save_point: SavePoint
    state: SupervisorState
    phase: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    current_activity: str = Field(default="", max_length=2000, pattern=TEXT)
    conversation_offset: Int = Field(
        default=0, ge=0, le=INT4_MAX, description="How many messages the server already has."
    )
    conversation_append: list[Annotated[dict[str, Any], bounded(MAX_MESSAGE_BYTES)]] = Field(
        default_factory=list,
        max_length=500,
        description=f"Each message at most {MAX_DEPTH} levels deep and {MAX_MESSAGE_BYTES} bytes as JSON.",
    )
    pending_questions: Annotated[
        list[Annotated[dict[str, Any], bounded(MAX_QUESTIONS_BYTES)]],
        bounded(MAX_QUESTIONS_BYTES, max_depth=None),
    ] = Field(
        default_factory=list,
        max_length=100,
        description=f"Each at most {MAX_DEPTH} levels deep; {MAX_QUESTIONS_BYTES} bytes as JSON all together.",
    )
    spawned_task_ids: list[UUID] = Field(default_factory=list, max_length=1000)
    waiting_on_task_ids: list[UUID] = Field(default_factory=list, max_length=1000)
    error: str | None = Field(default=None, max_length=10_000, pattern=TEXT)
    checkpoint: Bool = Field(default=False, description="Also keep this state as the last checkpoint.")


@router.get("/contracts/{contract_id}/supervisor/state", response_model=PersistedState)
async def get_state(
    request: Request,
    contract_id: UUID,
    db: DB,
    caller: Caller,
    after_seq: Annotated[
        int | None, Query(ge=0, le=2_147_483_647, description="Continue the conversation after this seq.")
    ] = None,
) -> Response:
    on_loop = request.app.state.async_database
    if on_loop is not None:  # the local stack: the read sent from the event loop (db/async_pool.py)
        return await svc.get_state_on_loop(on_loop, caller, contract_id, after_seq=after_seq, answer=_persisted)
    return await blocking(svc.get_state, db, caller, contract_id, after_seq=after_seq, answer=_persisted)


class StateSaved(SavedState):
    """What a save answers: enough to continue (the whole state, conversation included, is the GET)."""

    conversation_start: int = Field(description="The seq of the first message kept; older ones were compacted away.")


@router.put(
    "/contracts/{contract_id}/supervisor/state", response_model=StateSaved, responses=raises(Inconsistent, OutOfBounds)
)
async def save_state(
    request: Request, contract_id: UUID, body: StateSaveIn, db: DB, caller: Caller, settings: Config
) -> StateSaved:
    save = svc.StateSave(**dict(body))
    max_bytes = settings.contracts.supervisor_conversation_max_bytes
    on_loop = request.app.state.async_database
    if on_loop is None:
        s = await blocking(svc.save_state, db, caller, contract_id, save, max_conversation_bytes=max_bytes)
    # The local stack: a plain save's one statement sent from the event loop (db/async_pool.py), any
    # other save (a state change, compaction, a refusal) in its transaction on a worker thread.
    elif plain := await svc.save_plain_on_loop(on_loop, caller, contract_id, save, max_conversation_bytes=max_bytes):
        s = plain
    else:
        s = await blocking(
            svc.save_state_in_transaction, db, caller, contract_id, save, max_conversation_bytes=max_bytes
        )
    return StateSaved.model_validate(s)


class RestoreIn(Body):
    daemon_id: UUID | None = Field(default=None, description="The daemon taking the supervisor over.")


class RestorationOut(BaseModel):
    mode: str = Field(description="clean, crash, checkpoint (saved state was inconsistent) or fresh (none saved)")
    task_id: UUID
    generation: int = Field(description="Run as this generation: saves and heartbeats of older ones are refused.")
    next_seq: int
    state: SupervisorState
    phase: str
    conversation_history: list[Any] = Field(
        description="The first page of the kept conversation (about 1 MB at most); next_after_seq continues it."
    )
    conversation_start: int = Field(description="The seq of the first message kept; older ones were compacted away.")
    conversation_length: int
    next_after_seq: int | None = Field(description=CURSOR_DOC)
    pending_questions: list[dict[str, Any]] = Field(description="Re-delivered: still waiting for the owner.")
    answered_questions: list[dict[str, Any]] = Field(description="Answers not yet acknowledged.")
    waiting_on_task_ids: list[UUID]
    finished_task_ids: list[UUID]
    spawned_task_ids: list[UUID]
    restoration_context: str = Field(description="What to tell the LLM.")
    warnings: list[str]
    heartbeat_interval_seconds: int = Field(description=INTERVAL_DOC)


@router.post(
    "/contracts/{contract_id}/supervisor/restore", response_model=RestorationOut, responses=raises(UnknownReference)
)
def restore(contract_id: UUID, db: DB, caller: Caller, settings: Config, body: RestoreIn | None = None) -> Response:
    interval = settings.contracts.heartbeat_interval_seconds

    def answer(r: restoration.Restoration) -> Response:
        return serialized(RestorationOut(**vars(r), heartbeat_interval_seconds=interval))

    return restoration.restore(db, caller, contract_id, daemon_id=body.daemon_id if body else None, answer=answer)


class RestartIn(Body):
    reason: str | None = Field(default=None, max_length=2000, pattern=TEXT)
    expected_version: ExpectedVersion = None


@router.post(
    "/contracts/{contract_id}/supervisor/restart",
    response_model=SupervisorStatus,
    responses=raises(VersionConflict),
)
def restart(contract_id: UUID, db: DB, caller: Caller, body: RestartIn | None = None) -> SupervisorStatus:
    body = body or RestartIn()
    return SupervisorStatus.of(
        svc.restart_supervisor(db, caller, contract_id, reason=body.reason, expected_version=body.expected_version)
    )


# The lean twins of the state's read and save (api/lean.py): the same checks in the same order and the
# same endpoint functions, without FastAPI's per-request machinery; a read with a query (``after_seq``),
# the legacy status header or anything but a well-formed JSON body is left to the routes above
# (docs/performance.md, "Change 15").
_STATE_SAVE = TypeAdapter(StateSaveIn)


async def _get_state_lean(request: Request, body: bytes) -> Response | None:
    contract_id = lean.contract_id(request)
    if not lean.plain(request) or contract_id is None:
        return None

    async def run(caller: Principal) -> Response:
        return await get_state(request, contract_id, request.app.state.database, caller)

    return await lean.serve(request, run, status_view=True)


async def _save_state_lean(request: Request, body: bytes) -> Response | None:
    if not lean.plain(request) or (parsed := lean.contract_and_body(request, body, _STATE_SAVE)) is None:
        return None
    contract_id, save = parsed
    s = request.app.state

    async def run(caller: Principal) -> StateSaved:
        return await save_state(request, contract_id, save, s.database, caller, s.settings)

    return await lean.serve(request, run, status_view=True)


_STATE = f"{router.prefix}/contracts/{{contract_id}}/supervisor/state"
lean.register(router, lean.LeanRoute(_STATE, "GET", _get_state_lean))
lean.register(router, lean.LeanRoute(_STATE, "PUT", _save_state_lean))
