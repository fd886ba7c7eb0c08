"""SQL for tasks."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from makima.db.connection import Conn

_COLUMNS = """id, contract_id, name, status, is_supervisor, daemon, error, created_by,
    created_at, updated_at, started_at, finished_at"""


def insert(
    conn: Conn, *, contract_id: UUID, name: str, is_supervisor: bool, daemon: str | None, created_by: str
) -> dict[str, Any]:
    row = conn.execute(
        f"""
        INSERT INTO tasks (contract_id, name, is_supervisor, daemon, created_by)
        VALUES (%s, %s, %s, %s, %s)
        RETURNING {_COLUMNS}
        """,
        (contract_id, name, is_supervisor, daemon, created_by),
    ).fetchone()
    assert row is not None
    return row


def get(conn: Conn, contract_id: UUID, task_id: UUID, *, for_update: bool = False) -> dict[str, Any] | None:
    lock = "FOR UPDATE" if for_update else ""
    return conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE id = %s AND contract_id = %s {lock}", (task_id, contract_id)
    ).fetchone()


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
