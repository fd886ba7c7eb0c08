"""Tasks of a contract: spawn, list, get, change status."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import status

from makima.api.deps import DB, Caller, Policy
from makima.api.idempotency import idempotent
from makima.api.paging import Cursor, limit_query
from makima.api.routers._common import make_router, raises
from makima.api.schemas import TaskCreate, TaskList, TaskOut, TaskStatusChange
from makima.errors import Conflict, ContractNotFound, InvalidTransition, NotFound, ValidationFailed
from makima.services import tasks as svc

router = make_router("tasks", ContractNotFound)


@router.post(
    "/contracts/{contract_id}/tasks",
    response_model=TaskOut,
    status_code=status.HTTP_201_CREATED,
    responses=raises(
        InvalidTransition,
        Conflict,
        ValidationFailed,
        creates={"contract_id": "$response.body#/contract_id", "task_id": "$response.body#/id"},
    ),
)
@idempotent
def spawn_task(contract_id: UUID, body: TaskCreate, db: DB, caller: Caller) -> TaskOut:
    task = svc.spawn_task(db, caller, contract_id, name=body.name, is_supervisor=body.is_supervisor, daemon=body.daemon)
    return TaskOut.model_validate(task.model_dump())


@router.get("/contracts/{contract_id}/tasks", response_model=TaskList)
def list_tasks(
    contract_id: UUID, db: DB, caller: Caller, cursor: Cursor = None, limit: Annotated[int, limit_query(500)] = 100
) -> TaskList:
    """Oldest first, a page at a time."""
    page = svc.list_tasks(db, caller, contract_id, cursor=cursor, limit=limit)
    return TaskList(tasks=[TaskOut.model_validate(t.model_dump()) for t in page.items], next_cursor=page.next_cursor)


@router.get("/contracts/{contract_id}/tasks/{task_id}", response_model=TaskOut, responses=raises(NotFound))
def get_task(contract_id: UUID, task_id: UUID, db: DB, caller: Caller) -> TaskOut:
    return TaskOut.model_validate(svc.get_task(db, caller, contract_id, task_id).model_dump())


@router.post(
    "/contracts/{contract_id}/tasks/{task_id}/status",
    response_model=TaskOut,
    responses=raises(NotFound, InvalidTransition, ValidationFailed),
)
def change_task_status(
    contract_id: UUID, task_id: UUID, body: TaskStatusChange, db: DB, caller: Caller, policy: Policy
) -> TaskOut:
    task = svc.update_task_status(db, caller, contract_id, task_id, status=body.status, error=body.error, policy=policy)
    return TaskOut.model_validate(task.model_dump())
