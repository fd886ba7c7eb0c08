"""SQL for daemons (supervisor hosts), task claims and the worktrees daemons hold."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from makima.db.connection import Conn

_COLUMNS = "id, owner_id, name, hostname, capacity, status, registered_at, last_heartbeat_at"


def register(conn: Conn, *, owner_id: UUID, name: str, hostname: str, capacity: int) -> dict[str, Any]:
    """Register a daemon, or bring a known one (same owner and name) back to life."""
    row = conn.execute(
        f"""
        INSERT INTO daemons (owner_id, name, hostname, capacity) VALUES (%s, %s, %s, %s)
        ON CONFLICT (owner_id, name) DO UPDATE
           SET hostname = EXCLUDED.hostname, capacity = EXCLUDED.capacity, status = 'live',
               last_heartbeat_at = now()
        RETURNING {_COLUMNS}
        """,
        (owner_id, name, hostname, capacity),
    ).fetchone()
    assert row is not None
    return row


def get(conn: Conn, daemon_id: UUID, owner_id: UUID | None) -> dict[str, Any] | None:
    return conn.execute(
        f"SELECT {_COLUMNS} FROM daemons WHERE id = %(id)s AND (%(owner)s::uuid IS NULL OR owner_id = %(owner)s)",
        {"id": daemon_id, "owner": owner_id},
    ).fetchone()


def touch(conn: Conn, daemon_id: UUID) -> None:
    conn.execute("UPDATE daemons SET last_heartbeat_at = now(), status = 'live' WHERE id = %s", (daemon_id,))


def mark_dead(
    conn: Conn, timeout: timedelta, *, now: datetime | None = None, grace_from: datetime | None = None
) -> list[dict[str, Any]]:
    """Live daemons silent since ``now - timeout`` (``grace_from`` counting as a heartbeat; ``now``
    None: the database's clock)."""
    return conn.execute(
        f"""
        UPDATE daemons SET status = 'dead'
         WHERE status = 'live'
           AND GREATEST(last_heartbeat_at, %(grace)s::timestamptz)
               < COALESCE(%(now)s::timestamptz, now()) - %(timeout)s::interval
        RETURNING {_COLUMNS}
        """,
        {"timeout": timeout, "now": now, "grace": grace_from},
    ).fetchall()


# A task another daemon may take over: its daemon is dead (or it has none and is a supervisor), or
# it is a supervisor that stopped on purpose (a shutdown save) or that is dead with a restart asked
# for, and no daemon has claimed it since (the task still names the daemon the supervisor ran on:
# a claim moves the task, the restore then moves the supervisor). ``t``: tasks, ``%(daemon)s``: the
# claimant (None when listing).
_ADOPTABLE = """
    (t.daemon_id IS NULL AND t.is_supervisor
     OR EXISTS (SELECT 1 FROM daemons d WHERE d.id = t.daemon_id AND d.status = 'dead')
     OR t.is_supervisor AND EXISTS (
            SELECT 1 FROM supervisor_states s
             WHERE s.task_id = t.id
               AND (s.stopped_at IS NOT NULL OR s.dead_at IS NOT NULL AND s.restart_requested_at IS NOT NULL)
               AND t.daemon_id IS NOT DISTINCT FROM s.daemon_id))
"""


def reassignable_tasks(
    conn: Conn, owner_id: UUID | None, limit: int, *, after: tuple[datetime, UUID] | None = None
) -> list[dict[str, Any]]:
    """Live tasks another daemon may claim (``_ADOPTABLE``), oldest first, keyset-paginated on
    (created_at, id)."""
    return conn.execute(
        f"""
        SELECT t.id, t.contract_id, t.name, t.status, t.is_supervisor, t.daemon_id, t.created_at
          FROM tasks t
          JOIN contracts c ON c.id = t.contract_id
         WHERE t.status IN ('pending', 'running')
           AND {_ADOPTABLE}
           AND c.status NOT IN ('completed', 'failed', 'archived')
           AND (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)
           AND (%(ts)s::timestamptz IS NULL OR (t.created_at, t.id) > (%(ts)s, %(id)s::uuid))
         ORDER BY t.created_at, t.id
         LIMIT %(limit)s
        """,
        {"owner": owner_id, "limit": limit, "ts": after[0] if after else None, "id": after[1] if after else None},
    ).fetchall()


def claim_task(conn: Conn, task_id: UUID, daemon_id: UUID, owner_id: UUID | None) -> dict[str, Any] | None:
    """Move a task to ``daemon_id`` if it is still reassignable (or already that daemon's). The row
    lock and the re-checked condition make this safe under concurrency: of two claimants, the second
    finds it taken."""
    return conn.execute(
        f"""
        UPDATE tasks t SET daemon_id = %(daemon)s, updated_at = now()
          FROM contracts c
         WHERE t.id = %(task)s AND c.id = t.contract_id
           AND (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)
           AND t.status IN ('pending', 'running')
           AND c.status NOT IN ('completed', 'failed', 'archived')
           AND (t.daemon_id = %(daemon)s OR {_ADOPTABLE})
        RETURNING t.id, t.contract_id, t.name, t.status, t.is_supervisor, t.daemon_id
        """,
        {"task": task_id, "daemon": daemon_id, "owner": owner_id},
    ).fetchone()


def foreign_task_ids(conn: Conn, owner_id: UUID, task_ids: list[UUID]) -> list[UUID]:
    """Of ``task_ids``, in their order, those that are not tasks of ``owner_id``'s contracts: another
    owner's, or no task at all (the caller cannot tell the two apart, and must not)."""
    rows = conn.execute(
        """
        SELECT x.id FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS x(id, ord)
         WHERE NOT EXISTS (SELECT 1 FROM tasks t JOIN contracts c ON c.id = t.contract_id
                            WHERE t.id = x.id AND c.owner_id = %(owner)s)
         ORDER BY x.ord
        """,
        {"ids": task_ids, "owner": owner_id},
    ).fetchall()
    return [r["id"] for r in rows]


def report_worktrees(conn: Conn, daemon_id: UUID, owner_id: UUID, worktrees: list[dict[str, Any]]) -> None:
    """Replace what the daemon holds with its report: new paths are added, missing ones are gone. A
    task id is linked (with its contract) only when it is a task of ``owner_id``'s, the daemon's owner:
    the service refuses a report naming any other first (``foreign_task_ids``); the scoped join is the
    second line, should a caller forget."""
    paths = [w["path"] for w in worktrees]
    conn.execute(
        "UPDATE worktrees SET state = 'removed', removed_at = now() "
        "WHERE daemon_id = %s AND state <> 'removed' AND NOT (path = ANY(%s))",
        (daemon_id, paths),
    )
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO worktrees (daemon_id, path, branch, task_id, contract_id)
            SELECT %(daemon)s, %(path)s, %(branch)s, t.id, t.contract_id
              FROM (SELECT %(task)s::uuid AS id) x
              LEFT JOIN (tasks t JOIN contracts c ON c.id = t.contract_id AND c.owner_id = %(owner)s)
                ON t.id = x.id
            ON CONFLICT (daemon_id, path) DO UPDATE
               SET branch = EXCLUDED.branch, task_id = EXCLUDED.task_id, contract_id = EXCLUDED.contract_id,
                   reported_at = now(),
                   state = CASE WHEN worktrees.state = 'removed' THEN 'active' ELSE worktrees.state END,
                   removed_at = NULL
            """,
            [
                {
                    "daemon": daemon_id,
                    "path": w["path"],
                    "branch": w.get("branch", ""),
                    "task": w.get("task_id"),
                    "owner": owner_id,
                }
                for w in worktrees
            ],
        )


def orphaned_worktrees(conn: Conn, daemon_id: UUID) -> list[dict[str, Any]]:
    """Worktrees whose task finished or whose contract is finished: mark them for removal and return
    them, so the daemon's next heartbeat answer asks it to remove them."""
    return conn.execute(
        """
        UPDATE worktrees w SET state = 'removal_requested', requested_at = COALESCE(requested_at, now())
         WHERE w.daemon_id = %s AND w.state IN ('active', 'removal_requested')
           AND (EXISTS (SELECT 1 FROM tasks t WHERE t.id = w.task_id AND t.status IN ('completed', 'failed'))
                OR EXISTS (SELECT 1 FROM contracts c WHERE c.id = w.contract_id
                                AND c.status IN ('completed', 'failed', 'archived'))
                OR (w.task_id IS NULL AND w.contract_id IS NULL))
        RETURNING w.path, w.branch, w.task_id, w.contract_id
        """,
        (daemon_id,),
    ).fetchall()


def confirm_removed(conn: Conn, daemon_id: UUID, paths: list[str]) -> int:
    cur = conn.execute(
        "UPDATE worktrees SET state = 'removed', removed_at = now() "
        "WHERE daemon_id = %s AND path = ANY(%s) AND state <> 'removed'",
        (daemon_id, paths),
    )
    return cur.rowcount


def worktrees_of_contract(conn: Conn, contract_id: UUID) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT daemon_id, path, branch, task_id, state FROM worktrees WHERE contract_id = %s AND state <> 'removed'",
        (contract_id,),
    ).fetchall()


def list_worktrees(conn: Conn, daemon_id: UUID, *, after: str | None, limit: int) -> list[dict[str, Any]]:
    """By path, keyset-paginated on it (the primary key is (daemon_id, path))."""
    return conn.execute(
        """
        SELECT path, branch, task_id, contract_id, state, reported_at, requested_at, removed_at
          FROM worktrees
         WHERE daemon_id = %(daemon)s AND (%(after)s::text IS NULL OR path > %(after)s)
         ORDER BY path
         LIMIT %(limit)s
        """,
        {"daemon": daemon_id, "after": after, "limit": limit},
    ).fetchall()


def purge_removed(conn: Conn, *, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` worktrees confirmed removed before ``before`` (the retention job's batch:
    a short transaction each, however many have piled up)."""
    cur = conn.execute(
        """
        DELETE FROM worktrees w
         USING (SELECT daemon_id, path FROM worktrees
                 WHERE state = 'removed' AND removed_at < %(before)s
                 LIMIT %(limit)s
                   FOR UPDATE SKIP LOCKED) old
         WHERE w.daemon_id = old.daemon_id AND w.path = old.path
        """,
        {"before": before, "limit": limit},
    )
    return cur.rowcount


def request_removal_for_contract(conn: Conn, contract_id: UUID) -> list[dict[str, Any]]:
    """The contract is finished: every worktree held for it is to be removed by its daemon."""
    return conn.execute(
        """
        UPDATE worktrees SET state = 'removal_requested', requested_at = COALESCE(requested_at, now())
         WHERE contract_id = %s AND state = 'active'
        RETURNING daemon_id, path, branch, task_id
        """,
        (contract_id,),
    ).fetchall()
