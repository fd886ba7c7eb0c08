"""The local stack's pool hands out the connection returned last (``db/connection.py:
LastUsedFirstPool``, issue 15).

psycopg-pool hands out the connection idle longest: once a burst has grown the pool, even one client's
sequential requests go round every connection, each statement to another PostgreSQL backend, and the
pool never shrinks back. Handing out the last one returned keeps one backend busy and the rest idle.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from makima.db.connection import PooledDatabase

pytestmark = pytest.mark.integration


@pytest.fixture
def grown(database_url: str) -> Iterator[PooledDatabase]:
    """A pool of 3 connections, all open (as after a burst of 3 requests at once)."""
    db = PooledDatabase(database_url, min_size=3, max_size=3)
    db.pool.wait(timeout=10)
    yield db
    db.close()


def _backend(db: PooledDatabase) -> int:
    with db.connection() as conn:
        return conn.info.backend_pid


def test_sequential_checkouts_get_the_connection_returned_last(grown: PooledDatabase) -> None:
    with grown.connection() as a, grown.connection() as b, grown.connection() as c:
        pids = {a.info.backend_pid, b.info.backend_pid, c.info.backend_pid}
        last = a.info.backend_pid  # the outermost block ends last: ``a`` is returned after ``c`` and ``b``
    assert len(pids) == 3
    assert [_backend(grown) for _ in range(6)] == [last] * 6


def test_the_next_busiest_follow_in_the_order_they_were_returned(grown: PooledDatabase) -> None:
    with grown.connection() as a, grown.connection() as b, grown.connection() as c:
        order = [c.info.backend_pid, b.info.backend_pid, a.info.backend_pid]  # the order of their return
    with grown.connection() as x, grown.connection() as y, grown.connection() as z:
        assert [x.info.backend_pid, y.info.backend_pid, z.info.backend_pid] == order[::-1]


def test_a_grown_pool_shrinks_back_around_the_connection_in_use(database_url: str) -> None:
    """``max_idle``: the connections a sequential client leaves idle are closed, the one it uses stays."""
    db = PooledDatabase(database_url, min_size=1, max_size=3, max_idle=0.2)  # seconds, instead of 10 minutes
    try:
        with db.connection() as a, db.connection(), db.connection():
            hot = a.info.backend_pid
        assert db.pool.get_stats()["pool_size"] == 3
        deadline = time.monotonic() + 10
        while db.pool.get_stats()["pool_size"] > 1 and time.monotonic() < deadline:
            assert _backend(db) == hot
            time.sleep(0.02)
        assert db.pool.get_stats()["pool_size"] == 1
        assert _backend(db) == hot
    finally:
        db.close()
