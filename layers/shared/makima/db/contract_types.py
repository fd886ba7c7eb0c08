"""SQL for contract types (definitions are stored as validated JSON documents)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from makima.db.connection import Conn


def get(conn: Conn, name: str) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT name, description, version, definition, builtin FROM contract_types WHERE name = %s", (name,)
    ).fetchone()


def list_page(conn: Conn, *, after: str | None, limit: int) -> list[dict[str, Any]]:
    """By name, keyset-paginated on it (the primary key)."""
    return conn.execute(
        """
        SELECT name, description, version, definition, builtin FROM contract_types
         WHERE %(after)s::text IS NULL OR name > %(after)s
         ORDER BY name
         LIMIT %(limit)s
        """,
        {"after": after, "limit": limit},
    ).fetchall()


def list_all(conn: Conn) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT name, description, version, definition, builtin FROM contract_types ORDER BY name"
    ).fetchall()


def upsert(conn: Conn, *, name: str, description: str, version: int, definition: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute(
        """
        INSERT INTO contract_types (name, description, version, definition, builtin)
        VALUES (%s, %s, %s, %s, false)
        ON CONFLICT (name) DO UPDATE
           SET description = EXCLUDED.description, version = EXCLUDED.version,
               definition = EXCLUDED.definition, updated_at = now()
        RETURNING name, description, version, definition, builtin
        """,
        (name, description, version, Jsonb(definition)),
    ).fetchone()
    assert row is not None
    return row


def lock(conn: Conn, name: str) -> dict[str, Any] | None:
    return conn.execute(
        "SELECT name, description, version, definition, builtin FROM contract_types WHERE name = %s FOR UPDATE",
        (name,),
    ).fetchone()


def phases_in_use(conn: Conn, name: str) -> list[str]:
    """The phases that contracts of this type are in now (a new definition must keep them)."""
    rows = conn.execute(
        "SELECT DISTINCT phase FROM contracts WHERE contract_type = %s ORDER BY phase", (name,)
    ).fetchall()
    return [r["phase"] for r in rows]
