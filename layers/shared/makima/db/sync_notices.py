"""The notifications the local stack listens for: PostgreSQL LISTEN/NOTIFY on two channels.

``SYNC_CHANNEL`` ends sync waits:
The heartbeat statement that collects a sync request (db/heartbeats.py) calls
``pg_notify(SYNC_CHANNEL, contract_id)`` in its own transaction, so the notice goes out when the
delivery commits, never before. A notice is a wake-up, not the answer: the waiter then reads the
delivery (``db/supervisors.py: sync_delivered_since``). That keeps a lost or duplicated notice harmless:
after losing its connection, a listener wakes every waiter to read once more.

``TOKEN_CHANNEL`` carries the id of each token revoked (or deleted), from a trigger on ``api_tokens``
(migration 0020), on commit: the listener forgets that token's cached principal
(services/principal_cache.py). A lost notice there would keep a revoked token working, so the cache
answers only while the LISTEN is held (local/sync_listener.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import psycopg

SYNC_CHANNEL = "makima_sync_delivered"
TOKEN_CHANNEL = "makima_token_revoked"  # noqa: S105 (a channel name, named in migration 0020)
# How the listener's session shows in pg_stat_activity (and how tests find it).
LISTENER_NAME = "makima-sync-listener"


def connect_listener(url: str, *, connect_timeout: float) -> psycopg.Connection[tuple[object, ...]]:
    """A connection of its own (not pooled: it stays LISTENing) that listens on both channels."""
    conn = psycopg.connect(
        url, autocommit=True, application_name=LISTENER_NAME, connect_timeout=max(1, int(connect_timeout))
    )
    try:
        conn.execute(f"LISTEN {SYNC_CHANNEL}")
        conn.execute(f"LISTEN {TOKEN_CHANNEL}")
    except BaseException:
        conn.close()
        raise
    return conn


def notices(conn: psycopg.Connection[tuple[object, ...]], *, timeout: float) -> Iterator[tuple[str, UUID]]:
    """``(channel, id)`` of the notices that arrive within ``timeout`` seconds: a contract whose sync
    was delivered (``SYNC_CHANNEL``), a token revoked (``TOKEN_CHANNEL``)."""
    for notice in conn.notifies(timeout=timeout):
        if notice.channel not in (SYNC_CHANNEL, TOKEN_CHANNEL):
            continue
        try:
            yield notice.channel, UUID(notice.payload)
        except ValueError:  # not ours: nothing to do
            continue


def ping(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """A round trip: a connection that died silently (no notice can say so) raises here."""
    conn.execute("SELECT 1")
