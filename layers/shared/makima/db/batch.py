"""SQL for batch operations over contracts (seed 5.3): finding the candidates, locking one under the
same predicate, and deleting archived contracts; and the same for orphaned worktrees
(``cleanup_worktrees``), which a batch marks for removal.

A batch selects contracts with one predicate (statuses, finished before, idle before, optionally a list
of ids) and walks them in id order (keyset pagination), a bounded chunk per transaction. The predicate is
evaluated twice: once to list a chunk's candidates without locking them, and again as each candidate
is locked (``lock_candidate``). Under READ COMMITTED a ``SELECT … FOR UPDATE`` that waited for another
transaction re-evaluates its WHERE clause on the row as committed, so a contract that stopped matching
in between (completed, resumed, deleted) comes back as no row: the batch never acts on a stale reading.

A candidate is locked ``NOWAIT`` and, while another transaction holds it, tried again for a bounded
time (``locked``): a contract held by a long change becomes one item's error instead of stalling the
whole batch. Not ``lock_timeout``: setting it (``set_config``, even transaction-local) pins the RDS
Proxy session of the Lambda container for its life. Each try is a new statement, so the predicate is
evaluated again on the row as last committed, as a waiting ``FOR UPDATE`` would.

An admin's batch spans every owner; a user's (the cleanup operations only) is scoped by ``owner_id`` in
the same predicate, so another owner's contract is never listed, locked or touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, LiteralString
from uuid import UUID

import psycopg

from makima.db.connection import Conn

# The first pause between two tries of a held lock, doubled up to the longest.
_FIRST_PAUSE = 0.01
_LONGEST_PAUSE = 0.2


@dataclass(frozen=True, slots=True)
class Selection:
    """Which contracts a batch acts on. ``None`` leaves a criterion out; ``ids`` restricts the batch to
    those contracts (an empty list selects nothing)."""

    statuses: list[str]
    changed_before: datetime | None = None  # status_changed_at: when it finished, or was archived
    idle_before: datetime | None = None  # last_activity_at: stale
    ids: list[UUID] | None = None
    owner_id: UUID | None = None  # None: every owner (admins); else only that owner's contracts


# One predicate for listing and for locking, so the re-check under the lock is the very same test.
_MATCHES = """
    c.status = ANY(%(statuses)s::text[])
    AND (%(changed_before)s::timestamptz IS NULL OR c.status_changed_at < %(changed_before)s)
    AND (%(idle_before)s::timestamptz IS NULL OR c.last_activity_at < %(idle_before)s)
    AND (%(ids)s::uuid[] IS NULL OR c.id = ANY(%(ids)s::uuid[]))
    AND (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)
"""


def _params(selection: Selection) -> dict[str, Any]:
    return {
        "statuses": selection.statuses,
        "changed_before": selection.changed_before,
        "idle_before": selection.idle_before,
        "ids": selection.ids,
        "owner": selection.owner_id,
    }


def locked(conn: Conn, query: LiteralString, params: dict[str, Any], wait: timedelta) -> dict[str, Any] | None:
    """The row of ``query`` (a ``SELECT … FOR UPDATE NOWAIT``), locked, or None when nothing matches;
    while another transaction holds the row, tried again (with growing pauses) for ``wait``, then
    ``LockNotAvailable``. Each try runs in a savepoint, so a refused one leaves the transaction usable."""
    give_up = time.monotonic() + wait.total_seconds()
    pause = _FIRST_PAUSE
    while True:
        try:
            with conn.transaction():
                return conn.execute(query, params).fetchone()
        except psycopg.errors.LockNotAvailable:
            if time.monotonic() + pause > give_up:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)


def candidates(conn: Conn, selection: Selection, *, after: UUID | None, limit: int) -> list[dict[str, Any]]:
    """The next ``limit`` matching contracts after id ``after``, in id order, unlocked: ``id``, ``name``,
    ``owner_id``, ``status``, ``status_changed_at``, ``last_activity_at`` (what the batch's answer shows of
    each) and whether the contract has ever had a supervisor (``has_supervisor``, what a restart needs)."""
    return conn.execute(
        f"""
        SELECT c.id, c.name, c.owner_id, c.status, c.status_changed_at, c.last_activity_at,
               EXISTS (SELECT 1 FROM supervisor_states s WHERE s.contract_id = c.id) AS has_supervisor
          FROM contracts c
         WHERE {_MATCHES}
           AND (%(after)s::uuid IS NULL OR c.id > %(after)s)
         ORDER BY c.id
         LIMIT %(limit)s
        """,
        {**_params(selection), "after": after, "limit": limit},
    ).fetchall()


def lock_candidate(conn: Conn, selection: Selection, contract_id: UUID, *, wait: timedelta) -> bool:
    """Lock the contract ``FOR UPDATE`` if it still matches ``selection``; False when it no longer does
    (or is gone). The row lock is held until the caller's transaction (or savepoint) ends. Held by
    another transaction for longer than ``wait``: ``LockNotAvailable``."""
    row = locked(
        conn,
        f"SELECT c.id FROM contracts c WHERE c.id = %(id)s AND {_MATCHES} FOR UPDATE NOWAIT",
        {**_params(selection), "id": contract_id},
        wait,
    )
    return row is not None


def delete_contract(conn: Conn, contract_id: UUID) -> None:
    """Delete a contract and, by ``ON DELETE CASCADE``, its deliverables, tasks, questions, chat and
    supervisor state. Its events stay: ``contract_events.contract_id`` has no foreign key, so the record
    of a deleted contract outlives it; heartbeat history has none either and ages out by partition."""
    conn.execute("DELETE FROM contracts WHERE id = %s", (contract_id,))


# --- orphaned worktrees ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorktreeSelection:
    """Which worktrees ``cleanup_worktrees`` acts on: the orphaned ones still ``active`` whose task or
    contract finished before ``finished_before`` (``None``: whenever), optionally only those named by
    ``keys`` (``(daemon_id, path)``; an empty list selects nothing) or held for ``contract_ids``."""

    finished_before: datetime | None = None
    keys: list[tuple[UUID, str]] | None = None
    contract_ids: list[UUID] | None = None


# Orphaned as the daemon heartbeat sees it (``db/daemons.orphaned_worktrees``): the task finished, or the
# contract is finished, or neither is known any more (the contract was deleted, taking its tasks with it;
# ``ON DELETE SET NULL`` clears both). Such a worktree finished "long ago": it matches any threshold.
# Only ``active`` ones: a worktree already ``removal_requested`` is already in its daemon's answer.
_ORPHANED = """
    w.state = 'active'
    AND (%(key_daemons)s::uuid[] IS NULL
         OR (w.daemon_id, w.path) IN (SELECT * FROM unnest(%(key_daemons)s::uuid[], %(key_paths)s::text[])))
    AND (%(contract_ids)s::uuid[] IS NULL OR w.contract_id = ANY(%(contract_ids)s::uuid[]))
    AND (EXISTS (SELECT 1 FROM tasks t WHERE t.id = w.task_id AND t.status IN ('completed', 'failed')
                    AND (%(before)s::timestamptz IS NULL OR coalesce(t.finished_at, t.updated_at) < %(before)s))
         OR EXISTS (SELECT 1 FROM contracts c WHERE c.id = w.contract_id
                       AND c.status IN ('completed', 'failed', 'archived')
                       AND (%(before)s::timestamptz IS NULL OR c.status_changed_at < %(before)s))
         OR (w.task_id IS NULL AND w.contract_id IS NULL))
"""


def _worktree_params(selection: WorktreeSelection) -> dict[str, Any]:
    keys = selection.keys
    return {
        "before": selection.finished_before,
        "key_daemons": None if keys is None else [k[0] for k in keys],
        "key_paths": None if keys is None else [k[1] for k in keys],
        "contract_ids": selection.contract_ids,
    }


def worktree_candidates(
    conn: Conn, selection: WorktreeSelection, *, after: tuple[UUID, str] | None, limit: int
) -> list[dict[str, Any]]:
    """The next ``limit`` orphaned worktrees after ``after`` (``(daemon_id, path)``), in that order,
    unlocked, with what the batch's answer shows of each: the daemon's name and status, the branch, the
    task and contract (``contract_name``, ``owner_id``, ``contract_status``; null once deleted),
    ``task_status`` and ``finished_at`` (when the task or contract finished; null if unknown)."""
    return conn.execute(
        f"""
        SELECT w.daemon_id, d.name AS daemon_name, d.status AS daemon_status, w.path, w.branch,
               w.task_id, t.status AS task_status, w.contract_id, c.name AS contract_name, c.owner_id,
               c.status AS contract_status, w.reported_at,
               least(CASE WHEN t.status IN ('completed', 'failed') THEN coalesce(t.finished_at, t.updated_at) END,
                     CASE WHEN c.status IN ('completed', 'failed', 'archived') THEN c.status_changed_at END)
                 AS finished_at
          FROM worktrees w
          JOIN daemons d ON d.id = w.daemon_id
          LEFT JOIN tasks t ON t.id = w.task_id
          LEFT JOIN contracts c ON c.id = w.contract_id
         WHERE {_ORPHANED}
           AND (%(after_daemon)s::uuid IS NULL
                OR (w.daemon_id, w.path) > (%(after_daemon)s::uuid, %(after_path)s::text))
         ORDER BY w.daemon_id, w.path
         LIMIT %(limit)s
        """,
        {
            **_worktree_params(selection),
            "after_daemon": None if after is None else after[0],
            "after_path": None if after is None else after[1],
            "limit": limit,
        },
    ).fetchall()


def lock_worktree(
    conn: Conn, selection: WorktreeSelection, daemon_id: UUID, path: str, *, wait: timedelta
) -> dict[str, Any] | None:
    """Lock the worktree ``FOR UPDATE`` if it is still orphaned and selected; its ``contract_id`` and the
    contract's ``owner_id`` as they are now (null when gone), or None when it no longer matches (the
    daemon removed it, or reported it again for work that is not finished). Held by another
    transaction for longer than ``wait``: ``LockNotAvailable``."""
    return locked(
        conn,
        f"""
        SELECT w.contract_id, (SELECT c.owner_id FROM contracts c WHERE c.id = w.contract_id) AS owner_id
          FROM worktrees w
         WHERE w.daemon_id = %(daemon)s AND w.path = %(path)s AND {_ORPHANED}
           FOR UPDATE NOWAIT
        """,
        {**_worktree_params(selection), "daemon": daemon_id, "path": path},
        wait,
    )


def request_worktree_removal(conn: Conn, daemon_id: UUID, path: str) -> None:
    """Mark the worktree ``removal_requested``: its daemon's next heartbeat answer lists it in
    ``remove_worktrees``, and the daemon confirms the removal (``…/worktrees/removed``)."""
    conn.execute(
        "UPDATE worktrees SET state = 'removal_requested', requested_at = coalesce(requested_at, now()) "
        "WHERE daemon_id = %s AND path = %s",
        (daemon_id, path),
    )
