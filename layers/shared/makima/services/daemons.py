"""Daemons: registration, liveness, task reassignment and the worktrees they hold (seed 3.4, 3.2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from makima.db import daemons as daemons_sql
from makima.db.connection import Conn, Database, transaction
from makima.domain import paging
from makima.domain.paging import Page
from makima.domain.principals import Principal, Role
from makima.domain.supervisors import DaemonRecord, TaskClaim, WorktreeRecord
from makima.errors import Conflict, Forbidden, NotFound, UnknownReference
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
    Answers the worktrees it should remove (their task or contract is finished).

    A worktree's task id must be a task of the daemon owner's contracts (whoever sends the report, an
    admin too): otherwise the whole heartbeat is ``NotFound`` for that task and changes nothing — no
    worktree, no last-seen time, the previous report kept. Linking another tenant's task would tell
    the daemon that tenant's contract id and task state (``remove_worktrees``, ``…/worktrees``) and put
    its path into that contract's events (``cleanup_completed``)."""
    with transaction(db) as conn:
        owner_id = _load(conn, principal, daemon_id)["owner_id"]
        if worktrees is not None:
            _require_own_tasks(conn, owner_id, worktrees)
        daemons_sql.touch(conn, daemon_id)
        if worktrees is not None:
            daemons_sql.report_worktrees(conn, daemon_id, owner_id, worktrees)
        remove = daemons_sql.orphaned_worktrees(conn, daemon_id)
        daemon = DaemonRecord.model_validate(_load(conn, principal, daemon_id))
        return daemon, [WorktreeRecord.model_validate(w) for w in remove]


def _require_own_tasks(conn: Conn, owner_id: UUID, worktrees: list[dict[str, Any]]) -> None:
    """``NotFound`` naming the first worktree whose task is not ``owner_id``'s. The answer is the one a
    missing task gets, so it does not tell another tenant's task ids from unknown ones."""
    named = [w["task_id"] for w in worktrees if w.get("task_id") is not None]
    foreign = daemons_sql.foreign_task_ids(conn, owner_id, named) if named else []
    if foreign:
        first = next(w for w in worktrees if w.get("task_id") == foreign[0])
        raise UnknownReference(
            f"task {foreign[0]} not found (worktree {first['path']!r}); report it without the task_id",
            {"task_id": str(foreign[0]), "path": first["path"]},
        )


def confirm_removed(db: Database, principal: Principal, daemon_id: UUID, paths: list[str]) -> int:
    with transaction(db) as conn:
        _load(conn, principal, daemon_id)
        return daemons_sql.confirm_removed(conn, daemon_id, paths)


def worktrees(
    db: Database, principal: Principal, daemon_id: UUID, *, cursor: str | None = None, limit: int = 100
) -> Page[WorktreeRecord]:
    """A page of the daemon's worktrees, by path (``removed`` ones too, until the retention job
    purges them)."""
    after = paging.decode_cursor(cursor, (str,))[0] if cursor else None
    with transaction(db) as conn:
        _load(conn, principal, daemon_id)
        rows = daemons_sql.list_worktrees(conn, daemon_id, after=after, limit=limit + 1)
    return paging.mapped(paging.page_of(rows, limit, lambda r: (r["path"],)), WorktreeRecord.model_validate)


# Worktrees deleted per transaction by the retention job: short locks, however many piled up.
PURGE_BATCH = 1000


def purge_removed_worktrees(
    db: Database, retention: timedelta, *, now: datetime | None = None, batch: int = PURGE_BATCH
) -> int:
    """Delete the worktrees confirmed removed (or dropped from a report) more than ``retention`` before
    ``now`` (the scheduled ``worktree_retention`` job), a batch per transaction; how many went. Active
    worktrees and those waiting for removal are never touched."""
    before = (now or datetime.now(UTC)) - retention
    purged = 0
    while True:
        with transaction(db) as conn:
            n = daemons_sql.purge_removed(conn, before=before, limit=batch)
        purged += n
        if n < batch:
            return purged


def reassignable(db: Database, principal: Principal, limit: int, *, cursor: str | None = None) -> Page[TaskClaim]:
    """Tasks another daemon may adopt: of dead daemons, and supervisors stopped cleanly or dead with a
    restart asked for. A page, oldest first."""
    after = paging.decode_cursor(cursor, (datetime, UUID)) if cursor else None
    with transaction(db) as conn:
        rows = daemons_sql.reassignable_tasks(
            conn, scope(principal), limit + 1, after=(after[0], after[1]) if after else None
        )
    return paging.mapped(paging.page_of(rows, limit, lambda r: (r["created_at"], r["id"])), TaskClaim.model_validate)


def claim(db: Database, principal: Principal, task_id: UUID, daemon_id: UUID) -> TaskClaim:
    """Take over an adoptable task (``reassignable``). Exactly one of several concurrent claimants
    wins; the others get 409 CONFLICT. A supervisor's claimant then restores it."""
    with transaction(db) as conn:
        try:
            daemon = _load(conn, principal, daemon_id)
        except NotFound as exc:  # the daemon is named by the body: the task's URL is not what is missing
            raise UnknownReference(exc.message, exc.details) from None
        if daemon["status"] != "live":
            raise Conflict("a dead daemon cannot claim tasks; register again", {"daemon_id": str(daemon_id)})
        # The daemon's owner, not the caller's scope: an admin cannot hand a task to another owner's daemon.
        row = daemons_sql.claim_task(conn, task_id, daemon_id, daemon["owner_id"])
        if row is None:
            raise Conflict("task is not reassignable (finished, or held by a live daemon)", {"task_id": str(task_id)})
        return TaskClaim.model_validate(row)
