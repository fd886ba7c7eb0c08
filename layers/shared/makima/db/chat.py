"""SQL for a contract's chat messages."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from makima.db.connection import Conn

_COLUMNS = "id, contract_id, role, author, content, created_at"


def insert(conn: Conn, *, contract_id: UUID, role: str, author: str, content: str) -> dict[str, Any]:
    row = conn.execute(
        f"""
        INSERT INTO chat_messages (contract_id, role, author, content) VALUES (%s, %s, %s, %s)
        RETURNING {_COLUMNS}
        """,
        (contract_id, role, author, content),
    ).fetchone()
    assert row is not None
    return row


def list_for_contract(conn: Conn, contract_id: UUID, *, after_id: int, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        f"SELECT {_COLUMNS} FROM chat_messages WHERE contract_id = %s AND id > %s ORDER BY id LIMIT %s",
        (contract_id, after_id, limit),
    ).fetchall()
