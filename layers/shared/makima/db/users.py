"""SQL for users and their API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from makima.db.connection import Conn

_TOKEN_COLUMNS = "id, user_id, name, kind, prefix, created_at, last_used_at, revoked_at"  # noqa: S105 - column list, not a secret


def insert_user(conn: Conn, *, name: str, role: str) -> dict[str, Any] | None:
    """The new user, or None when the name is taken."""
    return conn.execute(
        """
        INSERT INTO users (name, role) VALUES (%s, %s)
        ON CONFLICT (name) DO NOTHING
        RETURNING id, name, role, created_at
        """,
        (name, role),
    ).fetchone()


def get_user(conn: Conn, user_id: UUID) -> dict[str, Any] | None:
    return conn.execute("SELECT id, name, role, created_at FROM users WHERE id = %s", (user_id,)).fetchone()


def get_user_by_name(conn: Conn, name: str) -> dict[str, Any] | None:
    return conn.execute("SELECT id, name, role, created_at FROM users WHERE name = %s", (name,)).fetchone()


def list_users(conn: Conn, *, after: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
    """Oldest first, keyset-paginated on (created_at, name) (names are unique)."""
    return conn.execute(
        """
        SELECT id, name, role, created_at FROM users
         WHERE %(ts)s::timestamptz IS NULL OR (created_at, name) > (%(ts)s, %(name)s::text)
         ORDER BY created_at, name
         LIMIT %(limit)s
        """,
        {"ts": after[0] if after else None, "name": after[1] if after else None, "limit": limit},
    ).fetchall()


def insert_token(conn: Conn, *, user_id: UUID, name: str, kind: str, token_hash: bytes, prefix: str) -> dict[str, Any]:
    row = conn.execute(
        f"""
        INSERT INTO api_tokens (user_id, name, kind, token_hash, prefix) VALUES (%s, %s, %s, %s, %s)
        RETURNING {_TOKEN_COLUMNS}
        """,
        (user_id, name, kind, token_hash, prefix),
    ).fetchone()
    assert row is not None
    return row


def insert_token_if_new(
    conn: Conn, *, user_id: UUID, name: str, kind: str, token_hash: bytes, prefix: str
) -> dict[str, Any] | None:
    """The new token, or None when a token with this digest exists already, live or revoked (the
    digest is unique: a revoked token is never registered again)."""
    return conn.execute(
        f"""
        INSERT INTO api_tokens (user_id, name, kind, token_hash, prefix) VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (token_hash) DO NOTHING
        RETURNING {_TOKEN_COLUMNS}
        """,
        (user_id, name, kind, token_hash, prefix),
    ).fetchone()


def token_by_hash(conn: Conn, token_hash: bytes) -> dict[str, Any] | None:
    """The token with this digest, revoked or not (``resolve_token`` sees live ones only)."""
    return conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = %s", (token_hash,)).fetchone()


def list_tokens(conn: Conn, user_id: UUID, *, after: tuple[datetime, UUID] | None, limit: int) -> list[dict[str, Any]]:
    """Oldest first, keyset-paginated on (created_at, id)."""
    return conn.execute(
        f"""
        SELECT {_TOKEN_COLUMNS} FROM api_tokens
         WHERE user_id = %(user)s
           AND (%(ts)s::timestamptz IS NULL OR (created_at, id) > (%(ts)s, %(id)s::uuid))
         ORDER BY created_at, id
         LIMIT %(limit)s
        """,
        {"user": user_id, "ts": after[0] if after else None, "id": after[1] if after else None, "limit": limit},
    ).fetchall()


def resolve_token(conn: Conn, token_hash: bytes) -> dict[str, Any] | None:
    """The live token with this digest and its user's role, in one indexed round trip."""
    return conn.execute(
        """
        SELECT t.id AS token_id, t.kind, u.id AS user_id, u.role
          FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = %s AND t.revoked_at IS NULL
        """,
        (token_hash,),
    ).fetchone()


def revoke_token(conn: Conn, token_id: UUID) -> dict[str, Any] | None:
    return conn.execute(
        f"""
        UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s
        RETURNING {_TOKEN_COLUMNS}
        """,
        (token_id,),
    ).fetchone()


def has_admin_token(conn: Conn) -> bool:
    row = conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM api_tokens t JOIN users u ON u.id = t.user_id
                        WHERE u.role = 'admin' AND t.revoked_at IS NULL) AS present
        """
    ).fetchone()
    return bool(row and row["present"])


def token_owner(conn: Conn, token_id: UUID) -> UUID | None:
    row = conn.execute("SELECT user_id FROM api_tokens WHERE id = %s", (token_id,)).fetchone()
    return row["user_id"] if row else None


def touch_token(conn: Conn, token_id: UUID, at: datetime) -> bool | None:
    """Set ``last_used_at`` to ``at`` unless it was written less than a minute before.

    True: written. False: not needed (written less than a minute before ``at``, by this process or
    another). None: skipped because another transaction holds the row locked (a revocation, say): the
    statement never waits for a row lock, the next use writes. A use that writes nothing locks nothing
    and assigns no transaction id, so it costs no WAL and no commit flush."""
    row = conn.execute(
        """
        WITH touched AS (
            UPDATE api_tokens SET last_used_at = %(at)s
             WHERE id = (SELECT id FROM api_tokens
                          WHERE id = %(token_id)s
                            AND (last_used_at IS NULL OR last_used_at < %(at)s - interval '1 minute')
                            FOR UPDATE SKIP LOCKED)
            RETURNING id
        )
        SELECT EXISTS (SELECT 1 FROM touched) AS written,
               (SELECT last_used_at >= %(at)s - interval '1 minute' FROM api_tokens WHERE id = %(token_id)s)
                   AS recent
        """,
        {"token_id": token_id, "at": at},
    ).fetchone()
    assert row is not None
    if row["written"]:
        return True
    return False if row["recent"] else None


def resolve_and_touch_token(conn: Conn, token_hash: bytes, at: datetime) -> dict[str, Any] | None:
    """``resolve_token`` and ``touch_token`` in one round trip (the authorizer's lookup): the live token
    with this digest, and its use recorded at ``at`` under the same once-a-minute, never-wait rule."""
    return conn.execute(
        """
        WITH hit AS (
            SELECT t.id AS token_id, t.kind, u.id AS user_id, u.role
              FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = %(token_hash)s AND t.revoked_at IS NULL
        ), touched AS (
            UPDATE api_tokens SET last_used_at = %(at)s
             WHERE id = (SELECT a.id FROM api_tokens a JOIN hit ON hit.token_id = a.id
                          WHERE a.last_used_at IS NULL OR a.last_used_at < %(at)s - interval '1 minute'
                            FOR UPDATE OF a SKIP LOCKED)
            RETURNING id
        )
        SELECT token_id, kind, user_id, role FROM hit
        """,
        {"token_hash": token_hash, "at": at},
    ).fetchone()
