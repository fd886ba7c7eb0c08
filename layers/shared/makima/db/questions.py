"""SQL for questions a supervisor asks the contract's owner."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from makima.db.connection import Conn

_COLUMNS = """id, contract_id, task_id, question, question_type, options, status, answer, asked_by,
    answered_by, created_at, answered_at, delivered_at"""


def insert(
    conn: Conn,
    *,
    contract_id: UUID,
    task_id: UUID | None,
    question: str,
    question_type: str,
    options: list[Any],
    asked_by: str,
) -> dict[str, Any]:
    row = conn.execute(
        f"""
        INSERT INTO questions (contract_id, task_id, question, question_type, options, asked_by)
        VALUES (%s, %s, %s, %s, %s, %s)
        RETURNING {_COLUMNS}
        """,
        (contract_id, task_id, question, question_type, Jsonb(options), asked_by),
    ).fetchone()
    assert row is not None
    return row


def get(conn: Conn, contract_id: UUID, question_id: UUID, *, for_update: bool = False) -> dict[str, Any] | None:
    lock = "FOR UPDATE" if for_update else ""
    return conn.execute(
        f"SELECT {_COLUMNS} FROM questions WHERE id = %s AND contract_id = %s {lock}",
        (question_id, contract_id),
    ).fetchone()


def list_page(
    conn: Conn,
    contract_id: UUID,
    *,
    status: str | None,
    undelivered: bool,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Oldest first, keyset-paginated on (created_at, id) (``idx_questions_contract``)."""
    return conn.execute(
        f"""
        SELECT {_COLUMNS} FROM questions
         WHERE contract_id = %(c)s
           AND (%(status)s::text IS NULL OR status = %(status)s)
           AND (NOT %(undelivered)s OR delivered_at IS NULL)
           AND (%(ts)s::timestamptz IS NULL OR (created_at, id) > (%(ts)s, %(id)s::uuid))
         ORDER BY created_at, id
         LIMIT %(limit)s
        """,
        {
            "c": contract_id,
            "status": status,
            "undelivered": undelivered,
            "ts": after[0] if after else None,
            "id": after[1] if after else None,
            "limit": limit,
        },
    ).fetchall()


def list_for_contract(conn: Conn, contract_id: UUID, *, status: str | None, undelivered: bool) -> list[dict[str, Any]]:
    return conn.execute(
        f"""
        SELECT {_COLUMNS} FROM questions
         WHERE contract_id = %(c)s
           AND (%(status)s::text IS NULL OR status = %(status)s)
           AND (NOT %(undelivered)s OR delivered_at IS NULL)
         ORDER BY created_at, id
        """,
        {"c": contract_id, "status": status, "undelivered": undelivered},
    ).fetchall()


def oldest_pending(conn: Conn, contract_id: UUID) -> dict[str, Any] | None:
    return conn.execute(
        f"""
        SELECT {_COLUMNS} FROM questions WHERE contract_id = %s AND status = 'pending'
         ORDER BY created_at, id LIMIT 1
        """,
        (contract_id,),
    ).fetchone()


def answer(conn: Conn, question_id: UUID, *, answer: str, answered_by: str) -> dict[str, Any]:
    row = conn.execute(
        f"""
        UPDATE questions SET status = 'answered', answer = %s, answered_by = %s, answered_at = now()
         WHERE id = %s
        RETURNING {_COLUMNS}
        """,
        (answer, answered_by, question_id),
    ).fetchone()
    assert row is not None
    return row


def mark_delivered(conn: Conn, question_id: UUID) -> dict[str, Any]:
    row = conn.execute(
        f"""
        UPDATE questions SET delivered_at = COALESCE(delivered_at, now()) WHERE id = %s
        RETURNING {_COLUMNS}
        """,
        (question_id,),
    ).fetchone()
    assert row is not None
    return row
