"""SQL for the event log / outbox (``contract_events``)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from makima.db.connection import Conn

_COLUMNS = "id, contract_id, type, payload, actor, created_at"


def append(
    conn: Conn,
    *,
    contract_id: UUID | None,
    owner_id: UUID | None,
    type: str,
    payload: dict[str, Any],
    actor: str,
) -> dict[str, Any]:
    """Write one event in the caller's transaction, so it commits (or not) with the change it records."""
    row = conn.execute(
        f"""
        INSERT INTO contract_events (contract_id, owner_id, type, payload, actor)
        VALUES (%s, %s, %s, %s, %s)
        RETURNING {_COLUMNS}
        """,
        (contract_id, owner_id, type, Jsonb(payload), actor),
    ).fetchone()
    assert row is not None
    return row


def list_for_contract(conn: Conn, contract_id: UUID, *, after_id: int, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        f"""
        SELECT {_COLUMNS} FROM contract_events
         WHERE contract_id = %s AND id > %s
         ORDER BY id
         LIMIT %s
        """,
        (contract_id, after_id, limit),
    ).fetchall()
