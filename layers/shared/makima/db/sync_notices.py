"""The notification that ends sync waits: PostgreSQL LISTEN/NOTIFY on one channel.

The heartbeat statement that collects a sync request (db/heartbeats.py) calls
``pg_notify(SYNC_CHANNEL, contract_id)`` in its own transaction, so the notice goes out when the
delivery commits, never before. A notice is a wake-up, not the answer: the waiter then reads the
delivery (``db/supervisors.py: sync_delivered_since``). That keeps a lost or duplicated notice harmless:
after losing its connection, a listener wakes every waiter to read once more.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import psycopg

SYNC_CHANNEL = "makima_sync_delivered"
# How the listener's session shows in pg_stat_activity (and how tests find it).
LISTENER_NAME = "makima-sync-listener"


def connect_listener(url: str, *, connect_timeout: float) -> psycopg.Connection[tuple[object, ...]]:
    """A connection of its own (not pooled: it stays LISTENing) that listens on ``SYNC_CHANNEL``."""
    conn = psycopg.connect(
        url, autocommit=True, application_name=LISTENER_NAME, connect_timeout=max(1, int(connect_timeout))
    )
    try:
        conn.execute(f"LISTEN {SYNC_CHANNEL}")
    except BaseException:
        conn.close()
        raise
    return conn


def notices(conn: psycopg.Connection[tuple[object, ...]], *, timeout: float) -> Iterator[UUID]:
    """The contracts whose sync was delivered, as notices arrive within ``timeout`` seconds."""
    for notice in conn.notifies(timeout=timeout):
        if notice.channel != SYNC_CHANNEL:
            continue
        try:
            yield UUID(notice.payload)
        except ValueError:  # not ours: nothing to wake
            continue


def ping(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """A round trip: a connection that died silently (no notice can say so) raises here."""
    conn.execute("SELECT 1")
