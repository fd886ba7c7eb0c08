"""Daemons: register, heartbeat with the worktrees they hold, confirm removals, claim tasks of dead
daemons."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import status
from pydantic import BaseModel, Field

from makima.api.deps import DB, Caller, Config
from makima.api.idempotency import idempotent
from makima.api.paging import Cursor, limit_query, next_cursor
from makima.api.routers._common import make_router, raises
from makima.api.schemas import TEXT, Body
from makima.domain.strict import Int
from makima.domain.supervisors import DaemonRecord
from makima.errors import Conflict, NotFound, UnknownReference
from makima.services import daemons as svc

router = make_router("daemons")
# The worktrees one daemon heartbeat may report (and confirm removed in one request): a report
# replaces the last one, so this also bounds what a daemon holds. More than a host runs at once.
MAX_REPORTED_WORKTREES = 1000


class DaemonRegister(Body):
    name: str = Field(
        min_length=1, max_length=200, pattern=TEXT, description="Stable per host: re-registering revives it."
    )
    hostname: str = Field(default="", max_length=255, pattern=TEXT)
    capacity: Int = Field(default=1, ge=0, le=10_000)


class DaemonOut(DaemonRecord):
    """A daemon as the API shows it: the service's record, under the name the OpenAPI document has."""


INTERVAL_DOC = "Beat (daemon and supervisor heartbeats) at this interval: the service's heartbeat_interval_seconds."


class DaemonRegistered(DaemonOut):
    heartbeat_interval_seconds: int = Field(description=INTERVAL_DOC)


class WorktreeIn(Body):
    path: str = Field(min_length=1, max_length=4096, pattern=TEXT)
    branch: str = Field(default="", max_length=255, pattern=TEXT)
    task_id: UUID | None = None


class DaemonHeartbeat(Body):
    worktrees: list[WorktreeIn] | None = Field(
        default=None,
        max_length=MAX_REPORTED_WORKTREES,
        description=f"Everything the daemon holds now (replaces the last report); at most {MAX_REPORTED_WORKTREES}.",
    )


class WorktreeOut(BaseModel):
    path: str
    branch: str
    task_id: UUID | None
    contract_id: UUID | None


class DaemonHeartbeatAnswer(BaseModel):
    daemon: DaemonOut
    remove_worktrees: list[WorktreeOut] = Field(description="Remove these, then confirm with …/worktrees/removed.")
    heartbeat_interval_seconds: int = Field(description=INTERVAL_DOC)


class WorktreesRemoved(Body):
    paths: list[Annotated[str, Field(min_length=1, max_length=4096, pattern=TEXT)]] = Field(
        min_length=1, max_length=MAX_REPORTED_WORKTREES
    )


class RemovedAnswer(BaseModel):
    confirmed: int


class WorktreeRecord(WorktreeOut):
    state: str
    reported_at: datetime
    requested_at: datetime | None
    removed_at: datetime | None


class WorktreeList(BaseModel):
    worktrees: list[WorktreeRecord]
    next_cursor: str | None = next_cursor()


class ReassignableTask(BaseModel):
    id: UUID
    contract_id: UUID
    name: str
    status: str
    is_supervisor: bool
    daemon_id: UUID | None


class ReassignableList(BaseModel):
    tasks: list[ReassignableTask]
    next_cursor: str | None = next_cursor()


class ClaimIn(Body):
    daemon_id: UUID


@router.post(
    "/daemons",
    response_model=DaemonRegistered,
    status_code=status.HTTP_201_CREATED,
    responses=raises(creates={"daemon_id": "$response.body#/id"}),
)
@idempotent
def register(body: DaemonRegister, db: DB, caller: Caller, settings: Config) -> DaemonRegistered:
    daemon = svc.register(db, caller, name=body.name, hostname=body.hostname, capacity=body.capacity)
    return DaemonRegistered(
        **daemon.model_dump(), heartbeat_interval_seconds=settings.contracts.heartbeat_interval_seconds
    )


@router.post(
    "/daemons/{daemon_id}/heartbeat", response_model=DaemonHeartbeatAnswer, responses=raises(NotFound, UnknownReference)
)
def daemon_heartbeat(
    daemon_id: UUID, db: DB, caller: Caller, settings: Config, body: DaemonHeartbeat | None = None
) -> DaemonHeartbeatAnswer:
    reported: list[dict[str, Any]] | None = (
        [w.model_dump() for w in body.worktrees] if body and body.worktrees is not None else None
    )
    daemon, remove = svc.daemon_heartbeat(db, caller, daemon_id, worktrees=reported)
    return DaemonHeartbeatAnswer(
        daemon=DaemonOut(**daemon.model_dump()),
        remove_worktrees=[
            WorktreeOut(path=w.path, branch=w.branch, task_id=w.task_id, contract_id=w.contract_id) for w in remove
        ],
        heartbeat_interval_seconds=settings.contracts.heartbeat_interval_seconds,
    )


@router.get("/daemons/{daemon_id}/worktrees", response_model=WorktreeList, responses=raises(NotFound))
def list_worktrees(
    daemon_id: UUID, db: DB, caller: Caller, cursor: Cursor = None, limit: Annotated[int, limit_query(1000)] = 100
) -> WorktreeList:
    """By path, a page at a time."""
    page = svc.worktrees(db, caller, daemon_id, cursor=cursor, limit=limit)
    return WorktreeList(worktrees=[WorktreeRecord(**w.model_dump()) for w in page.items], next_cursor=page.next_cursor)


@router.post("/daemons/{daemon_id}/worktrees/removed", response_model=RemovedAnswer, responses=raises(NotFound))
def worktrees_removed(daemon_id: UUID, body: WorktreesRemoved, db: DB, caller: Caller) -> RemovedAnswer:
    return RemovedAnswer(confirmed=svc.confirm_removed(db, caller, daemon_id, body.paths))


@router.get("/tasks/reassignable", response_model=ReassignableList)
def reassignable(
    db: DB, caller: Caller, cursor: Cursor = None, limit: Annotated[int, limit_query(500)] = 100
) -> ReassignableList:
    """Oldest first, a page at a time."""
    page = svc.reassignable(db, caller, limit, cursor=cursor)
    return ReassignableList(
        tasks=[ReassignableTask(**t.model_dump()) for t in page.items], next_cursor=page.next_cursor
    )


@router.post("/tasks/{task_id}/claim", response_model=ReassignableTask, responses=raises(UnknownReference, Conflict))
def claim(task_id: UUID, body: ClaimIn, db: DB, caller: Caller) -> ReassignableTask:
    return ReassignableTask(**svc.claim(db, caller, task_id, body.daemon_id).model_dump())
