"""Idempotency records (``idempotency_records``): the store behind ``Idempotency-Key`` on creating POSTs.

The rows are Powertools Idempotency's records; ``makima.api.idempotency_store`` adapts them to its
persistence-layer interface. Times are the caller's clock (Powertools computes expiries with the
process's clock and compares them with it, so the SQL compares with the same clock, never ``now()``).

A record is claimed INPROGRESS by one request (``claim_id``), then either completed by that request in
the same transaction as its own writes, or released (deleted) when it failed. Only the claimant may
complete or release it: a request that outlived its in-progress expiry and lost the record to a retry
completes nothing, and its transaction (holding its writes) rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from makima.db.connection import Conn

# How many expired rows each claim deletes: more than one, so deletion outpaces creation and the table
# stays about one expiry period of keys without a scheduled job.
PURGE_PER_CLAIM = 10


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    key: str
    status: str
    payload_hash: str
    expires_at: datetime
    in_progress_expires_at: datetime | None
    response_status: int | None
    response_headers: dict[str, str] | None
    response_body: Any


_COLUMNS = (
    "idempotency_key AS key, status, payload_hash, expires_at, in_progress_expires_at,"
    " response_status, response_headers, response_body"
)

# A live record is never overwritten; an expired one, or an INPROGRESS one abandoned past its
# in-progress expiry (its request died before committing, so nothing of it was written), is taken over.
_CLAIM = f"""
INSERT INTO idempotency_records AS r
       (idempotency_key, user_id, route, status, payload_hash, claim_id, expires_at, in_progress_expires_at)
VALUES (%(key)s, %(user_id)s, %(route)s, 'INPROGRESS', %(payload_hash)s, %(claim_id)s, %(expires_at)s,
        %(in_progress_expires_at)s)
ON CONFLICT (idempotency_key) DO UPDATE
   SET status = 'INPROGRESS', payload_hash = EXCLUDED.payload_hash, claim_id = EXCLUDED.claim_id,
       created_at = now(), expires_at = EXCLUDED.expires_at,
       in_progress_expires_at = EXCLUDED.in_progress_expires_at,
       response_status = NULL, response_headers = NULL, response_body = NULL
 WHERE r.expires_at <= %(now)s
    OR (r.status = 'INPROGRESS' AND r.in_progress_expires_at <= %(now)s)
RETURNING {_COLUMNS}
"""

_GET = f"SELECT {_COLUMNS} FROM idempotency_records WHERE idempotency_key = %(key)s"

_COMPLETE = """
UPDATE idempotency_records
   SET status = 'COMPLETED', expires_at = %(expires_at)s, in_progress_expires_at = NULL,
       response_status = %(status)s, response_headers = %(headers)s, response_body = %(body)s
 WHERE idempotency_key = %(key)s AND claim_id = %(claim_id)s AND status = 'INPROGRESS'
"""

_RELEASE = """
DELETE FROM idempotency_records
 WHERE idempotency_key = %(key)s AND claim_id = %(claim_id)s AND status = 'INPROGRESS'
"""

# SKIP LOCKED: two claims purging at once take different rows rather than waiting for each other.
_PURGE = """
DELETE FROM idempotency_records
 WHERE idempotency_key IN (SELECT idempotency_key FROM idempotency_records
                            WHERE expires_at <= %(now)s
                            ORDER BY expires_at
                            LIMIT %(limit)s
                              FOR UPDATE SKIP LOCKED)
"""


def claim(
    conn: Conn,
    *,
    key: str,
    user_id: UUID,
    route: str,
    payload_hash: str,
    claim_id: UUID,
    expires_at: datetime,
    in_progress_expires_at: datetime,
    now: datetime,
) -> bool:
    """Claim ``key`` INPROGRESS for ``claim_id``; False when a live record holds it (read it with
    ``get``)."""
    row = conn.execute(
        _CLAIM,
        {
            "key": key,
            "user_id": user_id,
            "route": route,
            "payload_hash": payload_hash,
            "claim_id": claim_id,
            "expires_at": expires_at,
            "in_progress_expires_at": in_progress_expires_at,
            "now": now,
        },
    ).fetchone()
    return row is not None


def get(conn: Conn, key: str) -> IdempotencyRecord | None:
    row = conn.execute(_GET, {"key": key}).fetchone()
    return IdempotencyRecord(**row) if row is not None else None


def complete(
    conn: Conn,
    *,
    key: str,
    claim_id: UUID,
    expires_at: datetime,
    status: int,
    headers: dict[str, str],
    body: Any,
) -> bool:
    """Store the answer of ``claim_id``'s request; False when the record is no longer its claim."""
    cur = conn.execute(
        _COMPLETE,
        {
            "key": key,
            "claim_id": claim_id,
            "expires_at": expires_at,
            "status": status,
            "headers": Jsonb(headers),
            "body": Jsonb(body),
        },
    )
    return cur.rowcount == 1


def release(conn: Conn, *, key: str, claim_id: UUID) -> None:
    """Delete ``claim_id``'s INPROGRESS record (its request failed: nothing of it was committed)."""
    conn.execute(_RELEASE, {"key": key, "claim_id": claim_id})


def purge_expired(conn: Conn, *, now: datetime, limit: int = PURGE_PER_CLAIM) -> int:
    """Delete up to ``limit`` records expired by ``now``; how many were deleted."""
    return conn.execute(_PURGE, {"now": now, "limit": limit}).rowcount
