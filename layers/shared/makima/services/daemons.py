"""Daemons: registration, liveness, task reassignment and the worktrees they hold (seed 3.4, 3.2)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from makima.db import daemons as daemons_sql
from makima.db.connection import Database, transaction
from makima.domain.principals import Principal, Role
from makima.domain.supervisors import DaemonRecord, TaskClaim, WorktreeRecord
from makima.errors import Conflict, Forbidden, NotFound
from makima.services.common import scope


def _require_daemon_or_owner(principal: Principal) -> None:
    if principal.role not in (Role.DAEMON, Role.USER, Role.ADMIN):
        raise Forbidden("not allowed")


def register(db: Database, principal: Principal, *, name: str, hostname: str, capacity: int) -> DaemonRecord:
    _require_daemon_or_owner(principal)
    with transaction(db) as conn:
        row = daemons_sql.register(conn, owner_id=principal.user_id, name=name, hostname=hostname, capacity=capacity)
        return DaemonRecord.model_validate(row)


def _load(conn: Any, principal: Principal, daemon_id: UUID) -> dict[str, Any]:
    daemon = daemons_sql.get(conn, daemon_id, scope(principal))
    if daemon is None:
        raise NotFound(f"daemon {daemon_id} not found", {"daemon_id": str(daemon_id)})
    return daemon


def daemon_heartbeat(
    db: Database, principal: Principal, daemon_id: UUID, *, worktrees: list[dict[str, Any]] | None
) -> tuple[DaemonRecord, list[WorktreeRecord]]:
    """The daemon is alive; with ``worktrees`` it reports what it holds (the report replaces the last).
    Answers the worktrees it should remove (their task or contract is finished)."""
    with transaction(db) as conn:
        _load(conn, principal, daemon_id)
        daemons_sql.touch(conn, daemon_id)
        if worktrees is not None:
            daemons_sql.report_worktrees(conn, daemon_id, worktrees)
        remove = daemons_sql.orphaned_worktrees(conn, daemon_id)
        daemon = DaemonRecord.model_validate(_load(conn, principal, daemon_id))
        return daemon, [WorktreeRecord.model_validate(w) for w in remove]


def confirm_removed(db: Database, principal: Principal, daemon_id: UUID, paths: list[str]) -> int:
    with transaction(db) as conn:
        _load(conn, principal, daemon_id)
        return daemons_sql.confirm_removed(conn, daemon_id, paths)


def worktrees(db: Database, principal: Principal, daemon_id: UUID) -> list[WorktreeRecord]:
    with transaction(db) as conn:
        _load(conn, principal, daemon_id)
        return [WorktreeRecord.model_validate(w) for w in daemons_sql.list_worktrees(conn, daemon_id)]


def reassignable(db: Database, principal: Principal, limit: int) -> list[TaskClaim]:
    """Tasks another daemon may adopt: of dead daemons, and supervisors stopped cleanly or dead with a
    restart asked for."""
    with transaction(db) as conn:
        return [TaskClaim.model_validate(t) for t in daemons_sql.reassignable_tasks(conn, scope(principal), limit)]


def claim(db: Database, principal: Principal, task_id: UUID, daemon_id: UUID) -> TaskClaim:
    """Take over an adoptable task (``reassignable``). Exactly one of several concurrent claimants
    wins; the others get 409 CONFLICT. A supervisor's claimant then restores it."""
    with transaction(db) as conn:
        daemon = _load(conn, principal, daemon_id)
        if daemon["status"] != "live":
            raise Conflict("a dead daemon cannot claim tasks; register again", {"daemon_id": str(daemon_id)})
        row = daemons_sql.claim_task(conn, task_id, daemon_id, scope(principal))
        if row is None:
            raise Conflict("task is not reassignable (finished, or held by a live daemon)", {"task_id": str(task_id)})
        return TaskClaim.model_validate(row)
