"""Task use cases: spawn a task on a contract and move it through its statuses."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import psycopg

from makima.db import contracts as contracts_sql
from makima.db import supervisors as supervisors_sql
from makima.db import tasks as tasks_sql
from makima.db.connection import Conn, Database, transaction
from makima.domain import paging
from makima.domain.models import Contract, Task
from makima.domain.paging import Page
from makima.domain.principals import Principal
from makima.domain.statuses import ContractStatus
from makima.domain.tasks import FINISHED, TaskStatus, check_task_transition
from makima.errors import Conflict, NotFound
from makima.services.common import load_contract, load_type, record, require_not_paused, require_workable, transition
from makima.services.completion import CompletionPolicy, advance_if_ready


def spawn_task(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    name: str,
    is_supervisor: bool = False,
    daemon: str | None = None,
) -> Task:
    """Create a pending task. A contract's first supervisor task starts the contract: ``created`` becomes
    ``active`` (seed 1.4's migration strategy). A second live supervisor is refused by a unique index."""
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        require_workable(contract, "spawn a task")
        require_not_paused(contract, "spawn a task")
        return spawn_task_locked(conn, principal, contract, name=name, is_supervisor=is_supervisor, daemon=daemon)


def spawn_task_locked(
    conn: Conn,
    principal: Principal,
    contract: Contract,
    *,
    name: str,
    is_supervisor: bool,
    daemon: str | None,
    daemon_id: UUID | None = None,
) -> Task:
    """The spawn itself, on a contract the caller has locked and checked. A supervisor task gets its
    supervisor state row in the same transaction."""
    try:
        with conn.transaction():
            row = tasks_sql.insert(
                conn,
                contract_id=contract.id,
                name=name,
                is_supervisor=is_supervisor,
                phase=contract.phase,
                daemon=daemon,
                daemon_id=daemon_id,
                created_by=principal.actor,
            )
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict("contract already has a live supervisor task", {"contract_id": str(contract.id)}) from exc
    task = Task.model_validate(row)
    if is_supervisor:
        supervisors_sql.insert(
            conn, task_id=task.id, contract_id=contract.id, daemon_id=daemon_id, phase=contract.phase
        )
    contracts_sql.touch_activity(conn, contract.id)
    record(
        conn,
        contract,
        principal,
        "task_spawned",
        task_id=str(task.id),
        task_name=task.name,
        is_supervisor=is_supervisor,
    )
    if is_supervisor and contract.status is ContractStatus.CREATED:
        transition(conn, principal, contract, ContractStatus.ACTIVE, "supervisor started")
    return task


def list_tasks(
    db: Database, principal: Principal, contract_id: UUID, *, cursor: str | None = None, limit: int = 100
) -> Page[Task]:
    """A page of the contract's tasks, oldest first."""
    after = paging.decode_cursor(cursor, (datetime, UUID)) if cursor else None
    with transaction(db) as conn:
        load_contract(conn, principal, contract_id)
        rows = tasks_sql.list_page(conn, contract_id, after=(after[0], after[1]) if after else None, limit=limit + 1)
    return paging.mapped(paging.page_of(rows, limit, lambda r: (r["created_at"], r["id"])), Task.model_validate)


def get_task(db: Database, principal: Principal, contract_id: UUID, task_id: UUID) -> Task:
    with transaction(db) as conn:
        load_contract(conn, principal, contract_id)
        row = tasks_sql.get(conn, contract_id, task_id)
        if row is None:
            raise NotFound(f"task {task_id} not found", {"task_id": str(task_id)})
        return Task.model_validate(row)


def update_task_status(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    task_id: UUID,
    *,
    status: TaskStatus,
    error: str | None = None,
    policy: CompletionPolicy | None = None,
) -> Task:
    """Move a task along pending -> running -> completed | failed; finishing records ``task_completed``."""
    with transaction(db) as conn:
        contract = load_contract(conn, principal, contract_id, lock=True)
        row = tasks_sql.get(conn, contract_id, task_id, for_update=True)
        if row is None:
            raise NotFound(f"task {task_id} not found", {"task_id": str(task_id)})
        task = Task.model_validate(row)
        check_task_transition(task.status, status)
        updated = Task.model_validate(tasks_sql.set_status(conn, task_id, status=status.value, error=error))
        if status in FINISHED:
            contracts_sql.touch_activity(conn, contract_id)
            record(
                conn,
                contract,
                principal,
                "task_completed",
                task_id=str(task_id),
                task_name=task.name,
                success=status is TaskStatus.COMPLETED,
                error=error,
            )
            if not task.is_supervisor:
                ctype = load_type(conn, contract.contract_type)
                advance_if_ready(conn, principal, contract, ctype, policy or CompletionPolicy.off())
        else:
            record(conn, contract, principal, "task_started", task_id=str(task_id), task_name=task.name)
        return updated
