"""What a piece of work sends to PostgreSQL, counted: for the tests of the round trips (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from makima.db.connection import Conn, PooledDatabase


class Counting:
    """The database, counting what each drain sends: statements and transactions (a round trip each,
    plus one for a COMMIT)."""

    def __init__(self, db: PooledDatabase) -> None:
        self.db = db
        self.calls: list[str] = []

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self.db.connection() as conn:
            yield _CountingConn(conn, self.calls)

    def close(self) -> None:
        pass


class _CountingConn:
    def __init__(self, conn: Conn, calls: list[str]) -> None:
        self._conn = conn
        self._calls = calls

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self._calls.append("execute")
        return self._conn.execute(query, *args, **kwargs)

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        self._calls.append("transaction")
        return self._conn.transaction(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
