"""Connections to PostgreSQL: a pool for long-lived processes, one reused connection per Lambda.

Both hand out connections that return rows as dicts, and both turn "the database cannot be reached"
into ``DatabaseUnavailable`` (503) and "PostgreSQL cancelled a statement past ``statement_timeout``, or
ended a session idle in a transaction past ``idle_in_transaction_session_timeout``" (the role's limits,
set by ``makima.db.migrate``) into ``DatabaseTimeout`` (503), so callers never see a driver traceback.
Neither caches a broken connection: the next request reconnects, so service recovers by itself when
PostgreSQL returns (and after a session the server ended).

The single connection of a Lambda container reaches PostgreSQL through RDS Proxy, which multiplexes
client sessions over its database connections between transactions, unless a session changes session
state: then it is *pinned* to one database connection until the client disconnects. So that connection
never prepares statements (``prepare_threshold=None``: every statement is an unnamed Parse/Bind/Execute,
which the proxy multiplexes), and nothing sent on it sets a parameter, takes an advisory lock, listens,
declares a cursor or creates a temporary table (``tests/integration/test_proxy_pinning.py``). The pool
of the local stack talks to PostgreSQL directly, and keeps psycopg's default (prepared after 5 runs).

A warm container's connection may have been closed by the proxy while idle (its idle client timeout, a
failover): ``SingleConnectionDatabase`` looks at the socket before each use (a closed peer leaves it
readable: no round trip) and reconnects; and, for a request that still meets a broken connection left
from an earlier request before anything of it could have committed, says so (``should_rerun``) so the
Lambda handler re-runs the request once on a new connection (``lambda_support/runtime.py: reconnecting``).
"""

from __future__ import annotations

import select
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import psycopg
from psycopg import IsolationLevel
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from makima.db import json_codec
from makima.errors import DatabaseTimeout, DatabaseUnavailable

json_codec.install()  # jsonb read with orjson (db/json_codec.py), for every connection of the process

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


@contextmanager
def reading(db: Database) -> Iterator[Conn]:
    """A connection for statements that only read, each its own implicit transaction: no ``BEGIN`` and
    ``COMMIT`` round trips around them (two of a one-statement read's three; issue 15).

    Nothing is lost: under READ COMMITTED each statement takes its own snapshot inside a transaction as
    well, so wrapping reads in one bought no consistency (a read that needs one snapshot for all its
    statements uses ``snapshot``). The Lambda container's connection (``reads_in_transaction``) keeps
    the transaction: a statement sent outside one counts as possibly committed, which would rule out
    the re-run of a request that met a connection the proxy had closed."""
    if getattr(db, "reads_in_transaction", False):
        with transaction(db) as conn:
            yield conn
    else:
        with db.connection() as conn:
            yield conn


@contextmanager
def snapshot(conn: Conn) -> Iterator[Conn]:
    """One read-only REPEATABLE READ transaction on ``conn`` (idle, not in a transaction): every
    statement in it sees the same snapshot. The characteristics travel in the ``BEGIN`` itself
    (``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``), not in a ``SET TRANSACTION`` statement,
    which RDS Proxy takes for a session change and pins the session for."""
    conn.isolation_level, conn.read_only = IsolationLevel.REPEATABLE_READ, True
    try:
        with conn.transaction():
            yield conn
    finally:
        if not (conn.closed or conn.broken):
            conn.isolation_level, conn.read_only = None, None


def unavailable(exc: BaseException) -> DatabaseUnavailable:
    return DatabaseUnavailable("the database is unavailable; retry shortly", {"reason": type(exc).__name__})


def _timed_out(exc: psycopg.Error) -> DatabaseTimeout:
    if isinstance(exc, psycopg.errors.IdleInTransactionSessionTimeout):
        message = "the database ended a transaction left idle too long; retry shortly"
    else:
        message = "a database statement took too long and was cancelled; retry shortly"
    return DatabaseTimeout(message, {"reason": type(exc).__name__})


def _is_connection_failure(exc: psycopg.Error, conn: Conn | psycopg.AsyncConnection[Any] | None) -> bool:
    # Lock timeouts and cancellations are OperationalErrors too, but the connection survives them.
    return conn is None or conn.closed or conn.broken


# What the role's time limits raise: statement_timeout cancels the statement (57014, an
# OperationalError; the connection lives on), idle_in_transaction_session_timeout ends the session
# (25P03, an InternalError; the connection is dead).
TIMEOUTS = (psycopg.errors.QueryCanceled, psycopg.errors.IdleInTransactionSessionTimeout)


def translate_error(exc: psycopg.Error, conn: Conn | psycopg.AsyncConnection[Any] | None) -> Exception | None:
    """The API's error for a driver error raised while ``conn`` was in use; None: re-raise it as is."""
    if isinstance(exc, TIMEOUTS):
        return _timed_out(exc)
    if isinstance(exc, psycopg.OperationalError) and _is_connection_failure(exc, conn):
        return unavailable(exc)
    return None


def raise_translated(exc: psycopg.Error, conn: Conn | psycopg.AsyncConnection[Any] | None) -> NoReturn:
    """Raise the API's error for ``exc`` (``translate_error``), or ``exc`` itself when it has none."""
    translated = translate_error(exc, conn)
    if translated is not None:
        raise translated from exc
    raise exc


class ReturnTimes:
    """When each pooled connection was last handed back, so that the pool's check on checkout (a round
    trip) runs only for a connection idle more than ``CHECK_IDLE_AFTER``: a request takes two or three
    checkouts, and one returned moments ago is alive. Keys are weak: a closed connection drops out."""

    def __init__(self) -> None:
        self._at: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def returned(self, conn: Any) -> None:
        self._at[conn] = time.monotonic()

    def idle(self, conn: Any) -> bool:
        at = self._at.get(conn)
        return at is None or time.monotonic() - at > CHECK_IDLE_AFTER


class LastUsedFirstPool(ConnectionPool[Conn]):
    """psycopg-pool's pool, handing out the connection returned last (LIFO) instead of the one idle
    longest (FIFO).

    After a burst grew the pool, FIFO spreads even one client's sequential requests over every
    connection: each statement goes to another PostgreSQL backend (colder caches, each connection
    preparing each statement anew), and no connection is ever idle long enough for ``max_idle`` to
    shrink the pool back. Handing out the last one returned keeps the busy few hot and lets the rest
    idle and close; PostgreSQL's CPU per heartbeat fell by a third on the local stack after a burst of 8
    clients (issue 15, docs/performance.md "Change 21"). SQLAlchemy's ``pool_use_lifo`` is the same idea.

    psycopg-pool (pinned, 3.3) takes a ready connection from the left of its deque, under its lock
    (``_get_ready_connection``), and puts a returned one on the right; the most recently returned is
    moved to the left just before, so the idle end, where shrinking takes its connections from, stays
    the left one after it. ``tests/integration/test_pool_order.py`` holds both orders."""

    def _get_ready_connection(self, timeout: float | None) -> Conn | None:
        self._pool.rotate(1)  # called with the pool's lock held, as it mutates the deque
        return super()._get_ready_connection(timeout)


# The local pools' connections: autocommit (a transaction is always explicit), rows as dicts, and psycopg's
# default prepare_threshold (they reach PostgreSQL directly, not through RDS Proxy).
POOL_CONNECT_OPTIONS: dict[str, Any] = {"row_factory": dict_row, "autocommit": True}


def pool_options(*, min_size: int, max_size: int, timeout: float, max_idle: float, check: Any) -> dict[str, Any]:
    """What the local stack's pools are built with (psycopg-pool's blocking and asynchronous pools take
    the same options): autocommit connections returning dicts; ``max_idle``, the seconds a connection
    above ``min_size`` may stay unused before it is closed; ``check``, run on checkout, replaces a
    connection that died while idle (a server restart) before it is handed out; created closed."""
    return {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": timeout,
        "max_idle": max_idle,
        "kwargs": dict(POOL_CONNECT_OPTIONS),
        "check": check,
        "reconnect_timeout": 0,
        "open": False,
    }


class PooledDatabase:
    """A psycopg-pool pool: the local stack and tests, where many requests run at once.

    It talks to PostgreSQL directly (no RDS Proxy), so its connections keep psycopg's default
    ``prepare_threshold``: a statement run 5 times on a connection is prepared, and planned once."""

    CONNECT_OPTIONS = POOL_CONNECT_OPTIONS

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0, max_idle: float = 600.0
    ) -> None:
        self.url = url
        self._returned = ReturnTimes()
        self.pool: ConnectionPool[Conn] = LastUsedFirstPool(
            url,
            **pool_options(
                min_size=min_size, max_size=max_size, timeout=timeout, max_idle=max_idle, check=self._check_if_idle
            ),
        )
        self.pool.open(wait=False)

    def _check_if_idle(self, conn: Conn) -> None:
        if self._returned.idle(conn):
            ConnectionPool.check_connection(conn)

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        try:
            with self.pool.connection() as conn:
                try:
                    yield conn
                except (psycopg.OperationalError, *TIMEOUTS) as exc:
                    raise_translated(exc, conn)
                finally:
                    self._returned.returned(conn)
        except PoolTimeout as exc:
            raise unavailable(exc) from exc

    def close(self) -> None:
        self.pool.close()


@dataclass
class _Ledger:
    """What one request did on the container's connection, for ``should_rerun``.

    ``reused``: the connection the request started with, opened by an earlier request (None: none
    was open). ``may_have_committed``: something the request sent may have committed — a statement
    sent outside a transaction (autocommit: it commits as it runs, and a lost answer does not say it
    did not), or a statement that succeeded inside one (its COMMIT may follow). ``broken``: the
    ``reused`` connection failed under the request."""

    reused: Conn | None = None
    may_have_committed: bool = False
    broken: bool = False
    rerun: bool = False  # this is already the re-run


# The ledger of each open single connection, read by its cursors.
_LEDGERS: weakref.WeakKeyDictionary[Conn, _Ledger] = weakref.WeakKeyDictionary()


class LedgerCursor(psycopg.Cursor[DictRow]):
    """The cursor of the single connection: notes in the request's ledger when what it sends may commit."""

    def _before(self) -> bool:
        ledger = _LEDGERS.get(self.connection)
        outside = self.connection.info.transaction_status == TransactionStatus.IDLE
        if ledger is not None and outside:
            ledger.may_have_committed = True
        return outside

    def _after(self, outside: bool) -> None:
        ledger = _LEDGERS.get(self.connection)
        if ledger is not None and not outside:
            ledger.may_have_committed = True

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        outside = self._before()
        result = super().execute(*args, **kwargs)
        self._after(outside)
        return result

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        outside = self._before()
        super().executemany(*args, **kwargs)
        self._after(outside)


def _peer_closed(conn: Conn) -> bool:
    """Whether the server (or RDS Proxy) has spoken on this idle connection: nothing is expected on an
    idle session that does not LISTEN, so a readable socket is the end of the session (EOF, or the
    FATAL message of a terminated backend) arriving. No round trip: one ``poll`` of the socket. (A
    spurious wake-up costs a reconnect, never a wrong answer.)"""
    try:
        if hasattr(select, "poll"):  # no FD_SETSIZE limit, unlike select()
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


class SingleConnectionDatabase:
    """One connection per process, opened lazily and re-opened after a failure (Lambda containers).

    A Lambda container serves one request at a time; the lock only guards against the threadpool
    FastAPI runs sync endpoints in. The connection prepares no statement (``prepare_threshold=None``:
    RDS Proxy pins a session that prepares one). ``begin_request`` / ``should_rerun`` let the
    handler re-run a request that met a connection broken while idle (see the module docstring).
    """

    # ``reading`` keeps its transaction here (the ledger counts a statement outside one as committed).
    reads_in_transaction = True
    # psycopg's connect options for the container's connection (tests/unit/test_connect_options.py).
    CONNECT_OPTIONS: dict[str, Any] = {
        "row_factory": dict_row,
        "autocommit": True,
        "prepare_threshold": None,
        "cursor_factory": LedgerCursor,
    }

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._conn: Conn | None = None
        self._lock = threading.Lock()
        self._ledger = _Ledger()

    def connect_options(self) -> dict[str, Any]:
        return {**self.CONNECT_OPTIONS, "connect_timeout": max(1, int(self.connect_timeout))}

    def _connect(self) -> Conn:
        conn = self._conn
        if conn is not None and not (conn.closed or conn.broken) and _peer_closed(conn):
            conn.close()  # closed by the server or the proxy while idle: nothing of this request was sent on it
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.url, **self.connect_options())
            except psycopg.OperationalError as exc:
                self._conn = None
                raise unavailable(exc) from exc
            _LEDGERS[self._conn] = self._ledger
        return self._conn

    def begin_request(self, *, rerun: bool = False) -> None:
        """A new request (or the re-run of one) starts: its ledger starts empty."""
        with self._lock:
            alive = self._conn is not None and not (self._conn.closed or self._conn.broken)
            self._ledger = _Ledger(reused=self._conn if alive else None, rerun=rerun)
            if self._conn is not None:
                _LEDGERS[self._conn] = self._ledger

    def should_rerun(self) -> bool:
        """Whether the request that just ended should run once more on a new connection: the
        connection it started with, left open by an earlier request, broke under it before anything
        it sent could have committed (a BEGIN, or the first statements of a transaction that never
        reached COMMIT); and it is not already the re-run."""
        ledger = self._ledger
        return ledger.broken and not ledger.may_have_committed and not ledger.rerun

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        with self._lock:
            conn = self._connect()
            try:
                yield conn
            except (psycopg.OperationalError, *TIMEOUTS) as exc:
                if _is_connection_failure(exc, conn):
                    self._conn = None
                    if conn is self._ledger.reused:
                        self._ledger.broken = True
                raise_translated(exc, conn)

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
