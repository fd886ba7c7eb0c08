"""SQL for the monitor: connections and their filters, the outbox, replay, stale episodes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from makima.db import events as events_sql
from makima.db.connection import Conn

_EVENT_COLUMNS = "id, contract_id, owner_id, type, payload, actor, created_at"
_EVENT_COLUMNS_E = "e.id, e.contract_id, e.owner_id, e.type, e.payload, e.actor, e.created_at"
_CONNECTION_COLUMNS = (
    "connection_id, owner_id, is_admin, endpoint, contract_ids, statuses, include_stale, include_heartbeats, resuming"
)
# Whether a connection may be sent anything: it names its token (rows from before migration 0012 do not)
# and that token is not revoked. Evaluated per row in the statements that pick connections (``c``), so
# a revocation committed by any process is seen by the next statement.
_AUTHORIZED = (
    "(c.token_id IS NOT NULL AND EXISTS (SELECT 1 FROM api_tokens t WHERE t.id = c.token_id AND t.revoked_at IS NULL))"
)

# --- connections ---------------------------------------------------------------------------------


def add_connection(
    conn: Conn,
    connection_id: str,
    owner_id: UUID,
    *,
    is_admin: bool,
    endpoint: str,
    token_id: UUID | None,
    max_per_token: int = 0,
) -> bool:
    """A new connection takes no live events until its first filter message (``resuming`` until then):
    otherwise events broadcast between the handshake and a resuming filter would reach it before the
    events it missed, out of order. ``token_id`` is the token it was opened with: revoking it closes
    the connection, and nothing is sent on it meanwhile.

    With ``max_per_token`` (> 0), a token that already holds that many connections gets no new one:
    False, nothing written. Connects of one token are serialised by a lock on the token's row (``FOR
    NO KEY UPDATE``, held to the end of the transaction), so two at once cannot both take the last
    place; counting uses idx_monitor_connections_token. A row lock, not an advisory lock: RDS Proxy pins
    the session of a client that takes an advisory lock, even a transaction-level one. The mode is the
    weakest that conflicts with itself: it does not block the foreign-key checks of rows that name the
    token (``FOR KEY SHARE``), and a token's ``last_used_at`` touch skips a locked row."""
    if max_per_token > 0 and token_id is not None:
        conn.execute("SELECT 1 FROM api_tokens WHERE id = %s FOR NO KEY UPDATE", (token_id,))
        row = conn.execute(
            "SELECT count(*) AS n FROM monitor_connections WHERE token_id = %s AND connection_id <> %s",
            (token_id, connection_id),
        ).fetchone()
        if row is not None and int(row["n"]) >= max_per_token:
            return False
    conn.execute(
        """
        INSERT INTO monitor_connections (connection_id, owner_id, is_admin, endpoint, token_id, resuming)
        VALUES (%s, %s, %s, %s, %s, true)
        ON CONFLICT (connection_id) DO UPDATE
           SET owner_id = EXCLUDED.owner_id, is_admin = EXCLUDED.is_admin, endpoint = EXCLUDED.endpoint,
               token_id = EXCLUDED.token_id, resuming = true, resuming_until = NULL
        """,
        (connection_id, owner_id, is_admin, endpoint, token_id),
    )
    return True


def get_connection(conn: Conn, connection_id: str) -> dict[str, Any] | None:
    """The connection with ``authorized`` (its token is recorded and live: see ``_AUTHORIZED``)."""
    return conn.execute(
        f"""
        SELECT {_CONNECTION_COLUMNS}, token_id, {_AUTHORIZED} AS authorized
          FROM monitor_connections c WHERE connection_id = %s
        """,
        (connection_id,),
    ).fetchone()


def is_authorized(conn: Conn, connection_id: str) -> bool:
    """Whether the connection exists and its token is live (one primary-key lookup each)."""
    row = conn.execute(
        f"SELECT {_AUTHORIZED} AS authorized FROM monitor_connections c WHERE c.connection_id = %s", (connection_id,)
    ).fetchone()
    return bool(row and row["authorized"])


def unauthorized_connections(
    conn: Conn, *, token_id: UUID | None = None, endpoint: str | None = None
) -> list[dict[str, Any]]:
    """The connections (``connection_id``, ``endpoint``) whose token is revoked or unknown: of one token
    (idx_monitor_connections_token: the revocation path) or of one endpoint (idx_monitor_connections_endpoint:
    the local stack's sweep), never a scan of every connection. Filters are added to the text only
    when given (see ``events_after`` on generic plans)."""
    if token_id is None and endpoint is None:
        raise ValueError("a token or an endpoint")
    where = [f"NOT {_AUTHORIZED}"]
    if token_id is not None:
        where.append("c.token_id = %(token)s")
    if endpoint is not None:
        where.append("c.endpoint = %(endpoint)s")
    return conn.execute(
        f"""
        SELECT c.connection_id, c.endpoint FROM monitor_connections c
         WHERE {" AND ".join(where)}
         ORDER BY c.connection_id
        """,
        {"token": token_id, "endpoint": endpoint},
    ).fetchall()


def set_filter(
    conn: Conn,
    connection_id: str,
    *,
    contract_ids: list[UUID] | None,
    statuses: list[str] | None,
    include_stale: bool,
    include_heartbeats: bool,
    resuming: bool,
    resuming_for: timedelta | None = None,
) -> bool:
    """Store the filter. A resuming connection is skipped by the broadcaster for ``resuming_for`` at
    most (None: until ``set_resuming`` clears it): a replay that never finishes cannot leave it
    without live events for good."""
    cur = conn.execute(
        """
        UPDATE monitor_connections
           SET contract_ids = %s, statuses = %s, include_stale = %s, include_heartbeats = %s,
               resuming = %s, resuming_until = CASE WHEN %s THEN now() + %s END, filter_set_at = now()
         WHERE connection_id = %s
        """,
        (contract_ids, statuses, include_stale, include_heartbeats, resuming, resuming, resuming_for, connection_id),
    )
    return cur.rowcount == 1


def set_resuming(conn: Conn, connection_id: str, resuming: bool, *, resuming_for: timedelta | None = None) -> bool:
    """Clear the mark (the replay is done: live from now), or re-arm its deadline while a replay runs
    (only if the connection is still resuming). Whether a row was changed."""
    if resuming:
        cur = conn.execute(
            "UPDATE monitor_connections SET resuming_until = now() + %s WHERE connection_id = %s AND resuming",
            (resuming_for, connection_id),
        )
    else:
        cur = conn.execute(
            "UPDATE monitor_connections SET resuming = false, resuming_until = NULL WHERE connection_id = %s",
            (connection_id,),
        )
    return cur.rowcount == 1


def remove_connections(conn: Conn, connection_ids: Sequence[str]) -> int:
    if not connection_ids:
        return 0
    cur = conn.execute("DELETE FROM monitor_connections WHERE connection_id = ANY(%s)", (list(connection_ids),))
    return cur.rowcount


def remove_endpoint(conn: Conn, endpoint: str) -> int:
    """Forget the connections of a local stack that is gone (they cannot be open any more)."""
    cur = conn.execute("DELETE FROM monitor_connections WHERE endpoint = %s", (endpoint,))
    return cur.rowcount


def live_subscribers(conn: Conn, endpoint: str, *, heartbeats_only: bool = False) -> list[dict[str, Any]]:
    """The connections of ``endpoint`` that take live events now (not those still replaying, unless
    their replay's deadline passed: it died on the way), each with ``authorized``: the broadcaster routes
    only to the authorised ones and closes the others, so a revoked token's connection gets nothing
    from the moment the revocation commits."""
    extra = " AND include_heartbeats" if heartbeats_only else ""
    return conn.execute(
        f"""
        SELECT {_CONNECTION_COLUMNS}, {_AUTHORIZED} AS authorized FROM monitor_connections c
         WHERE endpoint = %s AND (NOT resuming OR resuming_until < now()){extra}
         ORDER BY connection_id
        """,
        (endpoint,),
    ).fetchall()


def any_heartbeat_subscriber(conn: Conn) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM monitor_connections WHERE include_heartbeats) AS yes").fetchone()
    return bool(row and row["yes"])


def contract_statuses(conn: Conn, contract_ids: Sequence[str]) -> dict[str, str]:
    if not contract_ids:
        return {}
    rows = conn.execute(
        "SELECT id::text AS id, status FROM contracts WHERE id = ANY(%s::uuid[])", (list(contract_ids),)
    ).fetchall()
    return {r["id"]: r["status"] for r in rows}


# --- outbox --------------------------------------------------------------------------------------


def claim_unpublished(
    conn: Conn, limit: int, *, older_than: timedelta | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Unpublished events, oldest first, locked for this transaction: concurrent publishers skip
    them instead of publishing them twice, and if this one dies before marking them, its locks go
    with its transaction and the sweeper takes them later."""
    age = "AND created_at < COALESCE(%(now)s::timestamptz, now()) - %(age)s" if older_than is not None else ""
    return conn.execute(
        f"""
        SELECT {_EVENT_COLUMNS} FROM contract_events
         WHERE published_at IS NULL {age}
         ORDER BY id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED
        """,
        {"limit": limit, "age": older_than, "now": now},
    ).fetchall()


def take_unpublished(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """Mark the oldest unpublished events published and return them, in one statement (its own
    transaction on an autocommit connection): the in-process publisher's drain (``drain_in_process``).
    Rows another drain holds are skipped; RETURNING's order is not the subquery's: the caller sorts."""
    return conn.execute(
        f"""
        UPDATE contract_events SET published_at = now()
         WHERE id IN (SELECT id FROM contract_events
                       WHERE published_at IS NULL
                       ORDER BY id
                       LIMIT %s
                         FOR UPDATE SKIP LOCKED)
        RETURNING {_EVENT_COLUMNS}
        """,
        (limit,),
    ).fetchall()


def mark_unpublished(conn: Conn, ids: Sequence[int]) -> None:
    """Put events back in the outbox (their publish failed after ``take_unpublished``)."""
    conn.execute("UPDATE contract_events SET published_at = NULL WHERE id = ANY(%s)", (list(ids),))


def mark_published(conn: Conn, ids: Sequence[int]) -> None:
    conn.execute("UPDATE contract_events SET published_at = now() WHERE id = ANY(%s)", (list(ids),))


def unpublished_count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) AS n FROM contract_events WHERE published_at IS NULL").fetchone()
    return int(row["n"]) if row else 0


# --- replay --------------------------------------------------------------------------------------


# The expression of idx_contract_events_status_moves (migration 0017b), which a query must repeat as is.
STATUS_MOVES = "ARRAY[e.payload ->> 'old_status', e.payload ->> 'new_status']"
# Past this many contracts in a status filter's statuses, a replay's statement selects them in SQL.
_MANY_CONTRACTS = 1000


def events_after(
    conn: Conn,
    owner_id: UUID | None,
    after_id: int,
    limit: int,
    contract_ids: list[UUID] | None,
    *,
    statuses: list[str] | None = None,
    include_stale: bool = True,
    until_id: int | None = None,
) -> list[dict[str, Any]]:
    """The log after ``after_id`` (up to ``until_id``) that a monitor's filter takes, oldest first: the
    rule of ``domain.monitor.Subscriber.wants`` for logged events, in SQL, so that what the filter leaves
    out is never read into Python (issue 13: a resume whose filter matched nothing paged through the
    whole log). Driven by an index whatever the filter: by contract (idx_contract_events_contract), by
    owner (idx_contract_events_owner), by id for an admin; a status filter is two branches, events of
    the contracts now in those statuses (idx_contracts_status → idx_contract_events_contract) and status
    changes from or to them (idx_contract_events_status_moves), so a filter matching nothing costs a few
    index probes.

    The filters are added to the text only when given, not written as ``(%s IS NULL OR …)``: once
    psycopg prepares the statement, PostgreSQL may switch to a generic plan, which cannot drop the
    ``IS NULL`` branch and scans the whole log (what tests/bench/bench_dashboard.py found for the
    dashboard's statements)."""
    where = ["e.id > %(after)s"]
    if until_id is not None:
        where.append("e.id <= %(until)s")
    if owner_id is not None:
        where.append("e.owner_id = %(owner)s")
    if contract_ids is not None:
        where.append("e.contract_id = ANY(%(ids)s)")
    if not include_stale:
        where.append("e.type <> 'stale_detected'")
    base = " AND ".join(where)
    params: dict[str, Any] = {
        "after": after_id,
        "until": until_id,
        "owner": owner_id,
        "ids": contract_ids,
        "statuses": statuses,
        "limit": limit,
    }
    if statuses is None:
        return conn.execute(
            f"SELECT {_EVENT_COLUMNS_E} FROM contract_events e WHERE {base} ORDER BY e.id LIMIT %(limit)s", params
        ).fetchall()
    # The contracts now in those statuses, looked up first (idx_contracts_status / idx_contracts_owner_status):
    # as a sub-select the planner guesses their number, and at a guess of "a few, with many events each"
    # it walks the whole log by id for them; as a list of ids it knows (and skips the branch when none).
    of_contracts = ["c.status = ANY(%(statuses)s::text[])"]
    if owner_id is not None:
        of_contracts.append("c.owner_id = %(owner)s")
    if contract_ids is not None:
        of_contracts.append("c.id = ANY(%(ids)s)")
    found = conn.execute(
        f"SELECT c.id FROM contracts c WHERE {' AND '.join(of_contracts)} LIMIT {_MANY_CONTRACTS + 1}", params
    ).fetchall()
    moves = f"""
            (SELECT {_EVENT_COLUMNS_E} FROM contract_events e
              WHERE {base} AND e.type = 'status_changed'
                AND {STATUS_MOVES} && %(statuses)s::text[]
              ORDER BY e.id LIMIT %(limit)s)"""
    if not found:
        return conn.execute(moves, params).fetchall()
    if len(found) > _MANY_CONTRACTS:
        # Many: their events are dense in the log, and walking it by id (within ``until_id``) finds them.
        in_statuses = f"e.contract_id IN (SELECT c.id FROM contracts c WHERE {' AND '.join(of_contracts)})"
    else:
        params["found"] = [r["id"] for r in found]
        in_statuses = "e.contract_id = ANY(%(found)s::uuid[])"
    return conn.execute(
        f"""
        SELECT {_EVENT_COLUMNS} FROM (
            (SELECT {_EVENT_COLUMNS_E} FROM contract_events e
              WHERE {base} AND {in_statuses}
              ORDER BY e.id LIMIT %(limit)s)
            UNION
            {moves}
        ) m ORDER BY id LIMIT %(limit)s
        """,
        params,
    ).fetchall()


def log_head(conn: Conn) -> int:
    """The newest event id (0 for an empty log): one step down the primary key."""
    row = conn.execute("SELECT COALESCE(max(id), 0) AS head FROM contract_events").fetchone()
    return int(row["head"]) if row else 0


# --- stale episodes ------------------------------------------------------------------------------

# One statement: the candidates (from idx_contracts_stale), their events, their episodes. A constant so
# that tests/integration/test_stale_detection.py checks the plan of this very text.
REPORT_STALE_SQL = """
WITH clock AS (SELECT COALESCE(%(now)s::timestamptz, now()) AS now),
found AS (
    SELECT c.id, c.owner_id, c.last_activity_at
      FROM contracts c
      LEFT JOIN stale_reports r ON r.contract_id = c.id
     WHERE c.status NOT IN ('completed', 'failed', 'archived')
       AND c.last_activity_at < (SELECT now FROM clock) - %(threshold)s
       AND (r.contract_id IS NULL OR r.last_activity_at < c.last_activity_at)
     ORDER BY c.last_activity_at
     LIMIT %(limit)s
       FOR UPDATE OF c SKIP LOCKED
),
ev AS (
    INSERT INTO contract_events (contract_id, owner_id, type, payload, actor)
    SELECT f.id, f.owner_id, 'stale_detected',
           jsonb_build_object(
               'contract_id', f.id::text,
               'last_activity', to_jsonb(f.last_activity_at),
               'stale_duration', floor(extract(epoch FROM (SELECT now FROM clock) - f.last_activity_at))::bigint,
               'stale_duration_secs', floor(extract(epoch FROM (SELECT now FROM clock) - f.last_activity_at))::bigint
           ),
           %(actor)s
      FROM found f
     ORDER BY f.last_activity_at
    RETURNING id, contract_id
)
INSERT INTO stale_reports AS r (contract_id, last_activity_at, event_id, reported_at)
SELECT f.id, f.last_activity_at, ev.id, (SELECT now FROM clock) FROM found f JOIN ev ON ev.contract_id = f.id
ON CONFLICT (contract_id) DO UPDATE
   SET last_activity_at = EXCLUDED.last_activity_at, event_id = EXCLUDED.event_id,
       reported_at = EXCLUDED.reported_at
RETURNING r.contract_id, r.last_activity_at, r.event_id
"""


def report_stale(
    conn: Conn, threshold: timedelta, limit: int, actor: str, *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Open a stale episode for each contract idle past ``threshold`` that has none open, and log its
    ``stale_detected`` event, in one statement.

    An episode is open while the contract's activity is the one it was reported for; activity since
    (``last_activity_at`` moved) ends it, and the next idle spell is a new episode. Candidates come
    from idx_contracts_stale (live contracts by last activity), not a scan of every contract.
    """
    events_sql.logged()
    return conn.execute(
        REPORT_STALE_SQL, {"threshold": threshold, "limit": limit, "actor": actor, "now": now}
    ).fetchall()
