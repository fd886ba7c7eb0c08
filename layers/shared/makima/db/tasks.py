"""SQL for tasks."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from makima.db.connection import Conn

_COLUMNS = """id, contract_id, name, status, is_supervisor, phase, daemon, daemon_id, error, created_by,
    created_at, updated_at, started_at, finished_at"""


def insert(
    conn: Conn,
    *,
    contract_id: UUID,
    name: str,
    is_supervisor: bool,
    phase: str,
    daemon: str | None,
    created_by: str,
    daemon_id: UUID | None = None,
) -> dict[str, Any]:
    row = conn.execute(
        f"""
        INSERT INTO tasks (contract_id, name, is_supervisor, phase, daemon, daemon_id, created_by)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        RETURNING {_COLUMNS}
        """,
        (contract_id, name, is_supervisor, phase, daemon, daemon_id, created_by),
    ).fetchone()
    assert row is not None
    return row


def get(conn: Conn, contract_id: UUID, task_id: UUID, *, for_update: bool = False) -> dict[str, Any] | None:
    lock = "FOR UPDATE" if for_update else ""
    return conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE id = %s AND contract_id = %s {lock}", (task_id, contract_id)
    ).fetchone()


def list_page(
    conn: Conn, contract_id: UUID, *, after: tuple[datetime, UUID] | None, limit: int
) -> list[dict[str, Any]]:
    """Oldest first, keyset-paginated on (created_at, id) (``idx_tasks_contract``)."""
    return conn.execute(
        f"""
        SELECT {_COLUMNS} FROM tasks
         WHERE contract_id = %(c)s
           AND (%(ts)s::timestamptz IS NULL OR (created_at, id) > (%(ts)s, %(id)s::uuid))
         ORDER BY created_at, id
         LIMIT %(limit)s
        """,
        {"c": contract_id, "ts": after[0] if after else None, "id": after[1] if after else None, "limit": limit},
    ).fetchall()


def list_for_contract(conn: Conn, contract_id: UUID) -> list[dict[str, Any]]:
    return conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE contract_id = %s ORDER BY created_at, id", (contract_id,)
    ).fetchall()


def set_status(conn: Conn, task_id: UUID, *, status: str, error: str | None) -> dict[str, Any]:
    row = conn.execute(
        f"""
        UPDATE tasks
           SET status = %(status)s,
               error = COALESCE(%(error)s, error),
               updated_at = now(),
               started_at = CASE WHEN %(status)s = 'running' THEN now() ELSE started_at END,
               finished_at = CASE WHEN %(status)s IN ('completed', 'failed') THEN now() ELSE finished_at END
         WHERE id = %(id)s
        RETURNING {_COLUMNS}
        """,
        {"status": status, "error": error, "id": task_id},
    ).fetchone()
    assert row is not None
    return row


def close_open(conn: Conn, contract_id: UUID, *, reason: str) -> list[dict[str, Any]]:
    """Finish every task still open when the contract completes: supervisors as completed (their work
    is done), other tasks as failed with ``reason`` (nobody will finish them)."""
    return conn.execute(
        f"""
        UPDATE tasks
           SET status = CASE WHEN is_supervisor THEN 'completed' ELSE 'failed' END,
               error = CASE WHEN is_supervisor THEN error ELSE %s END,
               finished_at = now(), updated_at = now()
         WHERE contract_id = %s AND status IN ('pending', 'running')
        RETURNING {_COLUMNS}
        """,
        (reason, contract_id),
    ).fetchall()


def assign_daemon(conn: Conn, task_id: UUID, daemon_id: UUID, daemon_name: str) -> None:
    conn.execute(
        "UPDATE tasks SET daemon_id = %s, daemon = %s, updated_at = now() WHERE id = %s",
        (daemon_id, daemon_name, task_id),
    )
