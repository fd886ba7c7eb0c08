"""SQL for contract types (definitions are stored as validated JSON documents)."""

from __future__ import annotations

from typing import Any

from makima.db.connection import Conn


def get(conn: Conn, name: str) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT name, description, version, definition, builtin FROM contract_types WHERE name = %s", (name,)
    ).fetchone()


def list_all(conn: Conn) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT name, description, version, definition, builtin FROM contract_types ORDER BY name"
    ).fetchall()
