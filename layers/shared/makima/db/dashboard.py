"""SQL for the dashboard (seed 5.4): counts, stale and waiting lists, recent events, resource usage.

Every query is scoped like the rest (``owner_id`` None only for admins) and index-backed: counts read
the status indexes, lists walk the partial index over contracts that can still do work.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from makima.db.connection import Conn

_SCOPE = "(%(owner)s::uuid IS NULL OR owner_id = %(owner)s)"


def status_counts(conn: Conn, owner_id: UUID | None) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT status, count(*) AS n FROM contracts WHERE {_SCOPE} GROUP BY status", {"owner": owner_id}
    ).fetchall()
    return {r["status"]: int(r["n"]) for r in rows}


def phase_counts(conn: Conn, owner_id: UUID | None) -> dict[str, int]:
    """Phases of the contracts that can still do work (a finished contract's phase is history)."""
    rows = conn.execute(
        f"""
        SELECT phase, count(*) AS n FROM contracts
         WHERE {_SCOPE} AND status NOT IN ('completed', 'failed', 'archived')
         GROUP BY phase
        """,
        {"owner": owner_id},
    ).fetchall()
    return {r["phase"]: int(r["n"]) for r in rows}


def stale(conn: Conn, owner_id: UUID | None, threshold: timedelta, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        f"""
        SELECT id, name, last_activity_at, extract(epoch FROM now() - last_activity_at)::bigint AS stale_secs
          FROM contracts
         WHERE {_SCOPE} AND status NOT IN ('completed', 'failed', 'archived')
           AND last_activity_at < now() - %(threshold)s
         ORDER BY last_activity_at
         LIMIT %(limit)s
        """,
        {"owner": owner_id, "threshold": threshold, "limit": limit},
    ).fetchall()


def waiting(conn: Conn, owner_id: UUID | None, limit: int) -> list[dict[str, Any]]:
    """Contracts waiting for input, with the question's text when a question is what they wait for."""
    return conn.execute(
        """
        SELECT c.id, c.name, c.waiting_for, q.question
          FROM contracts c
          LEFT JOIN questions q
                 ON c.waiting_for ~ '^question:[0-9a-f-]{36}$'
                AND q.id = substring(c.waiting_for FROM 10)::uuid
         WHERE (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s) AND c.status = 'waiting_for_input'
         ORDER BY c.status_changed_at
         LIMIT %(limit)s
        """,
        {"owner": owner_id, "limit": limit},
    ).fetchall()


def recent_events(conn: Conn, owner_id: UUID | None, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        f"""
        SELECT id, contract_id, type, payload, actor, created_at FROM contract_events
         WHERE {_SCOPE}
         ORDER BY id DESC
         LIMIT %(limit)s
        """,
        {"owner": owner_id, "limit": limit},
    ).fetchall()


def resource_usage(conn: Conn, owner_id: UUID | None) -> dict[str, int]:
    row = conn.execute(
        """
        SELECT
          (SELECT count(*) FROM supervisor_states s JOIN tasks t ON t.id = s.task_id
             JOIN contracts c ON c.id = s.contract_id
            WHERE s.dead_at IS NULL AND t.status IN ('pending', 'running')
              AND (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)) AS active_supervisors,
          (SELECT count(*) FROM tasks t JOIN contracts c ON c.id = t.contract_id
            WHERE t.status = 'running' AND (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)) AS running_tasks,
          (SELECT count(*) FROM tasks t JOIN contracts c ON c.id = t.contract_id
            WHERE t.status = 'pending' AND (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)) AS pending_tasks,
          (SELECT count(*) FROM daemons d
            WHERE d.status = 'live' AND (%(owner)s::uuid IS NULL OR d.owner_id = %(owner)s)) AS active_daemons,
          (SELECT count(*) FROM worktrees w JOIN daemons d ON d.id = w.daemon_id
            WHERE w.state <> 'removed' AND (%(owner)s::uuid IS NULL OR d.owner_id = %(owner)s)) AS total_worktrees
        """,
        {"owner": owner_id},
    ).fetchone()
    assert row is not None
    return {k: int(v) for k, v in row.items()}
