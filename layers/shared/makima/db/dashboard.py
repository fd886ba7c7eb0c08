"""SQL for the dashboard (seed 5.4): counts, stale and waiting lists, recent events, resource usage.

Every query is scoped like the rest (``owner_id`` None only for admins) and index-backed: counts read
the status indexes, lists walk the partial index over contracts that can still do work.

Each statement comes in two texts, an admin's (no owner filter) and an owner's (``owner_id = %(owner)s``),
rather than one text with ``(%(owner)s IS NULL OR owner_id = %(owner)s)``: psycopg prepares a statement
after five runs, and PostgreSQL then switched the admin's statements to generic plans, in which the
``IS NULL`` branch cannot be folded away (seq scans of contracts, nested loops over every supervisor:
an admin's dashboard took 600 ms p50 at 100,000 contracts; tests/bench/bench_dashboard.py, docs/performance.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from makima.db.connection import Conn
from makima.domain.dashboard import ResourceUsage, StaleContract, WaitingContract, waiting_kind

_LIVE = "status NOT IN ('completed', 'failed', 'archived')"
# The question a contract waits for: the uuid cast sits inside a CASE, because a join or index condition
# is evaluated in no guaranteed order, and a bare ``substring(...)::uuid`` failed the whole dashboard
# whenever a contract waited for a reason or a confirmation.
_QUESTION_ID = (
    "CASE WHEN w.waiting_for ~ '^question:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$' "
    "THEN substring(w.waiting_for FROM 10)::uuid END"
)


def _owner(column: str, owner_id: UUID | None) -> str:
    """The owner filter as an extra condition: nothing for an admin (``owner_id`` None)."""
    return "" if owner_id is None else f"AND {column} = %(owner)s"


def _owner_tasks(owner_id: UUID | None) -> str:
    """Tasks have no owner: theirs are the tasks of their contracts."""
    return "" if owner_id is None else "AND t.contract_id IN (SELECT id FROM contracts WHERE owner_id = %(owner)s)"


def status_counts(conn: Conn, owner_id: UUID | None) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT status, count(*) AS n FROM contracts WHERE true {_owner('owner_id', owner_id)} GROUP BY status",
        {"owner": owner_id},
    ).fetchall()
    return {r["status"]: int(r["n"]) for r in rows}


def phase_counts(conn: Conn, owner_id: UUID | None) -> dict[str, int]:
    """Phases of the contracts that can still do work (a finished contract's phase is history)."""
    rows = conn.execute(
        f"""
        SELECT phase, count(*) AS n FROM contracts
         WHERE {_LIVE} {_owner("owner_id", owner_id)}
         GROUP BY phase
        """,
        {"owner": owner_id},
    ).fetchall()
    return {r["phase"]: int(r["n"]) for r in rows}


def stale(conn: Conn, owner_id: UUID | None, threshold: timedelta, limit: int) -> list[StaleContract]:
    rows = conn.execute(
        f"""
        SELECT id, name, last_activity_at, extract(epoch FROM now() - last_activity_at)::bigint AS stale_secs
          FROM contracts
         WHERE {_LIVE} AND last_activity_at < now() - %(threshold)s {_owner("owner_id", owner_id)}
         ORDER BY last_activity_at
         LIMIT %(limit)s
        """,
        {"owner": owner_id, "threshold": threshold, "limit": limit},
    ).fetchall()
    return [StaleContract(r["id"], r["name"], r["last_activity_at"], int(r["stale_secs"])) for r in rows]


def waiting(conn: Conn, owner_id: UUID | None, limit: int) -> list[WaitingContract]:
    """Contracts waiting for input, with the question's text when a question is what they wait for.

    The page is cut first, then each of its rows looks its question up by primary key: joining first let
    the planner hash-join every question ever asked (a seq scan of ``questions``)."""
    rows = conn.execute(
        f"""
        SELECT w.id, w.name, w.waiting_for,
               (SELECT q.question FROM questions q WHERE q.id = {_QUESTION_ID}) AS question
          FROM (SELECT id, name, waiting_for, status_changed_at FROM contracts
                 WHERE status = 'waiting_for_input' {_owner("owner_id", owner_id)}
                 ORDER BY status_changed_at
                 LIMIT %(limit)s) w
         ORDER BY w.status_changed_at
        """,
        {"owner": owner_id, "limit": limit},
    ).fetchall()
    return [WaitingContract(r["id"], r["name"], waiting_kind(r["waiting_for"]), r["question"]) for r in rows]


def recent_events(conn: Conn, owner_id: UUID | None, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        f"""
        SELECT id, contract_id, type, payload, actor, created_at FROM contract_events
         WHERE true {_owner("owner_id", owner_id)}
         ORDER BY id DESC
         LIMIT %(limit)s
        """,
        {"owner": owner_id, "limit": limit},
    ).fetchall()


def resource_usage(conn: Conn, owner_id: UUID | None) -> ResourceUsage:
    """One pass over the open tasks (``idx_tasks_status``) counts the running, the pending and the live
    supervisors; a live supervisor's state row is looked up by primary key, only for supervisor tasks.
    A join would let the planner hash every state row ever kept (one per supervisor that ever ran,
    finished ones included) to match the few live ones."""
    daemon_scope = _owner("d.owner_id", owner_id)
    row = conn.execute(
        f"""
        SELECT open.active_supervisors, open.running AS running_tasks, open.pending AS pending_tasks,
               dmn.n AS active_daemons, wt.n AS total_worktrees
          FROM (SELECT count(*) FILTER (WHERE t.is_supervisor AND EXISTS (
                           SELECT 1 FROM supervisor_states s WHERE s.task_id = t.id AND s.dead_at IS NULL
                       )) AS active_supervisors,
                       count(*) FILTER (WHERE t.status = 'running') AS running,
                       count(*) FILTER (WHERE t.status = 'pending') AS pending
                  FROM tasks t WHERE t.status IN ('pending', 'running') {_owner_tasks(owner_id)}) open,
               (SELECT count(*) AS n FROM daemons d WHERE d.status = 'live' {daemon_scope}) dmn,
               (SELECT count(*) AS n FROM worktrees w JOIN daemons d ON d.id = w.daemon_id
                 WHERE w.state <> 'removed' {daemon_scope}) wt
        """,
        {"owner": owner_id},
    ).fetchone()
    assert row is not None
    return ResourceUsage(**{k: int(v) for k, v in row.items()})
