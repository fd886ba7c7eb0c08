"""A pool of asynchronous connections for statements sent from the local stack's event loop.

The local stack serves requests on one event loop and runs the service layer's blocking calls on worker
threads (``api/concurrency.py``). For the hottest request, a heartbeat, that hand-off was the largest
cost left in the server: the call submitted to the pool, a worker woken, the answer handed back and the
loop woken in its turn, about a sixth of the server's CPU per heartbeat (docs/performance.md, "Change
22"). A heartbeat is one statement, and so are a state read and a plain state save: they are sent from
the loop itself, on psycopg's ``AsyncConnection``, and awaited like any other I/O: no thread is involved.

The pool is psycopg-pool's ``AsyncConnectionPool`` with what ``PooledDatabase`` adds to the blocking
one: the connection returned last handed out first, a liveness check only for a connection idle more
than ``CHECK_IDLE_AFTER``, and driver errors turned into the API's 503s (``db/connection.py``). It lives
beside the blocking pool (the rest of the service is blocking code), opened and closed with the app
(``api/app.py``: its lifespan), so it only exists where a server runs the app on an event loop: never in
a Lambda container, which serves one event at a time and has nothing to hand off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from makima.db.connection import TIMEOUTS, ReturnTimes, pool_options, raise_translated, unavailable

AsyncConn = psycopg.AsyncConnection[DictRow]


class LastUsedFirstAsyncPool(AsyncConnectionPool[AsyncConn]):
    """``AsyncConnectionPool`` handing out the connection returned last (LIFO), for the reasons of
    ``db/connection.py: LastUsedFirstPool``; the same override of the same method (pinned psycopg-pool),
    here a coroutine run with the pool's lock held."""

    async def _get_ready_connection(self, timeout: float | None) -> AsyncConn | None:
        self._pool.rotate(1)
        return await super()._get_ready_connection(timeout)


class AsyncPooledDatabase:
    """Asynchronous connections to ``url`` (autocommit, rows as dicts), for an app served on an event
    loop. Created closed: ``open`` and ``close`` run on the loop that uses it (the app's lifespan)."""

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0, max_idle: float = 600.0
    ) -> None:
        self.url = url
        self._returned = ReturnTimes()
        self.pool: AsyncConnectionPool[AsyncConn] = LastUsedFirstAsyncPool(
            url,
            **pool_options(
                min_size=min_size, max_size=max_size, timeout=timeout, max_idle=max_idle, check=self._check_if_idle
            ),
        )

    async def open(self) -> None:
        """Start the pool without waiting for its first connection: a database that is down at start
        is a 503 for the requests that need it, as with the blocking pool, not a server that fails."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def _check_if_idle(self, conn: AsyncConn) -> None:
        if self._returned.idle(conn):
            await AsyncConnectionPool.check_connection(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """A connection (not in a transaction); driver errors as ``PooledDatabase.connection`` raises them."""
        try:
            async with self.pool.connection() as conn:
                try:
                    yield conn
                except (psycopg.OperationalError, *TIMEOUTS) as exc:
                    raise_translated(exc, conn)
                finally:
                    self._returned.returned(conn)
        except PoolTimeout as exc:
            raise unavailable(exc) from exc
