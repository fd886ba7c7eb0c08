"""Connections to PostgreSQL: a pool for long-lived processes, one reused connection per Lambda.

Both hand out connections that return rows as dicts, and both turn "the database cannot be reached"
into ``DatabaseUnavailable`` (503) and "PostgreSQL cancelled a statement past ``statement_timeout``, or
ended a session idle in a transaction past ``idle_in_transaction_session_timeout``" (the role's limits,
set by ``makima.db.migrate``) into ``DatabaseTimeout`` (503), so callers never see a driver traceback.
Neither caches a broken connection: the next request reconnects, so service recovers by itself when
PostgreSQL returns (and after a session the server ended).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from makima.errors import DatabaseTimeout, DatabaseUnavailable

Conn = psycopg.Connection[DictRow]

# Seconds a pooled connection may sit idle before its next checkout runs the liveness check.
CHECK_IDLE_AFTER = 1.0


class Database(Protocol):
    def connection(self) -> Any:
        """A context manager yielding a ``Conn`` (not in a transaction)."""

    def close(self) -> None: ...


@contextmanager
def transaction(db: Database) -> Iterator[Conn]:
    """One short explicit transaction: commit on success, roll back on any exception."""
    with db.connection() as conn, conn.transaction():
        yield conn


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable("the database is unavailable; retry shortly", {"reason": type(exc).__name__})


def _timed_out(exc: psycopg.Error) -> DatabaseTimeout:
    if isinstance(exc, psycopg.errors.IdleInTransactionSessionTimeout):
        message = "the database ended a transaction left idle too long; retry shortly"
    else:
        message = "a database statement took too long and was cancelled; retry shortly"
    return DatabaseTimeout(message, {"reason": type(exc).__name__})


def _is_connection_failure(exc: psycopg.Error, conn: Conn | None) -> bool:
    # Lock timeouts and cancellations are OperationalErrors too, but the connection survives them.
    return conn is None or conn.closed or conn.broken


# What the role's time limits raise: statement_timeout cancels the statement (57014, an
# OperationalError; the connection lives on), idle_in_transaction_session_timeout ends the session
# (25P03, an InternalError; the connection is dead).
_TIMEOUTS = (psycopg.errors.QueryCanceled, psycopg.errors.IdleInTransactionSessionTimeout)


def _translate(exc: psycopg.Error, conn: Conn | None) -> Exception | None:
    """The API's error for a driver error raised while ``conn`` was in use; None: re-raise it as is."""
    if isinstance(exc, _TIMEOUTS):
        return _timed_out(exc)
    if isinstance(exc, psycopg.OperationalError) and _is_connection_failure(exc, conn):
        return _unavailable(exc)
    return None


class PooledDatabase:
    """A psycopg-pool pool: the local stack and tests, where many requests run at once."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0) -> None:
        self.url = url
        # When each connection was last handed back: one used moments ago is not checked again (the
        # check is a round trip on every checkout; a request takes two or three checkouts).
        self._returned: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self.pool: ConnectionPool[Conn] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"row_factory": dict_row, "autocommit": True},
            # A connection that died while idle (server restart) is replaced before it is handed out.
            check=self._check_if_idle,
            reconnect_timeout=0,
            open=False,
        )
        self.pool.open(wait=False)

    def _check_if_idle(self, conn: Conn) -> None:
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > CHECK_IDLE_AFTER:
            ConnectionPool.check_connection(conn)

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        try:
            with self.pool.connection() as conn:
                try:
                    yield conn
                except (psycopg.OperationalError, *_TIMEOUTS) as exc:
                    translated = _translate(exc, conn)
                    if translated is not None:
                        raise translated from exc
                    raise
                finally:
                    self._returned[conn] = time.monotonic()
        except PoolTimeout as exc:
            raise _unavailable(exc) from exc

    def close(self) -> None:
        self.pool.close()


class SingleConnectionDatabase:
    """One connection per process, opened lazily and re-opened after a failure (Lambda containers).

    A Lambda container serves one request at a time; the lock only guards against the threadpool
    FastAPI runs sync endpoints in.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._conn: Conn | None = None
        self._lock = threading.Lock()

    def _connect(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(
                    self.url,
                    row_factory=dict_row,
                    autocommit=True,
                    connect_timeout=max(1, int(self.connect_timeout)),
                )
            except psycopg.OperationalError as exc:
                self._conn = None
                raise _unavailable(exc) from exc
        return self._conn

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        with self._lock:
            conn = self._connect()
            try:
                yield conn
            except (psycopg.OperationalError, *_TIMEOUTS) as exc:
                if _is_connection_failure(exc, conn):
                    self._conn = None
                translated = _translate(exc, conn)
                if translated is not None:
                    raise translated from exc
                raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class WithinTransaction:
    """A ``Database`` that is one already open transaction. A service run through it opens its
    "transaction" as a savepoint of that one (psycopg nests ``conn.transaction()`` as SAVEPOINT), so a
    caller that must commit several services' writes together (a batch under the locks it holds, a
    keyed create with its stored answer) reuses the services unchanged, without a commit of their own."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        yield self._conn

    def close(self) -> None:
        """Nothing: whoever opened the transaction ends it."""
